"""Parameters and FLOPs per architectural part, counted by running the model (`minivlm info`).

FLOPs are what `torch.utils.flop_counter` counts (2 per multiply-add, convolutions and matmuls only) on one
image at the preset's input size, `post_nms_top_n` proposals through the box head, and a fusion sequence
of `max_text_tags_len` tokens + `max_regions` regions. The RoIAlign row counts our separable-matmul form,
which spends more FLOPs than a gather-based RoIAlign would in exchange for running on every phone backend.
EfficientVLM presets are profiled by `efficientvlm/profile.py`, with the same rows and counters.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .config import MiniVLMConfig, get_config, is_pruned, replace, structure
from .errors import ConfigError
from .fusion import AttentionKind
from .pipeline import MiniVLM

# The profile runs the model once at the requested size; activations grow with its square (the paper preset
# takes ~1 GB at 1024, so ~4 GB at 2048). Larger sides are refused rather than exhausting memory.
MAX_IMAGE_SIZE = 2048


@dataclass(frozen=True)
class PartReport:
    """One row of a profile: the network (or whole model) it belongs to, the part, its parameters and FLOPs."""

    model: str
    part: str
    params: int
    flops: int


def count_params(*modules: nn.Module | nn.Parameter) -> int:
    """Parameters of `modules` (modules or single parameters), each counted as often as it is passed."""
    total = 0
    for m in modules:
        total += m.numel() if isinstance(m, nn.Parameter) else sum(p.numel() for p in m.parameters())
    return total


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs that `torch.utils.flop_counter` counts while `fn()` runs (2 per multiply-add; matmuls and
    convolutions only, so shapes alone decide them: meta tensors count the same as real ones)."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


@torch.no_grad()
def profile_model(preset: str | MiniVLMConfig, image_size: int | None = None) -> list[PartReport]:
    """One row per part (TEE: backbone, BiFPN, RPN head, RoIAlign, box head, predictors, attribute head;
    fusion: word embeddings, other embeddings, encoder, heads), then a total per network and overall."""
    cfg = get_config(preset) if isinstance(preset, str) else preset
    if image_size is not None:
        stride = 2 ** cfg.tee.bifpn.max_level
        largest = MAX_IMAGE_SIZE - MAX_IMAGE_SIZE % stride
        if isinstance(image_size, bool) or not isinstance(image_size, int) or not stride <= image_size <= largest \
                or image_size % stride:
            raise ConfigError(f"image size {image_size!r} is not one {cfg.name} can take: a multiple of its coarsest "
                              f"stride {stride} from {stride} to {largest} ({cfg.name}'s own is {cfg.tee.image_size})")
        cfg = replace(cfg, tee=replace(cfg.tee, image_size=image_size))
    model = MiniVLM(cfg).eval()
    tee, fusion = model.tee, model.fusion
    s, r = cfg.tee.image_size, cfg.tee.rpn.post_nms_top_n
    images = torch.randn(1, 3, s, s)
    backbone_out = tee.backbone(images)
    levels = tee.bifpn(backbone_out)
    pooled_levels = tuple(levels[lv - cfg.tee.bifpn.min_level] for lv in cfg.tee.roi_head.pooler_levels)
    xy = torch.rand(1, r, 2) * s * 0.7
    boxes = torch.cat([xy, xy + 16 + torch.rand(1, r, 2) * s * 0.3], dim=2)
    pooled = tee.pooler(pooled_levels, boxes)
    head = tee.box_head
    region = torch.relu(head.fc7(torch.relu(head.fc6(pooled.flatten(1)))))
    one_hot = torch.zeros(r, cfg.tee.roi_head.num_classes)
    one_hot[:, 1] = 1

    f = cfg.fusion
    ids = torch.randint(0, f.vocab_size, (1, f.max_text_tags_len))
    types = torch.zeros_like(ids)
    token_mask = torch.ones(1, f.max_text_tags_len)
    regions = torch.randn(1, f.max_regions, f.region_dim)
    region_mask = torch.ones(1, f.max_regions)
    hidden = fusion.encode(ids, types, token_mask, regions, region_mask, AttentionKind.FULL)
    emb = fusion.encoder.embeddings
    word = emb.word_embeddings.weight
    encoder_params = count_params(fusion.encoder) - word.numel()

    rows = [
        ("tee", "backbone (EfficientNet)", count_params(tee.backbone), count_flops(lambda: tee.backbone(images))),
        ("tee", "BiFPN", count_params(tee.bifpn), count_flops(lambda: tee.bifpn(backbone_out))),
        ("tee", "RPN head", count_params(tee.rpn), count_flops(lambda: tee.rpn(levels))),
        ("tee", f"RoIAlign ({r} boxes)", count_params(tee.pooler), count_flops(lambda: tee.pooler(pooled_levels, boxes))),
        ("tee", "box head fc6+fc7", count_params(head.fc6, head.fc7),
         count_flops(lambda: head.fc7(torch.relu(head.fc6(pooled.flatten(1)))))),
        ("tee", "predictors (cls, box)", count_params(head.cls_score, head.bbox_pred),
         count_flops(lambda: (head.cls_score(region), head.bbox_pred(region)))),
        ("tee", "attribute head", count_params(head.cls_embedding, head.fc_attr, head.attr_score),
         count_flops(lambda: head.attributes(region, one_hot))),
        ("fusion", "word embeddings", word.numel(), 0),
        ("fusion", f"encoder ({f.num_layers} layers, {f.max_text_tags_len}+{f.max_regions} tokens)", encoder_params,
         count_flops(lambda: fusion.encode(ids, types, token_mask, regions, region_mask, AttentionKind.FULL))),
        ("fusion", "heads (pooler, VQA, match, MLM transform)",
         count_params(fusion.pooler, fusion.vqa_head, fusion.match_head, fusion.mlm_head),
         count_flops(lambda: (fusion.vqa_logits(hidden), fusion.match_logits(hidden), fusion.mlm_logits(hidden[:, :1])))),
    ]
    reports = [PartReport(*row) for row in rows]
    for net in ("tee", "fusion"):
        part = [x for x in reports if x.model == net]
        reports.append(PartReport(net, "total", sum(x.params for x in part), sum(x.flops for x in part)))
    totals = [x for x in reports if x.part == "total"]
    reports.append(PartReport("minivlm", "total", sum(x.params for x in totals), sum(x.flops for x in totals)))
    assert reports[-1].params == count_params(model), "every parameter belongs to exactly one row"
    return reports


def format_report(reports: list[PartReport]) -> str:
    """A fixed-width table: model, part, parameters (M), GFLOPs. The first two columns are 8 and 52 wide, or as
    wide as their longest entry."""
    m = max(8, *(len(x.model) for x in reports))
    p = max(52, *(len(x.part) for x in reports))
    lines = [f"{'model':<{m}} {'part':<{p}} {'params (M)':>10} {'GFLOPs':>8}"]
    for x in reports:
        lines.append(f"{x.model:<{m}} {x.part:<{p}} {x.params / 1e6:>10.3f} {x.flops / 1e9:>8.3f}")
    return "\n".join(lines)


def info_report(preset: str | MiniVLMConfig, image_size: int | None = None) -> str:
    """What `minivlm info` prints for a MiniVLM preset or config: the table of `profile_model` and, for a config
    whose fusion is structurally pruned, its parameters against its preset's and the widths of every layer."""
    reports = profile_model(preset, image_size=image_size)
    cfg = get_config(preset) if isinstance(preset, str) else preset
    if not is_pruned(cfg):
        return format_report(reports)
    full, f, s = profile_model(cfg.name, image_size=image_size)[-1], cfg.fusion, structure(cfg)["fusion"]
    show = lambda counts: " ".join(map(str, counts))  # noqa: E731
    return "\n".join([format_report(reports),
                      f"structurally pruned {cfg.name}: parameters {reports[-1].params / 1e6:.3f} M of the preset's "
                      f"{full.params / 1e6:.3f} M, FLOPs {reports[-1].flops / full.flops:.3f} of its; per layer:",
                      f"fusion  heads {show(s['heads'])} (of {f.num_heads}); FFN {show(s['ffn'])} (of {f.intermediate_size})"])
