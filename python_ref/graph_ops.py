"""Elementwise building blocks that keep an exported graph inside one XNNPACK partition.

XNNPACK takes float arithmetic, floor, clamp, slices and 4-d max reductions, but no comparison, boolean op,
argmax or `arange`: each of those runs outside the delegate and splits the graph around it, with layout
copies at every border. These helpers spell the same math with what it takes; they are exact in fp32.
"""

from __future__ import annotations

import torch


def step(x: torch.Tensor) -> torch.Tensor:
    """1.0 where x >= 0, else 0.0, exactly: floor maps [-1, 0) to -1 and [0, 1) to 0, then clamp to [0, 1].

    `step(a - b)` is `(a >= b).float()`: an IEEE difference is >= 0 exactly when a >= b.
    """
    return (torch.floor(x) + 1.0).clamp(0.0, 1.0)


def constant(values: list[float], like: torch.Tensor) -> torch.Tensor:
    """A float tensor of static values (dtype and device of `like`), built at trace time: an exported graph
    holds it as a constant, not the `arange` arithmetic that would compute it on every run."""
    return torch.tensor(values, dtype=like.dtype, device=like.device)


def first_max_one_hot(logits: torch.Tensor, skip_first: bool = False) -> torch.Tensor:
    """One-hot (K, C) of `logits.argmax(dim=1)` for logits (K, C): the first index among ties, as argmax.
    With `skip_first`, index 0 is never chosen (the argmax is over indices 1..C-1).

    The maxima are marked by `step(logits - max)`; giving index j the key C - j (0 for a skipped index 0) and
    keeping the largest key picks the first of them. Reductions run on a (K, 1, 1, C) view: XNNPACK's max
    takes 4-d tensors only.
    """
    c = logits.shape[1]
    rows = logits.reshape(-1, 1, 1, c)
    best = torch.max(rows[..., 1:] if skip_first else rows, dim=3, keepdim=True).values  # (K, 1, 1, 1)
    keys = constant([0.0 if skip_first and j == 0 else float(c - j) for j in range(c)], logits)
    keyed = step(rows - best) * keys  # > 0 only at the maxima
    return step(keyed - torch.max(keyed, dim=3, keepdim=True).values).reshape(-1, c)


__all__ = ["constant", "first_max_one_hot", "step"]
