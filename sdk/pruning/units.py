"""What structured pruning can remove from a model: its attention heads and feed-forward neurons, layer by
layer (`Unit`), each with the parameters one head or one neuron holds, counted from the layer's real shapes, and
the modality it belongs to (EfficientVLM: vision, text, cross; MiniVLM: its one fusion encoder).

A head of an attention with head dimension d owns d rows (and biases) of the query, key and value projections
and d columns of the output projection; a neuron owns one row (and bias) of the feed-forward input and one
column of its output. Output biases and LayerNorms stay whatever is pruned, so they are not counted.

Masks reach the modules through their `head_mask` / `neuron_mask` attributes (None: no mask), which multiply
each head's attention output and each neuron's activation (python_ref/efficientvlm/text.py, vit.py; MiniVLM's
python_ref/fusion.py).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Mapping

import torch
from torch import nn

from minivlm.errors import ConfigError
from minivlm.python_ref.efficientvlm.model import EfficientVLM
from minivlm.python_ref.efficientvlm.text import Attention, FeedForward
from minivlm.python_ref.efficientvlm.vit import Block
from minivlm.python_ref.fusion import EncoderLayer, Fusion, SelfAttention

MODALITIES = ("vision", "text", "cross")  # EfficientVLM's, in the order reports list them
FUSION = "fusion"  # MiniVLM's one prunable modality: its fusion encoder (the detector has no heads or neurons)


@dataclass(frozen=True)
class PrunableLayout:
    """Where a model type's prunable layers are: the attention module types (each with `heads`, `head_dim`,
    `query`, `key`, `value`, `out`), the feed-forward module types with the names of their input and output
    Linears, and the modalities, named by the first component of a module's path (or `single`, the one
    modality of a model with a single stack)."""

    modalities: tuple[str, ...]
    attention: tuple[type, ...]
    feed_forward: dict[type, tuple[str, str]]
    single: str | None = None

    def modality_of(self, name: str) -> str:
        return self.single or name.split(".")[0]


# Model type -> its layout; another family registers its own.
LAYOUTS: dict[type, PrunableLayout] = {
    EfficientVLM: PrunableLayout(MODALITIES, (Attention,), {Block: ("mlp_in", "mlp_out"), FeedForward: ("ffn_in", "ffn_out")}),
    Fusion: PrunableLayout((FUSION,), (SelfAttention,), {EncoderLayer: ("ffn_in", "ffn_out")}, single=FUSION),
}


def layout_of(model: nn.Module) -> PrunableLayout:
    """The prunable layout of `model`'s type; ConfigError for a model that cannot be pruned."""
    layout = LAYOUTS.get(type(model))
    if layout is None:
        raise ConfigError(f"pruning takes {', '.join(t.__name__ for t in LAYOUTS)}, not a {type(model).__name__}")
    return layout


def feed_forward_layers(module: nn.Module) -> tuple[str, str]:
    """The names of a feed-forward module's input and output Linears (any registered layout's)."""
    for layout in LAYOUTS.values():
        if type(module) in layout.feed_forward:
            return layout.feed_forward[type(module)]
    raise ConfigError(f"{type(module).__name__} is no feed-forward layer a pruning layout knows")


@dataclass(frozen=True)
class Unit:
    """One layer's prunable group: `count` heads of an attention or neurons of a feed-forward layer.

    name: the module's path in the model (`model.get_submodule(name)`), e.g. `cross.layers.0.cross_attn`.
    modality: the stack it belongs to; kind: "heads" or "neurons".
    unit_params: parameters one head or one neuron holds (see the module docstring)."""

    name: str
    modality: str
    kind: str
    count: int
    unit_params: int

    @property
    def params(self) -> int:
        return self.count * self.unit_params


def _head_params(attn: Attention) -> int:
    d = attn.head_dim
    return sum(d * (linear.in_features + 1) for linear in (attn.query, attn.key, attn.value)) + d * attn.out.out_features


def _neuron_params(module: nn.Module) -> int:
    fc_in, fc_out = (getattr(module, n) for n in feed_forward_layers(module))
    return fc_in.in_features + 1 + fc_out.out_features


def prunable_units(model: nn.Module) -> list[Unit]:
    """Every attention's heads and every feed-forward layer's neurons of `model` (a type with a layout in
    `LAYOUTS`), in module order; a layer left with none (pruned away already) has nothing more to prune and is
    not listed."""
    layout = layout_of(model)
    units = []
    for name, module in model.named_modules():
        if isinstance(module, layout.attention) and module.heads > 0:
            units.append(Unit(name, layout.modality_of(name), "heads", module.heads, _head_params(module)))
        elif type(module) in layout.feed_forward:
            width = getattr(module, layout.feed_forward[type(module)][0], None)
            if isinstance(width, nn.Linear) and width.out_features > 0:
                units.append(Unit(name, layout.modality_of(name), "neurons", width.out_features, _neuron_params(module)))
    bad = sorted({u.modality for u in units} - set(layout.modalities))
    if bad:
        raise ConfigError(f"prunable layers outside the modalities {layout.modalities}: {', '.join(bad)}")
    return units


def set_masks(model: nn.Module, units: list[Unit], masks: Mapping[str, torch.Tensor] | None) -> None:
    """Put `masks[unit.name]` (count,) on each unit's module (None: remove every mask)."""
    for unit in units:
        module = model.get_submodule(unit.name)
        mask = None if masks is None else masks[unit.name]
        if mask is not None and mask.shape != (unit.count,):
            raise ConfigError(f"mask of {unit.name} has shape {tuple(mask.shape)}, expected ({unit.count},)")
        setattr(module, "head_mask" if unit.kind == "heads" else "neuron_mask", mask)


@contextmanager
def masked(model: nn.Module, units: list[Unit], masks: Mapping[str, torch.Tensor]) -> Iterator[None]:
    """`model` runs with `masks` inside the block, unmasked after it."""
    set_masks(model, units, masks)
    try:
        yield
    finally:
        set_masks(model, units, None)


__all__ = ["FUSION", "LAYOUTS", "MODALITIES", "PrunableLayout", "Unit", "feed_forward_layers", "layout_of", "masked", "prunable_units", "set_masks"]
