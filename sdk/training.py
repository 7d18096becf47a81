"""Training the demo model on generated scenes, with MiniVLM's recipe (docs/ARCHITECTURE.md §2; arXiv 2012.06946).

Stages, each resumable from its last checkpoint:
1. `detector`  — TEE as a Faster R-CNN: RPN objectness/box losses + box-head classification, class-specific
   regression and attribute (colour) losses, on freshly generated scenes every step.
2. `regions`   — the trained TEE (eval mode, exactly the inference pipeline) turns a pool of scenes into
   region tokens and tags once; fusion training reads them, as OSCAR trains on pre-extracted features.
3. `pretrain`  — fusion pre-training: masked-token loss over text and tags (full attention) + the 2-way
   match loss on [CLS] with tags polluted (swapped with another scene's) half of the time.
4. `finetune`  — caption fine-tuning with the seq2seq mask (masked caption tokens, label smoothing 0.1)
   together with VQA fine-tuning of the answer classifier and the match loss, so that one bundled model
   serves every task (OSCAR fine-tunes one model per task; the demo ships one).

Runs on CPU as it is, and unchanged under `torchrun --nproc_per_node N` (gloo, DistributedDataParallel):
every rank draws its own scene indices, gradients are averaged by DDP, rank 0 writes checkpoints.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from minivlm.checkpoints import load_checkpoint, save_checkpoint, save_weights
from minivlm.converters.atomic import atomic_file, atomic_path
from minivlm.errors import ConfigError, InputError
from minivlm.python_ref.config import MiniVLMConfig, get_config
from minivlm.python_ref.fusion import Fusion, additive_mask
from minivlm.python_ref.packing import pack_inputs
from minivlm.python_ref.losses import IGNORE, box_head_loss, roi_targets, rpn_loss, token_loss
from minivlm.python_ref.pipeline import BACKGROUND, MiniVLM, Pipeline, Vocabularies
from minivlm.python_ref.postprocess import select_proposals
from minivlm.python_ref.preprocess import preprocess
from minivlm.python_ref.rpn import BoxCoder
from minivlm.python_ref.scenes import ANSWERS, CLASSES, COLOURS, Scene, generate_scene
from minivlm.python_ref.tee import TEE
from minivlm.python_ref.tokenizer import Tokenizer

log = logging.getLogger(__name__)

STAGES = ("detector", "regions", "pretrain", "finetune")
DEMO_VOCABULARIES = Vocabularies(classes=(BACKGROUND, *CLASSES), attributes=COLOURS, answers=ANSWERS)


@dataclass(frozen=True)
class TrainSettings:
    """Everything that determines a training run; the same settings and seed reproduce the same weights."""

    preset: str = "minivlm-demo"
    seed: int = 1  # scene stream of the training data (evaluation uses other seeds)
    detector_steps: int = 900
    detector_batch: int = 8
    detector_lr: float = 2e-3
    rpn_samples: int = 128  # anchors sampled per image
    roi_samples: int = 32  # proposals sampled per image
    region_scenes: int = 2500  # scenes whose regions feed the fusion stages
    pretrain_steps: int = 300
    finetune_steps: int = 1500
    fusion_batch: int = 32  # scenes per step: pre-training, captions
    vqa_batch: int = 96  # questions per fine-tuning step (short sequences: cheap, and the slowest task to learn)
    match_batch: int = 16  # scenes per fine-tuning step for the match loss (a 2-way task: few examples suffice)
    fusion_lr: float = 1e-3
    mask_probability: float = 0.15  # pre-training masked tokens (OSCAR)
    label_smoothing: float = 0.1
    weight_decay: float = 0.01
    warmup_fraction: float = 0.05
    checkpoint_every: int = 200
    scale: float = 1.0  # the product of the `scaled` factors applied (recorded: a run folder names it)

    def __post_init__(self) -> None:
        counts = ("detector_steps", "detector_batch", "rpn_samples", "roi_samples", "region_scenes", "pretrain_steps",
                  "finetune_steps", "fusion_batch", "vqa_batch", "match_batch", "checkpoint_every")
        # (field, valid, what is expected): checked here so that a bad value fails before a folder is touched
        rules = [(k, lambda v: _is_int(v) and v >= 1, "an integer >= 1") for k in counts] + [
            ("preset", lambda v: isinstance(v, str), "a preset name"),
            ("seed", lambda v: _is_int(v) and 0 <= v < 2**63, "an integer in [0, 2**63)"),
            *((k, lambda v: _is_real(v) and v > 0, "a finite number > 0") for k in ("detector_lr", "fusion_lr", "scale")),
            ("weight_decay", lambda v: _is_real(v) and v >= 0, "a finite number >= 0"),
            ("mask_probability", lambda v: _is_real(v) and 0 < v < 1, "a probability in (0, 1)"),
            ("label_smoothing", lambda v: _is_real(v) and 0 <= v < 1, "a number in [0, 1)"),
            ("warmup_fraction", lambda v: _is_real(v) and 0 <= v <= 1, "a fraction in [0, 1]"),
        ]
        for name, valid, expected in rules:
            if not valid(getattr(self, name)):
                raise ConfigError(f"training setting {name} is {getattr(self, name)!r}, expected {expected}")

    def scaled(self, factor: float) -> "TrainSettings":
        """The same recipe with every step/scene count multiplied by `factor` (smoke runs, longer runs).

        Counts never drop below 2, so a tiny factor gives a run of 2 steps per stage and 2 region scenes
        (not 0, which would have no checkpoint to continue from)."""
        counts = ("detector_steps", "region_scenes", "pretrain_steps", "finetune_steps")
        if not _is_real(factor) or factor <= 0:
            raise ConfigError(f"scale is {factor!r}, expected a finite factor > 0 (e.g. 0.01 for a smoke run)")
        values = {k: getattr(self, k) * factor for k in counts}
        if not all(math.isfinite(v) and math.isfinite(self.scale * factor) for v in values.values()):
            raise ConfigError(f"scale {factor!r} makes the step counts overflow")
        return dataclasses.replace(self, **{k: max(2, int(v)) for k, v in values.items()}, scale=self.scale * factor)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


# --------------------------------------------------------------------------------------------------------------
# Distributed helpers: identity on one process.


def world() -> tuple[int, int]:
    """(rank, world size); initialises gloo once when launched by torchrun."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group("gloo")
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _wrap(module: nn.Module) -> nn.Module:
    return DistributedDataParallel(module, find_unused_parameters=True) if dist.is_initialized() else module


def _barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


# --------------------------------------------------------------------------------------------------------------
# Data


def _scene_batch(seed: int, step: int, batch: int, rank: int, world_size: int) -> list[Scene]:
    """The scenes of one step: disjoint across ranks and steps, independent of how the run was resumed."""
    first = (step * world_size + rank) * batch
    return [generate_scene(seed, first + i) for i in range(batch)]


def _detector_inputs(scenes: list[Scene], cfg: MiniVLMConfig) -> tuple[torch.Tensor, list, list, list]:
    tee = cfg.tee
    images, boxes, labels, attributes = [], [], [], []
    for scene in scenes:
        pixels, box = preprocess(scene.image, tee.image_size, tee.pixel_mean, tee.pixel_std)
        images.append(pixels)
        boxes.append(torch.from_numpy(np.array(scene.boxes, dtype=np.float32)) * box.scale)
        labels.append(torch.tensor([CLASSES.index(lab) + 1 for lab in scene.labels]))
        attributes.append(torch.tensor([COLOURS.index(lab.split()[0]) for lab in scene.labels]))
    return torch.cat(images), boxes, labels, attributes


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


@dataclass
class RegionCache:
    """Pre-extracted fusion inputs of a pool of scenes (tensors stacked over scenes)."""

    regions: torch.Tensor  # (N, R, region_dim)
    region_mask: torch.Tensor  # (N, R)
    tag_ids: torch.Tensor  # (N, Tb) tags segment [+ SEP], padded
    tag_types: torch.Tensor  # (N, Tb)
    tag_mask: torch.Tensor  # (N, Tb)
    caption_ids: torch.Tensor  # (N, Ta) [CLS] caption [SEP], padded
    caption_mask: torch.Tensor  # (N, Ta)
    question_ids: torch.Tensor  # (Q, Ta)
    question_mask: torch.Tensor  # (Q, Ta)
    question_scene: torch.Tensor  # (Q,) the scene each question is about
    answers: torch.Tensor  # (Q,) answer index

    def save(self, path: Path) -> None:
        from safetensors.torch import save_file

        with atomic_path(path) as tmp:
            save_file({k: v.contiguous() for k, v in dataclasses.asdict(self).items()}, str(tmp))

    @classmethod
    def load(cls, path: Path) -> "RegionCache":
        from safetensors.torch import load_file

        return cls(**load_file(str(path)))


@torch.no_grad()
def build_region_cache(pipe: Pipeline, seed: int, first: int, count: int, progress: Callable) -> RegionCache:
    """Run the reference TEE on scenes [first, first + count) of stream `seed` and pack their fusion inputs."""
    cfg = pipe.cfg.fusion
    rows: dict[str, list] = {k.name: [] for k in dataclasses.fields(RegionCache)}
    for index in progress(range(first, first + count), desc="regions"):
        scene = generate_scene(seed, index)
        found = pipe.regions(scene.image)
        packed = pipe.pack(found, scene.caption)
        text, tags = slice(0, cfg.max_text_len), slice(cfg.max_text_len, None)
        rows["regions"].append(packed.regions[0])
        rows["region_mask"].append(packed.region_mask[0])
        rows["tag_ids"].append(packed.input_ids[0, tags])
        rows["tag_types"].append(packed.token_type_ids[0, tags])
        rows["tag_mask"].append(packed.token_mask[0, tags])
        rows["caption_ids"].append(packed.input_ids[0, text])
        rows["caption_mask"].append(packed.token_mask[0, text])
        for question, answer in scene.qa:
            q = pack_inputs(pipe.tokenizer, question, [], torch.zeros(0, cfg.region_dim), cfg)
            rows["question_ids"].append(q.input_ids[0, text])
            rows["question_mask"].append(q.token_mask[0, text])
            rows["question_scene"].append(torch.tensor(index - first))
            rows["answers"].append(torch.tensor(ANSWERS.index(answer)))
    return RegionCache(**{k: torch.stack(v) for k, v in rows.items()})


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


def _trimmed(ids: torch.Tensor, mask: torch.Tensor, *more: torch.Tensor) -> tuple[torch.Tensor, ...]:
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
    Text and tags may come without their trailing padding (see `_trimmed`).
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
        text = _trimmed(cache.caption_ids[scenes], cache.caption_mask[scenes])
        tags = _trimmed(cache.tag_ids[tag_rows], cache.tag_mask[tag_rows], cache.tag_types[tag_rows])
        regions = _trimmed(cache.regions[scenes], cache.region_mask[scenes])
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
        true_tags = _trimmed(cache.tag_ids[scenes], cache.tag_mask[scenes], cache.tag_types[scenes])
        hidden = caption_query_states(self.fusion, self.tokenizer.mask_id, *text, true_tags[0], true_tags[2],
                                      true_tags[1], *regions)
        caption_ids, caption_mask = text
        labels = torch.where(caption_mask[:, 1:] > 0, caption_ids[:, 1:], torch.full_like(caption_ids[:, 1:], IGNORE))
        losses["caption"] = self._mlm(hidden, labels, s.label_smoothing)  # label-smoothed as OSCAR
        q = torch.randint(0, cache.question_ids.shape[0], (s.vqa_batch,), generator=generator)
        qs = cache.question_scene[q]
        q_tags = _trimmed(cache.tag_ids[qs], cache.tag_mask[qs], cache.tag_types[qs])
        hidden = full_attention_states(self.fusion, *_trimmed(cache.question_ids[q], cache.question_mask[q]),
                                       q_tags[0], q_tags[2], q_tags[1], *_trimmed(cache.regions[qs], cache.region_mask[qs]))
        losses["vqa"] = F.cross_entropy(self.fusion.vqa_logits(hidden), cache.answers[q])
        m = slice(0, s.match_batch)  # the first scenes of the batch, half of them with polluted tags
        text, tags, regions = (_trimmed(*(t[m] for t in part)) for part in (text, tags, regions))
        hidden = full_attention_states(self.fusion, *text, tags[0], tags[2], tags[1], *regions)
        losses["match"] = F.cross_entropy(self.fusion.match_logits(hidden), matched[m])
        return losses

    def _mlm(self, hidden: torch.Tensor, labels: torch.Tensor, smoothing: float) -> torch.Tensor:
        picked = labels != IGNORE  # the vocabulary projection only where there is a label: (M, V), not (B, T, V)
        return token_loss(self.fusion.mlm_logits(hidden[:, : labels.shape[1]][picked]), labels[picked], smoothing)


# --------------------------------------------------------------------------------------------------------------
# The loop


def _schedule(step: int, total: int, warmup_fraction: float) -> float:
    """Linear warm-up then cosine decay to 5 %."""
    warmup = max(1, int(total * warmup_fraction))
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return float(0.05 + 0.95 * 0.5 * (1 + np.cos(np.pi * progress)))


def _step_seed(seed: int, stage: str, step: int, rank: int) -> int:
    """A seed for one (stage, step, rank), stable across processes (unlike `hash`, which is salted)."""
    return int(np.random.SeedSequence([seed, STAGES.index(stage), step, rank]).generate_state(1, np.uint64)[0] >> 1)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _no_progress(iterable, **_):
    return iterable


def _progress_bar(enabled: bool):
    if not enabled:
        return _no_progress
    from tqdm import tqdm

    return lambda iterable, **kw: tqdm(iterable, dynamic_ncols=True, mininterval=2.0, **kw)


def _run_stage(
    name: str, objective: nn.Module, params: list[nn.Parameter], steps: int, lr: float, settings: TrainSettings,
    workdir: Path, model: MiniVLM, batch_fn: Callable[[int, torch.Generator], dict], progress: Callable,
) -> None:
    rank, _ = world()
    ckpt = workdir / f"checkpoint-{name}"
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=settings.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: _schedule(s, steps, settings.warmup_fraction))
    start = 0
    if ckpt.exists():
        state = load_checkpoint(ckpt, model, optimizer)
        start = state["step"]
        for group in optimizer.param_groups:  # the schedule's value at `start`, as the uninterrupted run had it
            group["lr"] = group["initial_lr"] * _schedule(start, steps, settings.warmup_fraction)
        scheduler.last_epoch = start
        log.info("resuming %s at step %d", name, start)
    wrapped = _wrap(objective)
    wrapped.train()
    bar = progress(range(start, steps), desc=name, initial=start, total=steps) if progress is not _no_progress else range(start, steps)
    for step in bar:
        # Seeded per (stage, step, rank): a resumed run draws exactly what the uninterrupted run would have.
        step_seed = _step_seed(settings.seed, name, step, rank)
        generator = torch.Generator().manual_seed(step_seed)
        torch.manual_seed(step_seed)  # dropout draws from the global generator
        losses = wrapped(**batch_fn(step, generator))
        loss = sum(losses.values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 5.0)
        optimizer.step()
        scheduler.step()
        if hasattr(bar, "set_postfix"):
            bar.set_postfix({k: f"{v.item():.3f}" for k, v in losses.items()}, refresh=False)
        done = step + 1
        if rank == 0 and (done % settings.checkpoint_every == 0 or done == steps):
            save_checkpoint(ckpt, model, optimizer, {"stage": name, "step": done, "settings": dataclasses.asdict(settings)})
        _barrier()
    objective.eval()


def model_metadata(cfg: MiniVLMConfig, vocab: Vocabularies, settings: TrainSettings | None) -> dict[str, str]:
    """What a weights file says about itself: preset, vocabularies, and the recipe that made it."""
    meta = {"preset": cfg.name, "vocabularies": json.dumps(dataclasses.asdict(vocab))}
    if settings is not None:
        meta["training"] = json.dumps(dataclasses.asdict(settings))
    return meta


RUN_FILE = "run.json"  # a run folder's settings, written when the folder is created


def _recorded_settings(workdir: Path) -> dict | None:
    """The settings a run folder was made with; None for a new or empty folder. InputError for a path that is
    not a folder, or a non-empty folder that holds no run (training never writes into a folder it did not make)."""
    if not workdir.exists():
        return None
    if not workdir.is_dir():
        raise InputError(f"{workdir} is a file, not a folder: train into a new or empty folder, or a run folder to resume")
    legacy = sorted(workdir.glob("checkpoint-*/state.json"))  # runs made before the run file existed
    record = workdir / RUN_FILE if (workdir / RUN_FILE).is_file() else legacy[0] if legacy else None
    if record is not None:
        try:
            settings = json.loads(record.read_text())["settings"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise InputError(f"{record} is not a readable run record ({type(e).__name__}: {e})") from None
        if not isinstance(settings, dict):
            raise InputError(f"{record} is not a readable run record (its settings are not a JSON object)")
        return settings
    if next(workdir.iterdir(), None) is None:
        return None
    raise InputError(f"{workdir} is not empty and holds no training run (no {RUN_FILE}): train into a new or empty folder")


def _open_run_folder(workdir: Path, settings: TrainSettings, rank: int) -> None:
    """Check that `workdir` is new, empty, or a run with exactly `settings` (a resume); create it and record the
    settings (rank 0). ConfigError naming every differing setting; InputError if the folder cannot be made."""
    wanted = dataclasses.asdict(settings)
    recorded = _recorded_settings(workdir)  # every rank checks, before any rank writes
    if recorded is not None:
        differ = [f"{k} {recorded[k]!r} (this run: {wanted[k]!r})" for k in wanted if k in recorded and recorded[k] != wanted[k]]
        differ += [f"{k} {recorded[k]!r} (not a setting of this version)" for k in recorded if k not in wanted]
        if differ:
            raise ConfigError(f"{workdir} holds a run made with other settings: {'; '.join(differ)}. Resume with the "
                              f"same settings, or start afresh in another folder (--out)")
    _barrier()
    if rank == 0 and not (workdir / RUN_FILE).is_file():
        _make_run_folder(workdir, wanted)
    _barrier()


def _make_run_folder(workdir: Path, settings: dict) -> None:
    """`workdir` (and missing parents) with its `run.json`, written atomically; on failure, nothing made stays."""
    missing = [p for p in (workdir, *workdir.parents) if not p.exists()]  # inner to outer
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        with atomic_file(workdir / RUN_FILE, "w", encoding="utf-8") as f:
            f.write(json.dumps({"settings": settings}, indent=2))
    except OSError as e:
        if missing:
            shutil.rmtree(missing[-1], ignore_errors=True)  # the outermost folder this call made, nothing else
        raise InputError(f"cannot make the run folder {workdir}: {e.strerror or e}") from None


def train(settings: TrainSettings, workdir: str | Path, *, progress: bool = True) -> Path:
    """Run (or resume) every stage in `workdir`; returns the path of the final `model.safetensors`.

    `workdir` must be new, empty, or a folder this function made with the same settings (then the run
    resumes from its checkpoints); it records the settings in `run.json` when it makes it.
    Rank 0 writes the final weights; other ranks return the same path once it exists.
    """
    cfg = get_config(settings.preset)
    if cfg.tee.roi_head.num_classes != len(DEMO_VOCABULARIES.classes):
        raise ConfigError(f"preset {settings.preset!r} predicts {cfg.tee.roi_head.num_classes} classes; the scenes have "
                          f"{len(DEMO_VOCABULARIES.classes)} (with background)")
    workdir = Path(workdir)
    rank, world_size = world()
    _open_run_folder(workdir, settings, rank)
    _seed_everything(settings.seed)
    model = MiniVLM(cfg)
    tokenizer = Tokenizer.default()
    bar = _progress_bar(progress and rank == 0)
    started = time.monotonic()
    stage_seconds: dict[str, float] = {}  # wall time of each stage in this invocation (a resumed stage: its rest)
    resumed = any(workdir.glob("checkpoint-*")) or (workdir / "regions.safetensors").exists()

    def timed(stage: str, run: Callable[[], None]) -> None:
        begin = time.monotonic()
        run()
        stage_seconds[stage] = round(time.monotonic() - begin, 1)

    detector = DetectorObjective(model.tee, settings)

    def detector_batch(step: int, generator: torch.Generator) -> dict:
        images, boxes, labels, attributes = _detector_inputs(
            _scene_batch(settings.seed, step, settings.detector_batch, rank, world_size), cfg
        )
        return {"images": images, "gt_boxes": boxes, "gt_labels": labels, "gt_attributes": attributes, "generator": generator}

    timed("detector", lambda: _run_stage("detector", detector, list(model.tee.parameters()), settings.detector_steps,
                                         settings.detector_lr, settings, workdir, model, detector_batch, bar))
    _load_latest(workdir, "detector", model)

    cache_path = workdir / "regions.safetensors"

    def extract_regions() -> None:
        if rank == 0 and not cache_path.exists():
            pipe = Pipeline.from_model(model, tokenizer, DEMO_VOCABULARIES)
            # Scenes after every index the detector stage could have drawn: fusion sees fresh images.
            first = settings.detector_steps * settings.detector_batch * world_size
            build_region_cache(pipe, settings.seed, first, settings.region_scenes, bar).save(cache_path)
        _barrier()

    timed("regions", extract_regions)
    cache = RegionCache.load(cache_path)

    fusion_objective = FusionObjective(model.fusion, tokenizer, settings)
    for stage, steps in (("pretrain", settings.pretrain_steps), ("finetune", settings.finetune_steps)):
        timed(stage, lambda stage=stage, steps=steps: _run_stage(
            stage, fusion_objective, list(model.fusion.parameters()), steps, settings.fusion_lr, settings, workdir, model,
            lambda step, gen: {"cache": cache, "stage": stage, "generator": gen}, bar))
        _load_latest(workdir, stage, model)

    final = workdir / "model.safetensors"
    if rank == 0:
        seconds = time.monotonic() - started  # of this invocation: a resumed run counts only its own part
        meta = {**model_metadata(cfg, DEMO_VOCABULARIES, settings), "training_seconds": f"{seconds:.0f}",
                "stage_seconds": json.dumps(stage_seconds), "resumed": json.dumps(resumed)}
        save_weights(model.eval(), final, meta)
        log.info("trained in %.0f s", seconds)
    _barrier()
    return final


def _load_latest(workdir: Path, stage: str, model: MiniVLM) -> None:
    """Every rank continues from the stage's final checkpoint (what rank 0 saved)."""
    _barrier()
    load_checkpoint(workdir / f"checkpoint-{stage}", model, None)
