"""Host steps around the TEE graphs: NMS, proposal selection, region selection and region geometry.

Deterministic float32 CPU code that the native ports replay from goldens (docs/ARCHITECTURE.md §5), kept out of the
graphs because top-k/sort do not run on every target. Semantics follow torchvision
`ops/boxes.py` (`nms`, `batched_nms`, `clip_boxes_to_image`, `remove_small_boxes`),
`models/detection/rpn.py` (`RegionProposalNetwork.filter_proposals`) and
`models/detection/roi_heads.py` (`postprocess_detections`), with every tie broken by the lower index
(stable sorts) so that two runs, and two languages, keep the same boxes in the same order. Region geometry
is OSCAR's 6-d box feature (`microsoft/Oscar`, `[x1/W, y1/H, x2/W, y2/H, w/W, h/H]`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .config import RoIHeadConfig, RPNConfig
from .errors import InputError
from .rpn import BoxCoder


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU matrix (N, M) of xyxy boxes a (N, 4) and b (M, 4), in their dtype; 0 where the union is empty.

    torchvision's `box_iou` gives 0/0 = NaN for two zero-area boxes; here they overlap nothing, like a zero-area
    box and any other (an inverted box, x2 < x1 or y2 < y1, has no intersection with anything either).
    """
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = area_a[:, None] + area_b[None, :] - inter
    return torch.where(union > 0, inter / union, torch.zeros_like(inter))


def _stable_descending(scores: torch.Tensor) -> torch.Tensor:
    """Indices sorting `scores` high to low, equal scores by lower index."""
    return torch.sort(scores, descending=True, stable=True).indices


def _greedy_nms(boxes: np.ndarray, iou_threshold: float) -> list[int]:
    """Greedy NMS over boxes already sorted by score: positions kept. O(N) memory, float32 arithmetic."""
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    areas = (x2 - x1) * (y2 - y1)
    suppressed = np.zeros(len(boxes), dtype=bool)
    keep = []
    with np.errstate(invalid="ignore", divide="ignore"):  # empty boxes: IoU NaN, never suppresses (torchvision)
        for i in range(len(boxes)):
            if suppressed[i]:
                continue
            keep.append(i)
            w = np.maximum(np.minimum(x2[i], x2[i + 1:]) - np.maximum(x1[i], x1[i + 1:]), np.float32(0))
            h = np.maximum(np.minimum(y2[i], y2[i + 1:]) - np.maximum(y1[i], y1[i + 1:]), np.float32(0))
            inter = w * h
            suppressed[i + 1:] |= inter / (areas[i] + areas[i + 1:] - inter) > iou_threshold
    return keep


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy non-maximum suppression: indices (int64) of the kept boxes, by descending score.

    A box is dropped when its IoU with a kept higher-scoring box is > `iou_threshold`; equal scores are
    visited in index order.
    """
    order = _stable_descending(scores)
    kept = _greedy_nms(boxes[order].detach().to(torch.float32).numpy(), iou_threshold)
    return order[torch.tensor(kept, dtype=torch.int64)]


def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, groups: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """NMS within each group (e.g. class) independently: kept indices by descending score, ties by index.

    Exactly one greedy NMS per group, rather than torchvision's coordinate-offset trick, whose large offsets
    can round the IoU differently from the per-group result.
    """
    order = _stable_descending(scores)
    order = order[torch.sort(groups[order], stable=True).indices]  # grouped; by score within a group
    sorted_boxes = boxes[order].detach().to(torch.float32).numpy()
    sorted_groups = groups[order].numpy()
    starts = [0, *(np.flatnonzero(np.diff(sorted_groups)) + 1).tolist()]
    ends = [*starts[1:], len(sorted_groups)]
    kept = [a + k for a, b in zip(starts, ends) if b > a for k in _greedy_nms(sorted_boxes[a:b], iou_threshold)]
    kept_indices = torch.sort(order[torch.tensor(kept, dtype=torch.int64)]).values
    return kept_indices[_stable_descending(scores[kept_indices])]


def clip_boxes(boxes: torch.Tensor, width: float, height: float) -> torch.Tensor:
    """Clamp xyxy boxes (..., 4) into [0, width] x [0, height]."""
    x = boxes[..., 0::2].clamp(0.0, float(width))
    y = boxes[..., 1::2].clamp(0.0, float(height))
    return torch.stack([x[..., 0], y[..., 0], x[..., 1], y[..., 1]], dim=-1)


def select_proposals(objectness: torch.Tensor, deltas: torch.Tensor, anchors: torch.Tensor,
                     level_sizes: tuple[int, ...], rpn_cfg: RPNConfig,
                     image_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """RPN proposals for one image, padded to exactly `rpn_cfg.post_nms_top_n` for stage 2.

    objectness (N,) logits, deltas (N, 4), anchors (N, 4), `level_sizes` the anchors per level. Per level:
    top `pre_nms_top_n` by objectness, decode, clip to the S x S input, drop boxes narrower or shorter than
    `min_box_size`, NMS at `nms_threshold`; then the best `post_nms_top_n` over all levels by objectness.
    Returns boxes (post_nms_top_n, 4) float32 and valid (post_nms_top_n,) bool; padding rows are zero boxes.
    """
    boxes, _ = _kept_proposals(objectness, deltas, anchors, level_sizes, rpn_cfg, image_size)
    k = rpn_cfg.post_nms_top_n
    out = torch.zeros(k, 4, dtype=torch.float32)
    out[: len(boxes)] = boxes.to(torch.float32)
    valid = torch.arange(k) < len(boxes)
    return out, valid


def proposal_anchors(objectness: torch.Tensor, deltas: torch.Tensor, anchors: torch.Tensor,
                     level_sizes: tuple[int, ...], rpn_cfg: RPNConfig, image_size: int) -> torch.Tensor:
    """The anchor (index into the N anchors) each row of `select_proposals` came from: (post_nms_top_n,) int64,
    -1 on padding rows. Parity compares two runs' proposals by anchor (a near-tie may swap two at a cut)."""
    _, index = _kept_proposals(objectness, deltas, anchors, level_sizes, rpn_cfg, image_size)
    out = torch.full((rpn_cfg.post_nms_top_n,), -1, dtype=torch.int64)
    out[: len(index)] = index
    return out


def _kept_proposals(objectness: torch.Tensor, deltas: torch.Tensor, anchors: torch.Tensor,
                    level_sizes: tuple[int, ...], rpn_cfg: RPNConfig,
                    image_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`select_proposals` before padding: the kept boxes (M, 4) and their anchors' indices (M,), best first."""
    n = int(sum(level_sizes))
    if objectness.shape != (n,) or deltas.shape != (n, 4) or anchors.shape != (n, 4):
        raise InputError(
            f"objectness {tuple(objectness.shape)}, deltas {tuple(deltas.shape)}, anchors {tuple(anchors.shape)}; "
            f"expected ({n},), ({n}, 4), ({n}, 4) for level sizes {tuple(level_sizes)}"
        )
    coder = BoxCoder(rpn_cfg.box_coder_weights)
    boxes_per_level, scores_per_level, index_per_level = [], [], []
    first = 0
    for level_scores, level_deltas, level_anchors in zip(objectness.split(level_sizes), deltas.split(level_sizes),
                                                         anchors.split(level_sizes)):
        top = _stable_descending(level_scores)[: rpn_cfg.pre_nms_top_n]
        boxes = clip_boxes(coder.decode(level_deltas[top], level_anchors[top]), image_size, image_size)
        wide = (boxes[:, 2] - boxes[:, 0] >= rpn_cfg.min_box_size) & (boxes[:, 3] - boxes[:, 1] >= rpn_cfg.min_box_size)
        boxes, scores, index = boxes[wide], level_scores[top][wide], top[wide] + first
        keep = nms(boxes, scores, rpn_cfg.nms_threshold)
        boxes_per_level.append(boxes[keep])
        scores_per_level.append(scores[keep])
        index_per_level.append(index[keep])
        first += len(level_scores)
    boxes, scores = torch.cat(boxes_per_level), torch.cat(scores_per_level)
    best = _stable_descending(scores)[: rpn_cfg.post_nms_top_n]  # ties: lower level, then lower anchor
    return boxes[best], torch.cat(index_per_level)[best]


@dataclass(frozen=True)
class Regions:
    """Detections of one image (K <= max_regions), in `RoIHeadConfig.region_order`.

    boxes (K, 4) xyxy float32 in input pixels; labels (K,) int64 class index >= 1 (0 is background);
    scores (K,) softmax probability of that class; features (K, D) the fc7 feature of the proposal each
    detection came from; attribute_logits (K, A) that proposal's attribute logits (computed for its argmax
    class, bottom-up-attention style; apply argmax/sigmoid as the task needs); proposal_indices (K,) int64
    the proposal row each detection came from (several detections may share one).
    """

    boxes: torch.Tensor
    labels: torch.Tensor
    scores: torch.Tensor
    features: torch.Tensor
    attribute_logits: torch.Tensor
    proposal_indices: torch.Tensor

    def __len__(self) -> int:
        return int(self.boxes.shape[0])


def select_regions(proposals: torch.Tensor, valid: torch.Tensor, class_logits: torch.Tensor,
                   box_deltas: torch.Tensor, attribute_logits: torch.Tensor, features: torch.Tensor,
                   roi_cfg: RoIHeadConfig, image_size: int) -> Regions:
    """Final detections of one image from stage-2 outputs (torchvision `postprocess_detections`).

    Softmax over classes, class-specific decode with `roi_cfg.box_coder_weights`, clip to the S x S input,
    drop padding proposals (`valid` False) and background, keep score >= `score_threshold`, per-class NMS at
    `nms_threshold`, then the top `max_regions` by score (ties by lower (proposal, class) index), handed on in
    `roi_cfg.region_order`: by descending score, or left to right by box centre (ties in score order).
    """
    r, c = class_logits.shape
    if proposals.shape != (r, 4) or valid.shape != (r,) or box_deltas.shape != (r, c * 4):
        raise InputError(
            f"proposals {tuple(proposals.shape)}, valid {tuple(valid.shape)}, box_deltas {tuple(box_deltas.shape)}; "
            f"expected ({r}, 4), ({r},), ({r}, {c * 4}) for class_logits ({r}, {c})"
        )
    scores = torch.softmax(class_logits.to(torch.float32), dim=1)[:, 1:]  # (R, C-1), background dropped
    candidate = valid[:, None] & (scores >= roi_cfg.score_threshold)  # (R, C-1)
    rows, columns = candidate.nonzero(as_tuple=True)  # (M,) each, in row-major (proposal, class) order
    scores, labels = scores[rows, columns], columns + 1
    # Decoding is elementwise, so only the candidates are decoded (R*C boxes would dominate the run time).
    deltas = box_deltas.reshape(r, c, 4)[rows, labels]  # (M, 4)
    boxes = BoxCoder(roi_cfg.box_coder_weights).decode(deltas, proposals[rows])
    boxes = clip_boxes(boxes, image_size, image_size)
    keep = batched_nms(boxes, scores, labels, roi_cfg.nms_threshold)[: roi_cfg.max_regions]
    if roi_cfg.region_order == "left_to_right":  # the kept set is still the best by score; only the order changes
        centres = (boxes[keep, 0] + boxes[keep, 2]) * 0.5
        keep = keep[torch.sort(centres, stable=True).indices]  # ties keep the score order
    return Regions(boxes=boxes[keep], labels=labels[keep], scores=scores[keep], features=features[rows[keep]],
                   attribute_logits=attribute_logits[rows[keep]], proposal_indices=rows[keep])


def region_geometry(boxes: torch.Tensor, width: float, height: float) -> torch.Tensor:
    """OSCAR's box feature (K, 6): [x1/W, y1/H, x2/W, y2/H, w/W, h/H] for xyxy boxes in a W x H frame."""
    x1, y1, x2, y2 = boxes.unbind(dim=1)
    return torch.stack([x1 / width, y1 / height, x2 / width, y2 / height, (x2 - x1) / width, (y2 - y1) / height], dim=1)


def region_tokens(regions: Regions, width: float, height: float) -> torch.Tensor:
    """Region tokens (K, D + 6) = fc7 feature ⊕ geometry, the fusion model's image input.

    `width`, `height` are the size of the frame `regions.boxes` are expressed in.
    """
    return torch.cat([regions.features, region_geometry(regions.boxes, width, height)], dim=1)
