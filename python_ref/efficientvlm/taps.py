"""Recording each stack's hidden states and attention probabilities during an ordinary forward pass, for
knowledge distillation (EfficientVLM, Wang et al., arXiv 2210.07795: the student matches the teacher's hidden
states and attention distributions layer by layer, as TinyBERT does; upstream swaggy-TN/EfficientVLM asks its
models for `output_hidden_states` / `output_attentions`).

    with recording(model) as rec:
        image = model.encode_image(images)
        fused = model.fuse(model.encode_text(ids, mask), mask, image)
    rec.vision.hidden, rec.text.attention, rec.cross.cross_attention, ...

What each stack records, in call order (tensors are not detached, so a student's losses reach its weights):
- vision: `hidden` = the embedding output (the tokens after `ln_pre`), then each block's output; the last is
  the last block's output *before* `ln_post` (as HF `CLIPVisionModel.hidden_states` and upstream's
  `CLIPEncoder` states: the layer outputs TinyBERT-style distillation compares); `ln_post` of it is
  `encode_image`'s output. `attention` = each block's self-attention probabilities.
- text: `hidden` = the embedding output, then each `TextLayer`'s output; `attention` = their self-attention.
- cross: `hidden` = its input (the text states it fuses), then each `CrossModalLayer`'s output; `attention` =
  their text self-attention, `cross_attention` = their attention from the text to the image tokens.
Probabilities are (B, heads, T, S), `heads` being the heads the layer keeps (a structurally pruned layer's:
(B, 0, T, S) for an attention pruned away); a masked key has probability exactly 0 (its additive mask underflows).

Hidden states come from forward hooks, attention from `text.Attention.record`: with no recording open the
models run the code they always run, and `torch.export` sees the same graph. One recording holds one pass of
each stack; run each pass (ITM positives, negatives, MLM) in its own recording.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator

import torch
from torch import nn

from .model import EfficientVLM
from .text import Attention


@dataclass
class StackRecord:
    """One stack's recorded pass: `hidden` (B, T, H) from the stack's input on, one per layer after it, and
    each layer's self-attention probabilities `attention` (B, heads, T, T)."""

    hidden: list[torch.Tensor] = field(default_factory=list)
    attention: list[torch.Tensor] = field(default_factory=list)


@dataclass
class CrossRecord(StackRecord):
    """The cross-modal stack's pass, and each layer's text-to-image attention `cross_attention` (B, heads, T, N)."""

    cross_attention: list[torch.Tensor] = field(default_factory=list)


@dataclass
class Recorded:
    """What a `recording` saw: one record per stack (empty for a stack that did not run)."""

    vision: StackRecord = field(default_factory=StackRecord)
    text: StackRecord = field(default_factory=StackRecord)
    cross: CrossRecord = field(default_factory=CrossRecord)


def _start(record: StackRecord, stack: str, state: torch.Tensor) -> None:
    """The first state of a pass: refuse a second pass, whose states would interleave with the first."""
    if record.hidden:
        raise RuntimeError(f"the {stack} stack ran twice inside one recording; record each pass in its own `recording`")
    record.hidden.append(state)


def _output_to(hidden: list[torch.Tensor]):
    def hook(_module: nn.Module, _args: tuple, output: torch.Tensor) -> None:
        hidden.append(output)

    return hook


def _first_output(record: StackRecord, stack: str):
    def hook(_module: nn.Module, _args: tuple, output: torch.Tensor) -> None:
        _start(record, stack, output)

    return hook


def _first_input(record: StackRecord, stack: str):
    def hook(_module: nn.Module, args: tuple) -> None:
        _start(record, stack, args[0])

    return hook


@contextmanager
def recording(model: EfficientVLM) -> Iterator[Recorded]:
    """Record every stack of `model` while the block runs (see the module docstring); on exit the model is
    exactly as before: hooks removed, every `Attention.record` back to None. Refuses a model already recording."""
    attentions = [m for m in model.modules() if isinstance(m, Attention)]
    if any(a.record is not None for a in attentions):
        raise RuntimeError("this model is already inside a `recording`; recordings of one model do not nest")
    rec = Recorded()
    vision, text, cross = model.vision, model.text, model.cross
    hooks: list[Any] = []
    try:
        hooks.append(vision.ln_pre.register_forward_hook(_first_output(rec.vision, "vision")))
        hooks.append(text.embeddings.register_forward_hook(_first_output(rec.text, "text")))
        if len(cross.layers):  # the stack's input is its first layer's (fuse_causal bypasses cross.__call__)
            hooks.append(cross.layers[0].register_forward_pre_hook(_first_input(rec.cross, "cross")))
        for layers, record in ((vision.blocks, rec.vision), (text.layers, rec.text), (cross.layers, rec.cross)):
            for layer in layers:
                hooks.append(layer.register_forward_hook(_output_to(record.hidden)))
                layer.attn.record = record.attention
        for layer in cross.layers:
            layer.cross_attn.record = rec.cross.cross_attention
        yield rec
    finally:
        for h in hooks:
            h.remove()
        for a in attentions:
            a.record = None


__all__ = ["CrossRecord", "Recorded", "StackRecord", "recording"]
