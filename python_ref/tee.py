"""TEE, MiniVLM's Two-stage Efficient feature Extractor (Wang et al., arXiv 2012.06946, §3.1).

EfficientNet trunk -> BiFPN (EfficientDet) -> RPN -> multi-level RoIAlign -> box head, as a Faster R-CNN
(Ren et al. 2015) on a fixed square input. Deployment splits it into two static-shape graphs around the
host proposal step (docs/ARCHITECTURE.md §3): `TEEStage1` (images -> pooled levels + RPN outputs) and `TEEStage2`
(pooled levels + proposals -> region features and predictions). Both share the TEE's submodules.
"""

from __future__ import annotations

import torch
from torch import nn

from .bifpn import BiFPN
from .config import TEEConfig
from .efficientnet import EfficientNet
from .errors import ConfigError, InputError
from .roi_align import MultiScaleRoIAlign
from .roi_head import RoIBoxHead
from .rpn import RPNHead, make_anchors


class TEE(nn.Module):
    """The detector's modules and anchors. Use `stage1()` / `stage2()` for the exported graphs.

    State dict prefixes: `backbone.`, `bifpn.`, `rpn.`, `box_head.`; `anchors` (N, 4) is a non-persistent
    buffer (derived from the config, never stored in a checkpoint) and `level_sizes` its split per level.
    """

    def __init__(self, cfg: TEEConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.backbone = EfficientNet(cfg.backbone)
        self.bifpn = BiFPN(cfg.bifpn, self.backbone.feature_info)
        self.rpn = RPNHead(cfg.bifpn.channels, cfg.rpn.anchors_per_location)
        roi = cfg.roi_head
        self.pooler = MultiScaleRoIAlign(roi.pooler_levels, roi.pooler_resolution, roi.sampling_ratio,
                                         roi.canonical_scale, roi.canonical_level)
        self.box_head = RoIBoxHead(roi, cfg.bifpn.channels)
        anchors, self.level_sizes = make_anchors(cfg.rpn, cfg.image_size, cfg.bifpn.min_level)
        self.register_buffer("anchors", anchors, persistent=False)  # (N, 4) xyxy, input pixels

    def features(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """BiFPN outputs P{min_level}..P{max_level} for normalised images (B, 3, S, S)."""
        return self.bifpn(self.backbone(images))

    def stage1(self) -> TEEStage1:
        """The first graph: images -> pooler-level features, objectness, deltas."""
        return TEEStage1(self)

    def stage2(self) -> TEEStage2:
        """The second graph: pooler-level features, proposals -> region features and predictions."""
        return TEEStage2(self)


class TEEStage1(nn.Module):
    """images (B, 3, S, S) normalised -> (p3, p4, p5, p6, objectness (B, N), deltas (B, N, 4)).

    The features returned are those of `roi_head.pooler_levels`; the RPN runs on all BiFPN levels.
    """

    def __init__(self, tee: TEE) -> None:
        super().__init__()
        self.backbone, self.bifpn, self.rpn = tee.backbone, tee.bifpn, tee.rpn
        self.cfg = tee.cfg
        levels = tee.cfg.roi_head.pooler_levels
        self.pooled_indices = tuple(lv - tee.cfg.bifpn.min_level for lv in levels)
        self.input_names = ("images",)
        self.output_names = (*(f"p{lv}" for lv in levels), "objectness", "deltas")

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        features = self.bifpn(self.backbone(images))  # P3..P7, each (B, C, S/2^l, S/2^l)
        objectness, deltas = self.rpn(features)  # (B, N), (B, N, 4)
        return (*(features[i] for i in self.pooled_indices), objectness, deltas)

    def example_inputs(self, batch: int = 1) -> tuple[torch.Tensor, ...]:
        """Zero images of the exact static shape (B, 3, S, S) f32."""
        s = self.cfg.image_size
        return (torch.zeros(batch, 3, s, s, dtype=torch.float32),)


class TEEStage2(nn.Module):
    """(p3, p4, p5, p6, boxes (B, R, 4) xyxy input pixels) -> (region features (B, R, D),
    class logits (B, R, C), box deltas (B, R, C*4), attribute logits (B, R, A))."""

    def __init__(self, tee: TEE) -> None:
        super().__init__()
        levels = tee.cfg.roi_head.pooler_levels
        if len(levels) != 4:
            raise ConfigError(f"TEEStage2 takes 4 pooled levels (p3..p6), the config pools {levels}")
        self.pooler, self.box_head = tee.pooler, tee.box_head
        self.cfg = tee.cfg
        self.input_names = (*(f"p{lv}" for lv in levels), "boxes")
        self.output_names = ("region_features", "class_logits", "box_deltas", "attribute_logits")
        # Box coordinates steer discrete choices (each box's pyramid level, its bilinear sampling positions) and
        # reach near-ties downstream (the RoI head's class argmax). In float16 a coordinate near the image size
        # keeps a quarter pixel: a converter computing in float16 keeps the operations that depend on these
        # inputs alone in float32.
        self.float32_inputs = ("boxes",)

    def forward(self, p3: torch.Tensor, p4: torch.Tensor, p5: torch.Tensor, p6: torch.Tensor,
                boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        b, r = boxes.shape[0], boxes.shape[1]
        pooled = self.pooler((p3, p4, p5, p6), boxes)  # (B*R, C, P, P)
        outputs = self.box_head(pooled)  # each (B*R, ...)
        return tuple(y.reshape(b, r, y.shape[-1]) for y in outputs)

    def example_inputs(self, batch: int = 1) -> tuple[torch.Tensor, ...]:
        """Zero inputs of the exact static shapes: each pooled level (B, C, S / 2^l, S / 2^l) f32, C the BiFPN
        width, and the kept proposals (B, R, 4) f32, R = `rpn.post_nms_top_n`."""
        c, s = self.cfg.bifpn.channels, self.cfg.image_size
        levels = tuple(torch.zeros(batch, c, s >> lv, s >> lv, dtype=torch.float32) for lv in self.cfg.roi_head.pooler_levels)
        return (*levels, torch.zeros(batch, self.cfg.rpn.post_nms_top_n, 4, dtype=torch.float32))


def check_boxes(boxes: object, batch: int) -> None:
    """Raise InputError unless `boxes` is a finite float32 tensor (batch, R, 4) with R >= 1."""
    if not isinstance(boxes, torch.Tensor):
        raise InputError(f"boxes is a {type(boxes).__name__}, expected a torch.Tensor ({batch}, R, 4)")
    if boxes.dim() != 3 or boxes.shape[0] != batch or boxes.shape[1] < 1 or boxes.shape[2] != 4:
        raise InputError(f"boxes shape is {tuple(boxes.shape)}, expected ({batch}, R, 4) with R >= 1")
    if boxes.dtype != torch.float32:
        raise InputError(f"boxes dtype is {boxes.dtype}, expected torch.float32")
    if not bool(torch.isfinite(boxes).all()):
        raise InputError("boxes contain NaN or infinite values")
