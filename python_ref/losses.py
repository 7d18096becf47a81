"""Training targets and losses for MiniVLM (the reference recipe, used by `minivlm.training`).

Detector: the Faster R-CNN recipe (Ren et al. 2015) as the MiniVLM TEE is trained in maskrcnn-benchmark/qd
(`rpn/loss.py`, `roi_heads/box_head/loss.py`): IoU matching of anchors (0.7 / 0.3, best anchor per box kept)
and proposals (0.5), balanced sampling, binary cross-entropy + smooth-L1 for the RPN, cross-entropy +
class-specific smooth-L1 for the box head, cross-entropy for the attribute head on foreground regions.
Fusion: OSCAR's masked-token loss (optionally label-smoothed), the 2-way match loss on polluted tags, and the
VQA classifier loss (single-answer cross-entropy: every demo question has exactly one right answer).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .postprocess import box_iou
from .rpn import BoxCoder

IGNORE = -1  # label of anchors/tokens that do not contribute to a loss


def match(iou: torch.Tensor, high: float, low: float, keep_best: bool) -> torch.Tensor:
    """For each column (anchor/proposal) of iou (G, N): the matched ground-truth row, -1 background, -2 ignored.

    With `keep_best`, each ground truth also claims the columns where it reaches its own highest IoU, so that
    small boxes no anchor covers at `high` still get a positive (maskrcnn-benchmark `allow_low_quality_matches`).
    """
    if iou.shape[0] == 0:
        return torch.full((iou.shape[1],), -1, dtype=torch.long)
    best, matched = iou.max(dim=0)
    matched = matched.clone()
    matched[best < high] = -2
    matched[best < low] = -1
    if keep_best:
        best_per_gt = iou.max(dim=1, keepdim=True).values
        gt_idx, col_idx = torch.nonzero((iou == best_per_gt) & (best_per_gt > 0), as_tuple=True)
        matched[col_idx] = gt_idx
    return matched


def sample(matched: torch.Tensor, num: int, positive_fraction: float, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of at most `num` sampled columns: positives (matched ≥ 0) up to the fraction, negatives (−1) fill."""
    positive = torch.nonzero(matched >= 0).flatten()
    negative = torch.nonzero(matched == -1).flatten()
    num_pos = min(positive.numel(), int(num * positive_fraction))
    num_neg = min(negative.numel(), num - num_pos)
    positive = positive[torch.randperm(positive.numel(), generator=generator)[:num_pos]]
    negative = negative[torch.randperm(negative.numel(), generator=generator)[:num_neg]]
    return positive, negative


def rpn_loss(
    objectness: torch.Tensor,
    deltas: torch.Tensor,
    anchors: torch.Tensor,
    gt_boxes: list[torch.Tensor],
    coder: BoxCoder,
    generator: torch.Generator,
    batch_per_image: int = 256,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(objectness loss, box loss) for objectness (B, N), deltas (B, N, 4) over anchors (N, 4)."""
    logits, labels, pred, target = [], [], [], []
    for b, boxes in enumerate(gt_boxes):
        matched = match(box_iou(boxes, anchors), high=0.7, low=0.3, keep_best=True)
        pos, neg = sample(matched, batch_per_image, 0.5, generator)
        idx = torch.cat([pos, neg])
        logits.append(objectness[b, idx])
        labels.append(torch.cat([torch.ones(len(pos)), torch.zeros(len(neg))]))
        pred.append(deltas[b, pos])
        target.append(coder.encode(boxes[matched[pos]], anchors[pos]))
    logits, labels = torch.cat(logits), torch.cat(labels)
    obj_loss = F.binary_cross_entropy_with_logits(logits, labels)
    box_loss = F.smooth_l1_loss(torch.cat(pred), torch.cat(target), beta=1 / 9, reduction="sum") / max(1, labels.numel())
    return obj_loss, box_loss


@dataclass(frozen=True)
class RoITargets:
    """Sampled proposals of a batch and what the box head should predict for them."""

    boxes: torch.Tensor  # (B, S, 4) sampled proposals, input pixels
    labels: torch.Tensor  # (B, S) class index, 0 = background
    regression: torch.Tensor  # (B, S, 4) encoded targets (meaningful where labels > 0)
    attributes: torch.Tensor  # (B, S) attribute index, IGNORE for background


def roi_targets(
    proposals: list[torch.Tensor],
    gt_boxes: list[torch.Tensor],
    gt_labels: list[torch.Tensor],
    gt_attributes: list[torch.Tensor],
    coder: BoxCoder,
    generator: torch.Generator,
    samples_per_image: int,
    positive_fraction: float = 0.25,
) -> RoITargets:
    """Match proposals (plus the ground truth itself, as in maskrcnn-benchmark) at IoU 0.5 and sample a fixed
    number per image, so the batch keeps a static (B, S) shape; short draws are topped up by repetition."""
    out = {"boxes": [], "labels": [], "regression": [], "attributes": []}
    for props, boxes, labels, attrs in zip(proposals, gt_boxes, gt_labels, gt_attributes):
        candidates = torch.cat([props, boxes])
        matched = match(box_iou(boxes, candidates), high=0.5, low=0.5, keep_best=False)
        pos, neg = sample(matched, samples_per_image, positive_fraction, generator)
        idx = torch.cat([pos, neg])
        idx = idx[torch.arange(samples_per_image) % idx.numel()]
        gt = matched[idx].clamp(min=0)
        foreground = matched[idx] >= 0
        out["boxes"].append(candidates[idx])
        out["labels"].append(torch.where(foreground, labels[gt], 0))
        out["regression"].append(coder.encode(boxes[gt], candidates[idx]))
        out["attributes"].append(torch.where(foreground, attrs[gt], IGNORE))
    return RoITargets(**{k: torch.stack(v) for k, v in out.items()})


def box_head_loss(
    class_logits: torch.Tensor,
    box_deltas: torch.Tensor,
    attribute_logits: torch.Tensor,
    targets: RoITargets,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(classification, box regression, attribute) losses for class_logits (B, S, C), box_deltas (B, S, 4C)."""
    labels = targets.labels.flatten()
    cls_loss = F.cross_entropy(class_logits.flatten(0, 1), labels)
    fg = torch.nonzero(labels > 0).flatten()
    deltas = box_deltas.flatten(0, 1).view(labels.numel(), -1, 4)[fg, labels[fg]]  # (F, 4) of the true class
    box_loss = F.smooth_l1_loss(deltas, targets.regression.flatten(0, 1)[fg], beta=1.0, reduction="sum") / labels.numel()
    attrs = targets.attributes.flatten()
    if (attrs != IGNORE).any():
        attr_loss = F.cross_entropy(attribute_logits.flatten(0, 1), attrs, ignore_index=IGNORE)
    else:
        attr_loss = attribute_logits.sum() * 0.0
    return cls_loss, box_loss, attr_loss


def token_loss(logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Cross-entropy over positions whose label is not IGNORE; logits (..., V), labels (...)."""
    return F.cross_entropy(logits.flatten(0, -2), labels.flatten(), ignore_index=IGNORE, label_smoothing=label_smoothing)
