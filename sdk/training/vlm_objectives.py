"""The task losses of an EfficientVLM on the demo scenes (`VLMObjective`), X-VLM's pre-training objectives
adapted to a model that must also caption and answer:

- `itc`: image-text contrast of the image class token and the caption [CLS] (X-VLM `get_contrastive_loss`),
  with every caption identical to the image's own counted as a positive (demo captions repeat);
- `itm`: matching on the fused [CLS], each image with its caption and with a hard negative drawn by ITC
  similarity among the other captions (X-VLM `get_matching_loss`);
- `caption`: the cross-modal stack as a decoder under the causal mask after the prompt (X-VLM captioning),
  label-smoothed;
- `vqa`: the answer classifier on the fused [CLS] of each question;
- `box`: X-VLM's grounding: the box of the object a phrase names, from the fused [CLS] (L1 + GIoU);
- `patch`: the class of the object under each patch, from the image tokens, `outline`: each patch's object
  coverage on a finer grid, and `patch_box`: the box of the object under each patch (L1 + GIoU) —
  training-only dense targets that make a small ViT trained from scratch see shapes (without them it learns
  colours and counts in minutes, and shapes not at all) and keep which object is where in its tokens.

The grounding and patch heads live here, not in the model: they are training signals, never exported.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Callable, ContextManager

import torch
import torch.nn.functional as F
from torch import nn

from minivlm.python_ref.efficientvlm.heads import MLPHead
from minivlm.python_ref.efficientvlm.model import EfficientVLM
from minivlm.python_ref.scenes import CLASSES
from minivlm.training.vlm_data import MASK_CELLS, VLMBatch

IGNORE = -100  # torch's cross_entropy default ignore_index


def box_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    """(N, 4) centre x, centre y, width, height -> x0, y0, x1, y1."""
    centre, size = boxes[:, :2], boxes[:, 2:]
    return torch.cat([centre - size / 2, centre + size / 2], dim=1)


def giou_loss(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean 1 - generalised IoU of matching rows of two (N, 4) xyxy box sets (X-VLM's grounding loss)."""
    lo, hi = torch.max(predicted[:, :2], target[:, :2]), torch.min(predicted[:, 2:], target[:, 2:])
    inter = (hi - lo).clamp(min=0).prod(dim=1)
    area = (predicted[:, 2:] - predicted[:, :2]).clamp(min=0).prod(dim=1) + (target[:, 2:] - target[:, :2]).prod(dim=1)
    union = area - inter
    hull = (torch.max(predicted[:, 2:], target[:, 2:]) - torch.min(predicted[:, :2], target[:, :2])).prod(dim=1)
    giou = inter / union.clamp(min=1e-9) - (hull - union) / hull.clamp(min=1e-9)
    return (1 - giou).mean()


def balanced_patch_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of patch classes (P, C) with the object patches and the background patches weighing the
    same (each a mean): most patches are background, and an unweighted mean lets the few patches on an
    object's outline — the only ones that show its shape — barely count."""
    losses = F.cross_entropy(logits, labels, reduction="none")
    on_object = labels > 0
    parts = [losses[part].mean() for part in (on_object, ~on_object) if part.any()]
    return torch.stack(parts).mean()


def same_text(texts: list[str]) -> torch.Tensor:
    """(B, B) 1 where two texts of a batch are identical."""
    return torch.tensor([[a == b for b in texts] for a in texts], dtype=torch.float32)


def soft_contrast(logits: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of (B, B) logits against targets spread evenly over each row's positives."""
    return -(positives / positives.sum(dim=1, keepdim=True) * logits.log_softmax(dim=1)).sum(dim=1).mean()


@dataclass
class TaskOutputs:
    """One batch through `VLMObjective.outputs`: losses and logits by task, each logits' row mask (None: every
    row), what `tap` recorded, the ITM negatives used, and the ITM pass's text mask (positives then negatives)."""

    losses: dict[str, torch.Tensor]
    logits: dict[str, torch.Tensor]
    logit_masks: dict[str, torch.Tensor | None]
    recorded: Any
    negatives: torch.Tensor
    itm_mask: torch.Tensor


class VLMObjective(nn.Module):
    """Every task loss of one batch (`forward`), and the logits distillation compares (`outputs`).

    An nn.Module holding the model and the training-only heads, so DDP wraps it and checkpoints keep it."""

    def __init__(self, model: EfficientVLM, prompt_length: int, label_smoothing: float = 0.1,
                 training_heads: bool = True) -> None:
        super().__init__()
        self.model = model
        self.prompt_length = prompt_length  # [CLS] and the prompt's tokens before every caption
        self.label_smoothing = label_smoothing
        self.training_heads = training_heads  # False: no patch/grounding losses (a teacher's forward for KD)
        if training_heads:
            self.patch_head = nn.Linear(model.cfg.vision.width, 1 + len(CLASSES))
            self.box_head = MLPHead(model.cfg.text.hidden_size, 4)  # X-VLM's bbox_head layout (build_mlp)
            self.mask_head = nn.Linear(model.cfg.vision.width, MASK_CELLS**2)
            self.patch_box_head = nn.Linear(model.cfg.vision.width, 4)

    def outputs(
        self, batch: VLMBatch, generator: torch.Generator, tap: Callable[[], ContextManager] = nullcontext,
        negatives: torch.Tensor | None = None,
    ) -> TaskOutputs:
        """Task losses and logits of one batch. The image pass, the caption pass and the ITM pass (positives
        then negatives, one call) run inside `tap()` (distillation records them there). ITM's negative for
        image i is caption `negatives[i]`, or drawn by ITC similarity among the other captions."""
        m, losses, logits = self.model, {}, {}
        with tap() as recorded:
            image = m.encode_image(batch.images)
            text = m.encode_text(batch.caption_text.ids, batch.caption_text.mask)
            i2t, t2i = m.heads.contrast(image, text)
            same = same_text(batch.captions)
            if negatives is None:
                with torch.no_grad():
                    weights = F.softmax(i2t.float(), dim=1).masked_fill(same > 0, 0.0) + 1e-6 * (1 - same)
                    negatives = torch.multinomial(weights, 1, generator=generator).squeeze(1)
            mask = batch.caption_text.mask
            itm_mask = torch.cat([mask, mask[negatives]])
            fused = m.fuse(torch.cat([text, text[negatives]]), itm_mask, torch.cat([image, image]))
        losses["itc"] = (soft_contrast(i2t, same) + soft_contrast(t2i, same)) / 2
        logits["itm"] = m.heads.itm_logits(fused)
        b = image.shape[0]
        matched = torch.cat([torch.ones(b), (same[torch.arange(b), negatives] > 0).float()]).long()
        losses["itm"] = F.cross_entropy(logits["itm"], matched)
        if self.training_heads:
            losses.update(self.dense_losses(image, batch))

        prompted = batch.caption_prompted
        start = self.prompt_length
        fused = m.fuse_causal(m.text.forward_causal(prompted.ids, prompted.mask), prompted.mask, image)
        logits["caption"] = m.mlm_logits(fused[:, start - 1 : -1])  # position t predicts token t + 1
        labels = prompted.ids[:, start:].masked_fill(prompted.mask[:, start:] == 0, IGNORE)
        losses["caption"] = F.cross_entropy(logits["caption"].flatten(0, 1), labels.flatten(), ignore_index=IGNORE,
                                            label_smoothing=self.label_smoothing)

        q = batch.questions
        fused = m.fuse(m.encode_text(q.ids, q.mask), q.mask, image[batch.question_scene])
        logits["vqa"] = m.heads.vqa_logits(fused)
        losses["vqa"] = F.cross_entropy(logits["vqa"], batch.answers)

        if self.training_heads and len(batch.phrase_scene):
            p = batch.phrases
            fused = m.fuse(m.encode_text(p.ids, p.mask), p.mask, image[batch.phrase_scene])
            boxes = self.box_head(fused[:, 0]).sigmoid()
            losses["box"] = F.l1_loss(boxes, batch.phrase_boxes) + giou_loss(box_xyxy(boxes), box_xyxy(batch.phrase_boxes))
        masks = {"itm": None, "vqa": None, "caption": prompted.mask[:, start:]}
        return TaskOutputs(losses, logits, masks, recorded, negatives, itm_mask)

    def dense_losses(self, image: torch.Tensor, batch: VLMBatch) -> dict[str, torch.Tensor]:
        """`patch`, `outline` and `patch_box` of the image tokens (B, 1 + patches, width)."""
        patches, losses = image[:, 1:], {}
        losses["patch"] = balanced_patch_loss(self.patch_head(patches).flatten(0, 1), batch.patch_labels.flatten())
        touched = batch.patch_masks.sum(dim=-1) > 0  # patches with any object pixel: the rest are all zeros
        if touched.any():
            losses["outline"] = F.binary_cross_entropy_with_logits(self.mask_head(patches)[touched],
                                                                   batch.patch_masks[touched])
        on_object = batch.patch_labels > 0
        if on_object.any():
            boxes, target = self.patch_box_head(patches)[on_object].sigmoid(), batch.patch_boxes[on_object]
            losses["patch_box"] = F.l1_loss(boxes, target) + giou_loss(box_xyxy(boxes), box_xyxy(target))
        return losses

    def forward(self, batch: VLMBatch, generator: torch.Generator) -> dict[str, torch.Tensor]:
        return self.outputs(batch, generator).losses

    @property
    def trainable(self) -> nn.Module:
        """What a checkpoint holds: the model and the training-only heads."""
        return self


class VisionWarmup(nn.Module):
    """The image encoder alone on the dense targets (`VLMObjective.dense_losses`): the first stage of a run from
    random weights. Measured on the demo teacher, the joint objectives leave the patch loss nearly flat for
    hundreds of steps (shape questions at chance), while the encoder alone learns shapes within a few hundred
    steps at a third of a joint step's cost; the joint stage keeps the dense losses, so what was learnt stays."""

    def __init__(self, objective: VLMObjective) -> None:
        super().__init__()
        if not objective.training_heads:
            raise ValueError("VisionWarmup needs an objective with its training heads")
        self.objective = objective

    def forward(self, batch: VLMBatch, generator: torch.Generator) -> dict[str, torch.Tensor]:
        del generator  # nothing is drawn here: the scenes come from the step's seed
        return self.objective.dense_losses(self.objective.model.encode_image(batch.images), batch)

    def trained(self) -> list[nn.Parameter]:
        o = self.objective
        return [*o.model.vision.parameters(), *o.patch_head.parameters(), *o.mask_head.parameters(),
                *o.patch_box_head.parameters()]
