"""Region Proposal Network: anchors, box coder and the shared 1x1 head (Ren et al., "Faster R-CNN", 2015).

The head is the qd library's `SimpleRPNHead` (one 1x1 conv for objectness, one for deltas, no 3x3 conv),
shared over P3..P7. `BoxCoder` mirrors torchvision `models/detection/_utils.py` (`BoxCoder`: no "+1"
pixel convention, dw/dh clamped at log(1000/16)); the flattening order mirrors torchvision
`models/detection/rpn.py` (`permute_and_flatten`): per level (H, W, A), levels concatenated.
Anchors are centred on feature cells, (x + 0.5) * stride, with exact float sides (not rounded).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .config import RPNConfig

BBOX_XFORM_CLIP = math.log(1000.0 / 16)  # torchvision's cap on dw, dh: exp() never exceeds 62.5x


def make_anchors(rpn_cfg: RPNConfig, image_size: int, min_level: int) -> tuple[torch.Tensor, tuple[int, ...]]:
    """Anchors for levels P{min_level}.. (one size per level, `rpn_cfg.aspect_ratios` at every cell).

    Returns (anchors (N, 4) float32 xyxy in input pixels, number of anchors per level). Order: per level
    (H, W, A) flattened, levels concatenated; aspect ratio r = h / w keeps the area size**2.
    """
    ratios = torch.tensor(rpn_cfg.aspect_ratios, dtype=torch.float64)
    per_level, sizes = [], []
    for i, size in enumerate(rpn_cfg.anchor_sizes):
        stride = 2 ** (min_level + i)
        cells = image_size // stride
        h = size * torch.sqrt(ratios)  # (A,)
        w = size / torch.sqrt(ratios)
        base = torch.stack([-w, -h, w, h], dim=1) / 2  # (A, 4), centred on 0
        centres = (torch.arange(cells, dtype=torch.float64) + 0.5) * stride
        cy, cx = torch.meshgrid(centres, centres, indexing="ij")  # (H, W)
        shifts = torch.stack([cx, cy, cx, cy], dim=-1).reshape(-1, 1, 4)  # (H*W, 1, 4)
        per_level.append((shifts + base[None]).reshape(-1, 4))  # (H*W*A, 4)
        sizes.append(per_level[-1].shape[0])
    return torch.cat(per_level).to(torch.float32), tuple(sizes)


class BoxCoder:
    """(dx, dy, dw, dh) <-> boxes relative to reference boxes, as torchvision's `det_utils.BoxCoder`.

    Works on any leading shape; `deltas` and `references` broadcast against each other.
    """

    def __init__(self, weights: tuple[float, float, float, float], clip: float = BBOX_XFORM_CLIP) -> None:
        self.weights = tuple(float(w) for w in weights)
        self.clip = clip

    def encode(self, boxes: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
        """Regression targets (..., 4) that turn `references` into `boxes` (both xyxy)."""
        wx, wy, ww, wh = self.weights
        rw, rh = references[..., 2] - references[..., 0], references[..., 3] - references[..., 1]
        rx, ry = references[..., 0] + 0.5 * rw, references[..., 1] + 0.5 * rh
        bw, bh = boxes[..., 2] - boxes[..., 0], boxes[..., 3] - boxes[..., 1]
        bx, by = boxes[..., 0] + 0.5 * bw, boxes[..., 1] + 0.5 * bh
        return torch.stack(
            [wx * (bx - rx) / rw, wy * (by - ry) / rh, ww * torch.log(bw / rw), wh * torch.log(bh / rh)], dim=-1
        )

    def decode(self, deltas: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
        """Boxes (..., 4) xyxy from `deltas` (..., 4) applied to `references` (..., 4)."""
        wx, wy, ww, wh = self.weights
        rw, rh = references[..., 2] - references[..., 0], references[..., 3] - references[..., 1]
        rx, ry = references[..., 0] + 0.5 * rw, references[..., 1] + 0.5 * rh
        dx, dy = deltas[..., 0] / wx, deltas[..., 1] / wy
        dw = torch.clamp(deltas[..., 2] / ww, max=self.clip)
        dh = torch.clamp(deltas[..., 3] / wh, max=self.clip)
        cx, cy = dx * rw + rx, dy * rh + ry
        half_w, half_h = 0.5 * torch.exp(dw) * rw, 0.5 * torch.exp(dh) * rh
        return torch.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], dim=-1)


class RPNHead(nn.Module):
    """Shared 1x1 objectness and delta convs over all levels (qd `SimpleRPNHead`).

    `forward(features)` returns objectness logits (B, N) and deltas (B, N, 4), flattened like the anchors.
    """

    def __init__(self, channels: int, num_anchors: int) -> None:
        super().__init__()
        self.num_anchors = num_anchors
        self.cls_logits = nn.Conv2d(channels, num_anchors, 1)
        self.bbox_pred = nn.Conv2d(channels, num_anchors * 4, 1)

    def forward(self, features: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        objectness, deltas = [], []
        for x in features:
            b, _, h, w = x.shape
            objectness.append(self.cls_logits(x).permute(0, 2, 3, 1).reshape(b, h * w * self.num_anchors))
            # Channels are ordered (A, 4) as in torchvision, so channels-last then a reshape gives (H, W, A, 4).
            deltas.append(self.bbox_pred(x).permute(0, 2, 3, 1).reshape(b, h * w * self.num_anchors, 4))
        return torch.cat(objectness, dim=1), torch.cat(deltas, dim=1)  # (B, N), (B, N, 4)
