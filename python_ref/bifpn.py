"""BiFPN neck (Tan, Pang & Le, "EfficientDet: Scalable and Efficient Object Detection", CVPR 2020).

Mirrors `google/automl` `efficientdet/efficientdet_arch.py` (`build_bifpn_layer`, `fuse_features`) and its
PyTorch port rwightman/efficientdet-pytorch `effdet/efficientdet.py` (`BiFpn`, `BiFpnLayer`, `FpnCombine`,
`ResampleFeatureMap`, `get_fpn_config('bifpn_fa')`): levels beyond the backbone are made by 1x1 conv + BN
and 3x3/2 max-pooling; every cell runs a top-down then a bottom-up path; each node fuses its inputs with
fast-normalised weights relu(w) / (sum relu(w) + eps), then SiLU -> depthwise-separable 3x3 conv -> BN.
As upstream, in the first cell every node input that still has backbone channels gets its own 1x1 conv + BN.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import BiFPNConfig
from .errors import ConfigError


def bifpn_nodes(num_levels: int) -> tuple[tuple[int, tuple[int, ...]], ...]:
    """(level index, input offsets) of every node of one cell, as effdet's `bifpn_config`.

    Offsets index the growing list [inputs 0..L-1, node 0, node 1, ...]. Top-down nodes fuse a level's input
    with the upsampled node above; bottom-up nodes fuse the input, the top-down node (if any) and the
    downsampled output below.
    """
    nodes: list[tuple[int, tuple[int, ...]]] = []
    td_offset = {num_levels - 1: num_levels - 1}  # the top level's "top-down" feature is its input
    for level in range(num_levels - 2, -1, -1):
        nodes.append((level, (level, td_offset[level + 1])))
        td_offset[level] = num_levels + len(nodes) - 1
    out_offset = {0: td_offset[0]}  # the finest top-down node is already an output
    for level in range(1, num_levels):
        middle = (td_offset[level],) if level < num_levels - 1 else ()
        nodes.append((level, (level, *middle, out_offset[level - 1])))
        out_offset[level] = num_levels + len(nodes) - 1
    return tuple(nodes)


def max_pool_same(x: torch.Tensor) -> torch.Tensor:
    """3x3/2 max-pool with TF "SAME" padding, the EfficientDet downsampling.

    TF pads with -inf; for a 3x3 window with at most one pad per side, repeating the edge row/column gives
    the same maximum (the edge element is always in that window) and keeps infinities out of the graph,
    where they would break int8 calibration.
    """
    for dim in (2, 3):
        size = x.shape[dim]
        total = max((math.ceil(size / 2) - 1) * 2 + 3 - size, 0)
        before, after = total // 2, total - total // 2
        parts = [x.narrow(dim, 0, 1)] * before + [x] + [x.narrow(dim, size - 1, 1)] * after
        x = torch.cat(parts, dim=dim) if len(parts) > 1 else x
    return F.max_pool2d(x, kernel_size=3, stride=2)


def upsample_2x(x: torch.Tensor) -> torch.Tensor:
    """Nearest-neighbour 2x upsampling (EfficientDet's `nearest` resize between adjacent levels).

    Spelled as copies (each value twice along W, each row twice along H) rather than `F.interpolate`:
    the same values bit for bit (a test checks), and XNNPACK delegates concatenations and reshapes, where an
    `upsample_nearest2d` node would split the ExecuTorch graph at every top-down BiFPN node.
    """
    b, c, h, w = x.shape
    # Two reshape nodes per concatenation: XNNPACK takes a cat of two distinct inputs, not one input twice.
    wide = torch.cat([x.reshape(b, c, h, w, 1), x.reshape(b, c, h, w, 1)], dim=4).reshape(b, c, h, 2 * w)
    return torch.cat([wide.reshape(b, c, h, 1, 2 * w), wide.reshape(b, c, h, 1, 2 * w)], dim=3).reshape(b, c, 2 * h, 2 * w)


class ConvBN(nn.Module):
    """1x1 conv (with bias, as the TF checkpoints) + BN: brings a backbone feature to the BiFPN width."""

    def __init__(self, in_channels: int, out_channels: int, bn_eps: float) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 1)
        self.bn = nn.BatchNorm2d(out_channels, eps=bn_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))


class SeparableConvBN(nn.Module):
    """Depthwise 3x3 -> pointwise 1x1 (with bias) -> BN (effdet `SeparableConv2d`)."""

    def __init__(self, channels: int, bn_eps: float) -> None:
        super().__init__()
        self.conv_dw = nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False)
        self.conv_pw = nn.Conv2d(channels, channels, 1)
        self.bn = nn.BatchNorm2d(channels, eps=bn_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv_pw(self.conv_dw(x)))


class FusionNode(nn.Module):
    """One BiFPN node: resample inputs to its level, fast-normalised weighted sum, SiLU, separable conv."""

    def __init__(self, level: int, inputs: tuple[int, ...], input_info: list[tuple[int, int]], channels: int,
                 eps: float, bn_eps: float) -> None:
        super().__init__()
        self.inputs = inputs
        self.level = level
        self.input_levels = tuple(input_info[i][1] for i in inputs)
        if any(abs(lv - level) > 1 for lv in self.input_levels):
            raise ConfigError(f"BiFPN node at level {level} has inputs at levels {self.input_levels}")
        self.resample = nn.ModuleDict(
            {str(i): ConvBN(input_info[i][0], channels, bn_eps) for i in inputs if input_info[i][0] != channels}
        )
        self.edge_weights = nn.Parameter(torch.ones(len(inputs)))
        self.eps = eps
        self.conv = SeparableConvBN(channels, bn_eps)

    def _resample(self, offset: int, level: int, x: torch.Tensor) -> torch.Tensor:
        if str(offset) in self.resample:
            x = self.resample[str(offset)](x)
        if level > self.level:
            return upsample_2x(x)
        if level < self.level:
            return max_pool_same(x)
        return x

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        w = F.relu(self.edge_weights)
        w = w / (w.sum() + self.eps)  # fast normalised fusion (EfficientDet eq. 2)
        fused = w[0] * self._resample(self.inputs[0], self.input_levels[0], features[self.inputs[0]])
        for k in range(1, len(self.inputs)):
            fused = fused + w[k] * self._resample(self.inputs[k], self.input_levels[k], features[self.inputs[k]])
        return self.conv(F.silu(fused))  # (B, channels, H_level, W_level)


class BiFPNCell(nn.Module):
    """One repeated BiFPN layer: top-down then bottom-up nodes over all levels."""

    def __init__(self, input_info: list[tuple[int, int]], channels: int, eps: float, bn_eps: float) -> None:
        super().__init__()
        self.num_levels = len(input_info)
        info = list(input_info)  # (channels, level index) of every addressable feature
        self.nodes = nn.ModuleList()
        for level, inputs in bifpn_nodes(self.num_levels):
            self.nodes.append(FusionNode(level, inputs, info, channels, eps, bn_eps))
            info.append((channels, level))

    def forward(self, features: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        x = list(features)
        for node in self.nodes:
            x.append(node(x))
        return tuple(x[-self.num_levels:])


class BiFPN(nn.Module):
    """EfficientDet BiFPN built from the backbone's `feature_info` ((channels, stride) per output).

    `forward(backbone features)` returns P{min_level}..P{max_level}, each (B, channels, S/2^l, S/2^l).
    Backbone strides must be 2^min_level, 2^(min_level+1), ...; missing upper levels are derived from the
    last one (1x1 conv + BN if its width differs, then 3x3/2 max-pool each).
    """

    def __init__(self, cfg: BiFPNConfig, feature_info: tuple[tuple[int, int], ...]) -> None:
        super().__init__()
        num_levels = cfg.max_level - cfg.min_level + 1
        strides = [s for _, s in feature_info]
        expected = [2 ** (cfg.min_level + i) for i in range(len(strides))]
        if strides != expected[: len(strides)] or not 0 < len(strides) <= num_levels:
            raise ConfigError(f"backbone strides {strides}, BiFPN P{cfg.min_level}..P{cfg.max_level} needs {expected}")
        self.min_level, self.max_level, self.channels = cfg.min_level, cfg.max_level, cfg.channels
        self.num_backbone_levels = len(strides)
        last_channels = feature_info[-1][0]
        extra = num_levels - len(strides)
        self.extra_resample = (
            ConvBN(last_channels, cfg.channels, cfg.bn_eps) if extra and last_channels != cfg.channels else nn.Identity()
        )
        info = [(c, i) for i, (c, _) in enumerate(feature_info)] + [(cfg.channels, len(strides) + i) for i in range(extra)]
        self.cells = nn.ModuleList(
            BiFPNCell(info if i == 0 else [(cfg.channels, lv) for lv in range(num_levels)], cfg.channels,
                      cfg.fusion_eps, cfg.bn_eps)
            for i in range(cfg.num_cells)
        )
        self.feature_info: tuple[tuple[int, int], ...] = tuple(
            (cfg.channels, 2 ** lv) for lv in range(cfg.min_level, cfg.max_level + 1)
        )

    def forward(self, features: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        levels = list(features)
        x = self.extra_resample(levels[-1])
        for _ in range(len(self.feature_info) - self.num_backbone_levels):
            x = max_pool_same(x)  # P6 from C5, P7 from P6
            levels.append(x)
        out = tuple(levels)
        for cell in self.cells:
            out = cell(out)
        return out
