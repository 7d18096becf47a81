"""The losses of each stage: the TEE as a Faster R-CNN (`DetectorObjective`) and the fusion model's
pre-training and fine-tuning (`FusionObjective`), with the attention arrangements fine-tuning uses."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from minivlm.python_ref.fusion import Fusion, additive_mask
from minivlm.python_ref.losses import IGNORE, box_head_loss, roi_targets, rpn_loss, token_loss
from minivlm.python_ref.postprocess import select_proposals
from minivlm.python_ref.rpn import BoxCoder
from minivlm.python_ref.tee import TEE
from minivlm.python_ref.tokenizer import Tokenizer
from minivlm.training.data import RegionCache
from minivlm.training.settings import TrainSettings


class DetectorObjective(nn.Module):
    """Faster R-CNN losses of the TEE for one batch; an nn.Module so DDP can wrap it."""

    def __init__(self, tee: TEE, settings: TrainSettings) -> None:
        super().__init__()
        self.tee = tee
        self.settings = settings
        self.rpn_coder = BoxCoder(tee.cfg.rpn.box_coder_weights)
        self.roi_coder = BoxCoder(tee.cfg.roi_head.box_coder_weights)
        levels = tee.cfg.roi_head.pooler_levels
        self.pooled = tuple(lv - tee.cfg.bifpn.min_level for lv in levels)

    def forward(self, images, gt_boxes, gt_labels, gt_attributes, generator) -> dict[str, torch.Tensor]:
        cfg = self.tee.cfg
        features = self.tee.features(images)  # P3..P7
        objectness, deltas = self.tee.rpn(features)  # (B, N), (B, N, 4)
        obj_loss, rpn_box_loss = rpn_loss(
            objectness, deltas, self.tee.anchors, gt_boxes, self.rpn_coder, generator, self.settings.rpn_samples
        )
        proposals = []
        with torch.no_grad():
            for b in range(images.shape[0]):
                boxes, valid = select_proposals(
                    objectness[b].detach(), deltas[b].detach(), self.tee.anchors, self.tee.level_sizes, cfg.rpn, cfg.image_size
                )
                proposals.append(boxes[valid])
        targets = roi_targets(
            proposals, gt_boxes, gt_labels, gt_attributes, self.roi_coder, generator, self.settings.roi_samples
        )
        pooled = self.tee.pooler(tuple(features[i] for i in self.pooled), targets.boxes)  # (B*S, C, P, P)
        region, class_logits, box_deltas, _ = self.tee.box_head(pooled)
        one_hot = F.one_hot(targets.labels.flatten(), cfg.roi_head.num_classes).float()
        attribute_logits = self.tee.box_head.attributes(region, one_hot)  # trained on the true class
        b, s = targets.labels.shape
        cls_loss, box_loss, attr_loss = box_head_loss(
            class_logits.view(b, s, -1), box_deltas.view(b, s, -1), attribute_logits.view(b, s, -1), targets
        )
        return {"rpn_obj": obj_loss, "rpn_box": rpn_box_loss, "cls": cls_loss, "box": box_loss, "attr": attr_loss}


def _mask_tokens(
    ids: torch.Tensor, maskable: torch.Tensor, probability: float, tokenizer: Tokenizer, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT masking of `ids` (B, T) where `maskable`: returns (inputs, labels with IGNORE elsewhere).

    At least one position per row is chosen; chosen tokens become [MASK] 80 %, a random token 10 %, or stay.
    """
    scores = torch.rand(ids.shape, generator=generator).masked_fill(~maskable, 2.0)
    chosen = (scores < probability) | (scores == scores.min(dim=1, keepdim=True).values)
    chosen &= maskable
    labels = torch.where(chosen, ids, torch.full_like(ids, IGNORE))
    inputs = ids.clone()
    roll = torch.rand(ids.shape, generator=generator)
    inputs[chosen & (roll < 0.8)] = tokenizer.mask_id
    random_ids = torch.randint(999, tokenizer.vocab_size, ids.shape, generator=generator)  # skip [unused]/specials
    swap = chosen & (roll >= 0.8) & (roll < 0.9)
    inputs[swap] = random_ids[swap]
    return inputs, labels


def _used(mask: torch.Tensor) -> int:
    """Columns of a padded segment (B, T) that any row uses: up to its last valid column (at least one)."""
    valid = torch.nonzero(mask.sum(dim=0)).flatten()
    return int(valid[-1]) + 1 if valid.numel() else 1


def trimmed(ids: torch.Tensor, mask: torch.Tensor, *more: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """A padded segment without the trailing columns no row of the batch uses.

    Padded keys are masked out and padded queries carry no loss, so dropping them changes no hidden state
    of a real token (tested); it halves the fine-tuning cost, since demo captions, tags and questions fill
    well under half of their padded lengths. Positions stay those of the full layout (`_token_states`).
    """
    n = _used(mask)
    return tuple(t[:, :n] for t in (ids, mask, *more))


def _token_states(fusion: Fusion, text_ids: torch.Tensor, tag_ids: torch.Tensor, tag_types: torch.Tensor,
                  regions: torch.Tensor) -> torch.Tensor:
    """Embeddings (B, Ta + Tb + R, H) of `[text | tags | regions]`, text and tags possibly trimmed: text at
    positions 0.., tags at max_text_len.., as in the full layout of `pack_inputs`."""
    enc, first_tag = fusion.encoder, fusion.cfg.max_text_len
    positions = torch.cat([torch.arange(text_ids.shape[1]), torch.arange(first_tag, first_tag + tag_ids.shape[1])])
    ids, types = torch.cat([text_ids, tag_ids], dim=1), torch.cat([torch.zeros_like(text_ids), tag_types], dim=1)
    # One embedding call, not two: each call's backward materialises a dense (V, H) gradient.
    return torch.cat([enc.embeddings(ids, types, positions), enc.region_embeddings(regions)], dim=1)


def full_attention_states(
    fusion: Fusion, text_ids: torch.Tensor, text_mask: torch.Tensor, tag_ids: torch.Tensor, tag_types: torch.Tensor,
    tag_mask: torch.Tensor, regions: torch.Tensor, region_mask: torch.Tensor,
) -> torch.Tensor:
    """`Fusion.encode(..., FULL)` of `[text | tags | regions]` given as separate, possibly trimmed segments:
    hidden states (B, Ta + Tb + R, H), equal to the full layout's at every real token."""
    x = _token_states(fusion, text_ids, tag_ids, tag_types, regions)
    valid = torch.cat([text_mask, tag_mask, region_mask], dim=1)  # (B, S)
    mask = additive_mask(valid[:, None, :].expand(-1, x.shape[1], -1))  # padded keys hidden from every query
    for layer in fusion.encoder.layers:
        x = layer(x, *layer.kv(x), mask)
    return x


def caption_query_states(
    fusion: Fusion, mask_id: int, text_ids: torch.Tensor, text_mask: torch.Tensor, tag_ids: torch.Tensor,
    tag_types: torch.Tensor, tag_mask: torch.Tensor, regions: torch.Tensor, region_mask: torch.Tensor,
) -> torch.Tensor:
    """Hidden states (B, Ta-1, H) of one [MASK] query per caption position 1..Ta-1, each computed under exactly
    the condition of the decoding step that predicts that position.

    OSCAR fine-tunes captioning by masking ~15 % of caption tokens under the seq2seq mask, while decoding
    predicts a [MASK] appended after real tokens. Here `[text | tags | regions | queries]` carries a [MASK]
    query per position t (position id t) that sees the real tokens before t, the tags+regions and itself;
    real tokens and the prefix attend as in the seq2seq mask and never see a query. So every query equals a
    decoding step and one pass teaches all steps (a training arrangement only: the model is unchanged).
    Text and tags may come without their trailing padding (see `trimmed`).
    """
    enc = fusion.encoder
    b, ta = text_ids.shape
    prefix_end = ta + tag_ids.shape[1] + regions.shape[1]
    queries = torch.full((b, ta - 1), mask_id)
    x = torch.cat([
        _token_states(fusion, text_ids, tag_ids, tag_types, regions),
        enc.embeddings(queries, torch.zeros_like(queries), torch.arange(1, ta)),
    ], dim=1)  # (B, S, H), S = prefix_end + ta - 1
    q, k = torch.arange(x.shape[1])[:, None], torch.arange(x.shape[1])[None, :]
    text_k, prefix_k = k < ta, (k >= ta) & (k < prefix_end)
    allowed = (
        ((q < ta) & ((text_k & (k <= q)) | prefix_k))
        | ((q >= ta) & (q < prefix_end) & prefix_k)
        | ((q >= prefix_end) & ((text_k & (k < q - prefix_end + 1)) | prefix_k | (k == q)))
    )
    valid_keys = torch.cat([text_mask, tag_mask, region_mask, text_mask[:, 1:]], dim=1)  # (B, S)
    mask = additive_mask(allowed[None].float() * valid_keys[:, None, :])
    for layer in enc.layers:
        x = layer(x, *layer.kv(x), mask)
    return x[:, prefix_end:]


class FusionObjective(nn.Module):
    """Fusion losses of one batch for the `pretrain` or `finetune` stage; an nn.Module so DDP can wrap it."""

    def __init__(self, fusion: Fusion, tokenizer: Tokenizer, settings: TrainSettings) -> None:
        super().__init__()
        self.fusion = fusion
        self.tokenizer = tokenizer
        self.settings = settings

    def _special(self, ids: torch.Tensor) -> torch.Tensor:
        t = self.tokenizer
        return (ids == t.cls_id) | (ids == t.sep_id) | (ids == t.pad_id)

    def _polluted(self, cache: RegionCache, scenes: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Tag rows for each scene, half swapped with another scene's, and whether they still match."""
        swap = torch.rand(len(scenes), generator=generator) < 0.5
        others = torch.randint(0, cache.tag_ids.shape[0], (len(scenes),), generator=generator)
        tag_rows = torch.where(swap, others, scenes)
        same = (cache.tag_ids[tag_rows] == cache.tag_ids[scenes]).all(dim=1)
        return tag_rows, (~swap | same).long()

    def forward(self, cache: RegionCache, stage: str, generator: torch.Generator) -> dict[str, torch.Tensor]:
        s = self.settings
        n = cache.tag_ids.shape[0]
        scenes = torch.randint(0, n, (s.fusion_batch,), generator=generator)
        tag_rows, matched = self._polluted(cache, scenes, generator)
        text = trimmed(cache.caption_ids[scenes], cache.caption_mask[scenes])
        tags = trimmed(cache.tag_ids[tag_rows], cache.tag_mask[tag_rows], cache.tag_types[tag_rows])
        regions = trimmed(cache.regions[scenes], cache.region_mask[scenes])
        losses = {}
        if stage == "pretrain":
            ids, mask = torch.cat([text[0], tags[0]], dim=1), torch.cat([text[1], tags[1]], dim=1)
            inputs, labels = _mask_tokens(ids, (mask > 0) & ~self._special(ids), s.mask_probability, self.tokenizer, generator)
            t = text[0].shape[1]
            hidden = full_attention_states(self.fusion, inputs[:, :t], text[1], inputs[:, t:], tags[2], tags[1], *regions)
            losses["mlm"] = self._mlm(hidden, labels, 0.0)
            losses["match"] = F.cross_entropy(self.fusion.match_logits(hidden), matched)
            return losses
        # finetune: captions (true tags, seq2seq + one query per position), VQA (true tags, full), match (polluted)
        true_tags = trimmed(cache.tag_ids[scenes], cache.tag_mask[scenes], cache.tag_types[scenes])
        hidden = caption_query_states(self.fusion, self.tokenizer.mask_id, *text, true_tags[0], true_tags[2],
                                      true_tags[1], *regions)
        caption_ids, caption_mask = text
        labels = torch.where(caption_mask[:, 1:] > 0, caption_ids[:, 1:], torch.full_like(caption_ids[:, 1:], IGNORE))
        losses["caption"] = self._mlm(hidden, labels, s.label_smoothing)  # label-smoothed as OSCAR
        q = torch.randint(0, cache.question_ids.shape[0], (s.vqa_batch,), generator=generator)
        qs = cache.question_scene[q]
        q_tags = trimmed(cache.tag_ids[qs], cache.tag_mask[qs], cache.tag_types[qs])
        hidden = full_attention_states(self.fusion, *trimmed(cache.question_ids[q], cache.question_mask[q]),
                                       q_tags[0], q_tags[2], q_tags[1], *trimmed(cache.regions[qs], cache.region_mask[qs]))
        losses["vqa"] = F.cross_entropy(self.fusion.vqa_logits(hidden), cache.answers[q])
        m = slice(0, s.match_batch)  # the first scenes of the batch, half of them with polluted tags
        text, tags, regions = (trimmed(*(t[m] for t in part)) for part in (text, tags, regions))
        hidden = full_attention_states(self.fusion, *text, tags[0], tags[2], tags[1], *regions)
        losses["match"] = F.cross_entropy(self.fusion.match_logits(hidden), matched[m])
        return losses

    def _mlm(self, hidden: torch.Tensor, labels: torch.Tensor, smoothing: float) -> torch.Tensor:
        picked = labels != IGNORE  # the vocabulary projection only where there is a label: (M, V), not (B, T, V)
        return token_loss(self.fusion.mlm_logits(hidden[:, : labels.shape[1]][picked]), labels[picked], smoothing)
