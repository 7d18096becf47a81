"""Physical pruning: a masked EfficientVLM becomes a smaller one that computes the same thing.

A head whose mask is 0 loses its query/key/value rows and its output-projection columns; a neuron whose mask
is 0 loses its input row and output column (upstream: HF `prune_heads` / `prune_linear_layer`, as CoFiPruning's
`prune_model_with_z`). A kept head or neuron's mask value (not exactly 1: `gates.deterministic`) multiplies its
output-projection columns, so the pruned model equals the masked one. The new config records the heads kept per
layer and each feed-forward layer's width (EfficientVLM's `ViTConfig.heads_per_layer`, `TextConfig.self_heads_per_layer` …);
a layer may keep no heads or no neurons at all.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

import torch
from torch import nn

from minivlm.errors import ConfigError
from minivlm.python_ref.config import FusionConfig
from minivlm.python_ref.efficientvlm.config import EfficientVLMConfig
from minivlm.python_ref.efficientvlm.model import EfficientVLM
from minivlm.python_ref.fusion import Fusion

from .units import Unit, feed_forward_layers, prunable_units


def kept_counts(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> dict[str, int]:
    """Heads / neurons each layer keeps under `masks`, by unit name; layers pruned away already keep 0."""
    units = prunable_units(model)
    missing = sorted({u.name for u in units} - set(masks))
    if missing:
        raise ConfigError(f"no mask for {', '.join(missing[:4])}")
    return {u.name: int((masks[u.name] != 0).sum()) for u in units}


def pruned_config(model: nn.Module, masks: Mapping[str, torch.Tensor]):
    """`model`'s config with the heads and widths `masks` keep (a layer absent from `masks` keeps what it has)."""
    return STRUCTURES[type(model)](model.cfg, kept_counts(model, masks))


def _efficientvlm_config(cfg: EfficientVLMConfig, counts: dict[str, int]) -> EfficientVLMConfig:
    def count(name: str, now: int) -> int:
        return counts.get(name, now)

    v, t = cfg.vision, cfg.text
    vision = dataclasses.replace(
        v, heads_per_layer=tuple(count(f"vision.blocks.{i}.attn", v.layer_heads(i)) for i in range(v.layers)),
        mlp_per_layer=tuple(count(f"vision.blocks.{i}", v.layer_mlp(i)) for i in range(v.layers)))
    stack = [f"text.layers.{i}" for i in range(t.text_layers)] + [f"cross.layers.{j}" for j in range(t.cross_layers)]
    text = dataclasses.replace(
        t, self_heads_per_layer=tuple(count(f"{p}.attn", t.layer_self_heads(i)) for i, p in enumerate(stack)),
        cross_heads_per_layer=tuple(count(f"cross.layers.{j}.cross_attn", t.layer_cross_heads(j))
                                    for j in range(t.cross_layers)),
        ffn_per_layer=tuple(count(f"{p}.ffn", t.layer_ffn(i)) for i, p in enumerate(stack)))
    return dataclasses.replace(cfg, vision=vision, text=text)


def _fusion_config(cfg: FusionConfig, counts: dict[str, int]) -> FusionConfig:
    layers = range(cfg.num_layers)
    heads = tuple(counts.get(f"encoder.layers.{i}.attn", cfg.layer_heads(i)) for i in layers)
    ffn = tuple(counts.get(f"encoder.layers.{i}", cfg.layer_ffn(i)) for i in layers)
    # Full layers everywhere are stored as (), as `python_ref.config.with_structure` does: one config per structure.
    return dataclasses.replace(cfg, heads_per_layer=() if set(heads) == {cfg.num_heads} else heads,
                               ffn_per_layer=() if set(ffn) == {cfg.intermediate_size} else ffn)


# Model type -> its config with given kept counts (by unit name); the model type is built from that config.
STRUCTURES: dict[type, Callable[[Any, dict[str, int]], Any]] = {EfficientVLM: _efficientvlm_config,
                                                                 Fusion: _fusion_config}


def _head_rows(mask: torch.Tensor, head_dim: int) -> torch.Tensor:
    heads = torch.nonzero(mask).flatten()
    return (heads[:, None] * head_dim + torch.arange(head_dim)).flatten()


def _pruned_tensors(unit: Unit, module: torch.nn.Module, mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """The kept tensors of one unit's module, by key below the module (the output bias included)."""
    out: dict[str, torch.Tensor] = {}
    if unit.kind == "heads":
        rows = _head_rows(mask, module.head_dim)
        scale = mask[mask != 0].repeat_interleave(module.head_dim)  # each kept column times its head's mask
        if len(rows):  # a layer left with no heads keeps only the output bias
            for name in ("query", "key", "value"):
                linear = getattr(module, name)
                out[f"{name}.weight"], out[f"{name}.bias"] = linear.weight[rows], linear.bias[rows]
            out["out.weight"] = module.out.weight[:, rows] * scale
        out["out.bias"] = module.out.bias
    else:
        first, second = feed_forward_layers(module)
        keep = torch.nonzero(mask).flatten()
        fc_in, fc_out = getattr(module, first), getattr(module, second)
        if len(keep):  # a layer left with no neurons keeps only the output bias
            out[f"{first}.weight"], out[f"{first}.bias"] = fc_in.weight[keep], fc_in.bias[keep]
            out[f"{second}.weight"] = fc_out.weight[:, keep] * mask[keep]
        out[f"{second}.bias"] = fc_out.bias
    return out


@torch.no_grad()
def prune(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> nn.Module:
    """A new, smaller model of `model`'s type (a `STRUCTURES` one) equal to `model` run under `masks` (by unit name, `units.prunable_units`),
    in eval mode. Masks must be fixed ones (`PruningGates.deterministic`): 0 removes, any other value scales."""
    pruned = type(model)(pruned_config(model, masks))
    state = {k: v for k, v in model.state_dict().items()}
    for unit in prunable_units(model):
        module = model.get_submodule(unit.name)
        prefix = f"{unit.name}."
        layers = ("query", "key", "value", "out") if unit.kind == "heads" else feed_forward_layers(module)
        for key in [f"{prefix}{layer}.{p}" for layer in layers for p in ("weight", "bias")]:
            state.pop(key, None)
        state.update({prefix + k: v for k, v in _pruned_tensors(unit, module, masks[unit.name]).items()})
    pruned.load_state_dict(state, strict=True)
    return pruned.eval()


__all__ = ["kept_counts", "prune", "pruned_config"]
