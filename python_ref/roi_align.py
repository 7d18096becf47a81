"""Multi-level RoIAlign (He et al., "Mask R-CNN", 2017) in an export-friendly separable-matmul form.

Semantics are those of torchvision `ops/roi_align.py` / `csrc/ops/cpu/roi_align_kernel.cpp` with
`aligned=True` and a fixed `sampling_ratio`, and of `ops/poolers.py` (`MultiScaleRoIAlign`, `LevelMapper`).
Bilinear sampling at a point is separable: the value at (y, x) is sum_ij hat(y - i) hat(x - j) F[i, j]
with hat(t) = relu(1 - |t|). So each box gets two small weight matrices, Wy (P, H) and Wx (P, W), that
already average the s x s samples of each bin, and the pooled map is Wy F Wx^T: two batched matmuls,
no gather and no grid_sample (fully XNNPACK-delegated, and legal on every target: docs/ARCHITECTURE.md §3).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .errors import ConfigError
from .graph_ops import constant, step

LEVEL_MAPPER_EPS = 1e-6  # torchvision LevelMapper's eps: a box exactly at a level boundary goes up


def axis_weights(start: torch.Tensor, end: torch.Tensor, size: int, output_size: int, sampling_ratio: int) -> torch.Tensor:
    """Bilinear weights (K, P, size) along one axis for K boxes spanning [start, end] (each (K, 1)) in feature
    coordinates.

    Row p averages the `sampling_ratio` samples of bin p. As torchvision, a sample outside [-1, size]
    contributes zero, and otherwise is clamped into [0, size - 1] before interpolation.
    """
    p, s = output_size, sampling_ratio
    # Python floats, never ints, with tensors: an int scalar becomes an int64 constant cast on every run.
    bin_size = (end - start) / float(p)  # (K, 1)
    grid = constant([float(i) for i in range(size)], start)  # (size,)
    total = None
    for i in range(s):  # one (K, P, size) slab per sample, summed: no reduction over a middle dim in the graph
        # Sample i of bin b sits at start + (b + (i + 0.5) / s) * bin.
        fractions = constant([(b * s + i + 0.5) / s for b in range(p)], start)  # (P,)
        coords = start + fractions * bin_size  # (K, P)
        inside = step(coords + 1.0) * step(float(size) - coords)  # -1 <= coords <= size
        coords = coords.clamp(0.0, float(size - 1))
        hat = F.relu(1.0 - (coords[:, :, None] - grid).abs()) * inside[:, :, None]  # (K, P, size)
        total = hat if total is None else total + hat
    return total / float(s)  # (K, P, size)


def box_weights(boxes: torch.Tensor, spatial_scale: float, height: int, width: int, output_size: int,
                sampling_ratio: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Wy (B, R, P, H) and Wx (B, R, P, W) for boxes (B, R, 4) xyxy in input pixels (`aligned=True`)."""
    b, r, _ = boxes.shape
    scaled = boxes.reshape(b * r, 4) * spatial_scale - 0.5  # half-pixel shift of aligned=True
    # Columns by slicing (K, 1), not indexing: XNNPACK takes a slice, not a select.
    x0, y0, x1, y1 = (scaled[:, i:i + 1] for i in range(4))
    wx = axis_weights(x0, x1, width, output_size, sampling_ratio)
    wy = axis_weights(y0, y1, height, output_size, sampling_ratio)
    return wy.reshape(b, r, output_size, height), wx.reshape(b, r, output_size, width)


def separable_pool(features: torch.Tensor, wy: torch.Tensor, wx: torch.Tensor) -> torch.Tensor:
    """Wy F Wx^T for every box: features (B, C, H, W), Wy (B, R, P, H), Wx (B, R, P, W) -> (B*R, C, P, P)."""
    b, c, h, w = features.shape
    r, p = wy.shape[1], wy.shape[2]
    f = features.permute(0, 2, 1, 3).reshape(b, h, c * w)  # (B, H, C*W)
    t = torch.bmm(wy.reshape(b, r * p, h), f)  # (B, R*P, C*W): rows pooled, one matmul for all boxes
    t = t.reshape(b * r, p * c, w)  # (B*R, P*C, W)
    out = torch.bmm(t, wx.reshape(b * r, p, w).transpose(1, 2))  # (B*R, P*C, P): columns pooled
    return out.reshape(b * r, p, c, p).permute(0, 2, 1, 3)  # (B*R, C, P, P)


def roi_align(features: torch.Tensor, boxes: torch.Tensor, output_size: int, spatial_scale: float,
              sampling_ratio: int) -> torch.Tensor:
    """Single-level RoIAlign = torchvision `roi_align(..., aligned=True)` with a fixed sampling ratio.

    features (B, C, H, W), boxes (B, R, 4) xyxy in input pixels -> (B*R, C, P, P), image-major.
    """
    if sampling_ratio <= 0:
        raise ConfigError(f"sampling_ratio is {sampling_ratio}; the static-shape RoIAlign needs a fixed ratio >= 1")
    wy, wx = box_weights(boxes, spatial_scale, features.shape[-2], features.shape[-1], output_size, sampling_ratio)
    return separable_pool(features, wy, wx)


def level_masks(boxes: torch.Tensor, levels: tuple[int, ...], canonical_scale: float,
                canonical_level: int) -> tuple[torch.Tensor, ...]:
    """One-hot FPN level of each box, one (B, R, 1) 0/1 mask per level, as torchvision's `LevelMapper`
    (Lin et al. 2017, eq. 1).

    floor(k0 + log2(sqrt(area) / s0) + eps) >= k  <=>  area >= (s0 * 2^(k - k0 - eps))^2, so the level is
    found by comparing the area with static thresholds (`step(area - threshold)`, exact: a float difference
    is >= 0 exactly when area >= threshold): no log/floor of the area in the graph, and degenerate (zero or
    negative area) boxes land on the lowest level instead of producing -inf or NaN.
    """
    # Sides and thresholds scaled by 2^-8 (exact: a power of two) so that the area of a whole-image box stays far
    # below the fp16 maximum (65504) in an fp16 build.
    side = 2.0**-8
    area = ((boxes[..., 2:3] - boxes[..., 0:1]) * side) * ((boxes[..., 3:4] - boxes[..., 1:2]) * side)  # (B, R, 1)
    # at_least[i] = 1 if the box's level >= levels[i + 1]; the lowest level is always reached, none above the top.
    at_least = [step(area - (canonical_scale * side * 2.0 ** (k - canonical_level - LEVEL_MAPPER_EPS)) ** 2)
                for k in levels[1:]]
    if not at_least:
        return (area * 0.0 + 1.0,)
    return (1.0 - at_least[0], *(at_least[i] - at_least[i + 1] for i in range(len(at_least) - 1)), at_least[-1])


class MultiScaleRoIAlign(nn.Module):
    """RoIAlign over FPN levels with level assignment, as torchvision `MultiScaleRoIAlign`.

    Every box is pooled on every level and the results summed under the one-hot level mask (folded into
    Wy), so shapes are static and nothing is gathered. `forward(features, boxes (B, R, 4))` -> (B*R, C, P, P).
    """

    def __init__(self, levels: tuple[int, ...], output_size: int, sampling_ratio: int, canonical_scale: float,
                 canonical_level: int) -> None:
        super().__init__()
        if list(levels) != list(range(levels[0], levels[0] + len(levels))):
            raise ConfigError(f"pooler levels {levels} must be consecutive")
        if sampling_ratio <= 0:
            raise ConfigError(f"sampling_ratio is {sampling_ratio}; the static-shape RoIAlign needs a fixed ratio >= 1")
        self.levels = tuple(levels)
        self.output_size = output_size
        self.sampling_ratio = sampling_ratio
        self.canonical_scale = canonical_scale
        self.canonical_level = canonical_level

    def forward(self, features: tuple[torch.Tensor, ...], boxes: torch.Tensor) -> torch.Tensor:
        masks = level_masks(boxes, self.levels, self.canonical_scale, self.canonical_level)  # L x (B, R, 1)
        pooled = None
        for x, level, mask in zip(features, self.levels, masks):
            wy, wx = box_weights(boxes, 2.0**-level, x.shape[-2], x.shape[-1], self.output_size, self.sampling_ratio)
            out = separable_pool(x, wy * mask[..., None], wx)  # (B*R, C, P, P), zero off-level
            pooled = out if pooled is None else pooled + out
        return pooled
