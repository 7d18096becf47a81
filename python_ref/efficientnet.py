"""EfficientNet trunk (Tan & Le, "EfficientNet: Rethinking Model Scaling for CNNs", ICML 2019), no head.

Mirrors the TF-ported EfficientNet of rwightman/pytorch-image-models (`timm/models/_efficientnet_blocks.py`,
`tf_efficientnet_b0`): MBConv blocks with squeeze-excite, SiLU, BatchNorm, and TensorFlow "SAME" padding
(asymmetric for stride 2), because EfficientDet and the MiniVLM TEE were trained with the TF convention.
The network reports `feature_info` = (channels, stride) per output, so the BiFPN is built from it alone.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import EfficientNetConfig, MBConvStage
from .errors import ConfigError


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TF "SAME" padding (before, after) along one axis of length `size`."""
    total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class Conv2dSame(nn.Conv2d):
    """Conv2d with TF "SAME" padding derived from the input size.

    Shapes are static when exported, so the padding is a constant of the graph; when it is symmetric it
    goes into the convolution itself instead of an extra pad op.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        top, bottom = same_padding(x.shape[-2], self.kernel_size[0], self.stride[0])
        left, right = same_padding(x.shape[-1], self.kernel_size[1], self.stride[1])
        if top == bottom and left == right:
            return F.conv2d(x, self.weight, self.bias, self.stride, (top, left), self.dilation, self.groups)
        x = F.pad(x, (left, right, top, bottom))
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class SqueezeExcite(nn.Module):
    """Channel gate: global average -> 1x1 reduce -> SiLU -> 1x1 expand -> sigmoid (timm `SqueezeExcite`)."""

    def __init__(self, channels: int, reduced: int) -> None:
        super().__init__()
        self.conv_reduce = nn.Conv2d(channels, reduced, 1)
        self.conv_expand = nn.Conv2d(reduced, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean(dim=(2, 3), keepdim=True)  # (B, C, 1, 1)
        s = self.conv_expand(F.silu(self.conv_reduce(s)))
        return x * torch.sigmoid(s)


class MBConv(nn.Module):
    """Inverted residual block: [expand 1x1] -> depthwise kxk -> SE -> project 1x1 (+ identity).

    The SE width is relative to the block *input* channels, as in the paper and timm (`se_from_exp=False`).
    No drop-connect: this is the inference reference.
    """

    def __init__(self, in_channels: int, out_channels: int, expand_ratio: int, kernel: int, stride: int,
                 se_ratio: float, bn_eps: float) -> None:
        super().__init__()
        mid = in_channels * expand_ratio
        self.has_expansion = expand_ratio != 1
        if self.has_expansion:
            self.conv_pw = nn.Conv2d(in_channels, mid, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(mid, eps=bn_eps)
        self.conv_dw = Conv2dSame(mid, mid, kernel, stride, groups=mid, bias=False)
        self.bn2 = nn.BatchNorm2d(mid, eps=bn_eps)
        self.se = SqueezeExcite(mid, max(1, int(in_channels * se_ratio))) if se_ratio > 0 else nn.Identity()
        self.conv_pwl = nn.Conv2d(mid, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels, eps=bn_eps)
        self.has_residual = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.silu(self.bn1(self.conv_pw(x))) if self.has_expansion else x  # (B, mid, H, W)
        h = F.silu(self.bn2(self.conv_dw(h)))  # (B, mid, H/s, W/s)
        h = self.bn3(self.conv_pwl(self.se(h)))  # (B, out, H/s, W/s); linear bottleneck, no activation
        return x + h if self.has_residual else h


def _stage(stage: MBConvStage, in_channels: int, bn_eps: float) -> nn.Sequential:
    blocks = [
        MBConv(in_channels if i == 0 else stage.out_channels, stage.out_channels, stage.expand_ratio,
               stage.kernel, stage.stride if i == 0 else 1, stage.se_ratio, bn_eps)
        for i in range(stage.repeats)
    ]
    return nn.Sequential(*blocks)


class EfficientNet(nn.Module):
    """EfficientNet trunk from a stage table: stem conv 3x3/2 -> MBConv stages. No head conv, no classifier.

    `forward(images (B, 3, H, W))` returns one feature map per stride in `cfg.out_strides`, each the output
    of the last block at that stride; `feature_info[i] = (channels, stride)` describes output `i`.
    """

    def __init__(self, cfg: EfficientNetConfig) -> None:
        super().__init__()
        self.conv_stem = Conv2dSame(cfg.in_channels, cfg.stem_channels, 3, 2, bias=False)
        self.bn1 = nn.BatchNorm2d(cfg.stem_channels, eps=cfg.bn_eps)
        stages, strides, channels = [], [], []
        in_channels, stride = cfg.stem_channels, 2
        for stage in cfg.stages:
            stages.append(_stage(stage, in_channels, cfg.bn_eps))
            in_channels, stride = stage.out_channels, stride * stage.stride
            strides.append(stride)
            channels.append(in_channels)
        self.blocks = nn.Sequential(*stages)
        # The last stage at each requested stride is where that level's feature is taken.
        last_at = {s: i for i, s in enumerate(strides)}
        missing = [s for s in cfg.out_strides if s not in last_at]
        if missing:
            raise ConfigError(f"backbone out_strides {missing} not reached; the stages give strides {sorted(last_at)}")
        self.out_indices: tuple[int, ...] = tuple(last_at[s] for s in cfg.out_strides)
        self.feature_info: tuple[tuple[int, int], ...] = tuple((channels[i], strides[i]) for i in self.out_indices)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = F.silu(self.bn1(self.conv_stem(images)))  # (B, stem, H/2, W/2)
        features = []
        for i, stage in enumerate(self.blocks):
            x = stage(x)
            if i in self.out_indices:
                features.append(x)
        return tuple(features)
