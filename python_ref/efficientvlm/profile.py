"""Parameters and FLOPs of an EfficientVLM per architectural part: the budget that distillation and pruning cut,
and what `minivlm info` prints for an EfficientVLM preset.

`profile_efficientvlm` runs the model as `python_ref/profile.py` runs MiniVLM, counting with the same
`count_params` / `count_flops` (`torch.utils.flop_counter`: 2 per multiply-add, matmuls and convolutions) and
giving the same `PartReport` rows. What runs, for one image-text pair: the image encoder on one image at the
config's size, the text encoder on one text of `max_text_len` tokens, the cross-modal layers over those text
states and every image token, then the heads — ITC (both projections and the similarity), ITM and the VQA
classifier on the fused [CLS], and MLM logits of one position (one caption step; the decoder is the word
embedding matrix). The model runs on the meta device by default: FLOPs depend on shapes only, so the
teacher is counted without allocating it (`device="cpu"` gives the same counts; a test holds them equal).

The VQA classifier has its own row: X-VLM and EfficientVLM answer generatively, so their parameter counts have
no such head (`heads.py`). Vocabulary-sized tensors (the word embeddings, which the MLM decoder reuses, and the
MLM bias) are counted once and reported apart, since a demo vocabulary of 41 tokens and BERT's 30522 make
them differ by three orders of magnitude.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import nn

from ..errors import ConfigError
from ..profile import MAX_IMAGE_SIZE, PartReport, count_flops, format_report
from .config import PRESETS, TEACHERS, EfficientVLMConfig, is_pruned, structure
from .model import EfficientVLM


def _count(*modules: nn.Module) -> int:
    return sum(p.numel() for m in modules for p in m.parameters())


def parameter_budget(model: EfficientVLM) -> dict[str, int]:
    """Parameters per part, in order: vision, text embeddings, text layers, cross layers, heads (ITC, ITM,
    MLM), VQA head, total. The MLM decoder is the word embedding matrix, counted once (text embeddings)."""
    heads = model.heads
    budget = {
        "vision": _count(model.vision),
        "text embeddings": _count(model.text.embeddings),
        "text layers": _count(model.text.layers),
        "cross layers": _count(model.cross),
        "heads (ITC, ITM, MLM)": _count(heads.itc, heads.itm_head, heads.mlm_head),
        "VQA head": _count(heads.vqa_head),
    }
    budget["total"] = sum(budget.values())
    assert budget["total"] == _count(model), "every parameter belongs to exactly one part"
    return budget


def format_budget(budget: dict[str, int]) -> str:
    """A fixed-width table: part, parameters (M)."""
    return "\n".join([f"{'part':<24} {'params (M)':>10}", *(f"{k:<24} {v / 1e6:>10.3f}" for k, v in budget.items())])


@dataclass(frozen=True)
class EfficientVLMProfile:
    """`profile_efficientvlm`'s result: the config that ran, one row per part (the last is the total) and the
    parameters of the vocabulary-sized tensors (word embeddings and MLM bias)."""

    cfg: EfficientVLMConfig
    rows: tuple[PartReport, ...]
    vocabulary_params: int

    @property
    def total(self) -> PartReport:
        """The last row: the whole model."""
        return self.rows[-1]

    @property
    def params_without_vocabulary(self) -> int:
        """Parameters outside the vocabulary-sized tensors: what does not depend on the tokenizer."""
        return self.total.params - self.vocabulary_params


def config_at(preset: str | EfficientVLMConfig, image_size: int | None = None) -> EfficientVLMConfig:
    """The config of `preset` (a name of `PRESETS` or a config), at square side `image_size` if given.

    The position table has one row per image token, so another size needs another config, not only another
    input. ConfigError for an unknown name, or a size that is not a multiple of the patch size within
    [patch, `MAX_IMAGE_SIZE`] (the bound MiniVLM's profile keeps), naming the value and what is expected."""
    if isinstance(preset, str):
        if preset not in PRESETS:
            raise ConfigError(f"unknown EfficientVLM preset {preset!r}; known presets: {', '.join(sorted(PRESETS))}")
        preset = PRESETS[preset]()
    cfg = preset
    if image_size is None:
        return cfg
    p = cfg.vision.patch_size
    largest = MAX_IMAGE_SIZE - MAX_IMAGE_SIZE % p
    if isinstance(image_size, bool) or not isinstance(image_size, int) or not p <= image_size <= largest \
            or image_size % p:
        raise ConfigError(f"image size {image_size!r} is not one {cfg.name} can take: a multiple of its patch size "
                          f"{p} from {p} to {largest} ({cfg.name}'s own is {cfg.vision.image_size})")
    return replace(cfg, vision=replace(cfg.vision, image_size=image_size))


@torch.no_grad()
def profile_efficientvlm(
    preset: str | EfficientVLMConfig, image_size: int | None = None, device: str = "meta"
) -> EfficientVLMProfile:
    """Parameters and FLOPs per part (vision; text embeddings and layers; cross-modal layers; ITC/ITM/MLM
    heads; VQA head; total) of one image-text pair, on `device` (see the module docstring for what runs)."""
    cfg = config_at(preset, image_size)
    v, t = cfg.vision, cfg.text
    with torch.device(device):
        model = EfficientVLM(cfg).eval()
        images = torch.zeros(1, 3, v.image_size, v.image_size)
        ids = torch.zeros(1, t.max_text_len, dtype=torch.long)
        mask = torch.ones(1, t.max_text_len)
    image = model.encode_image(images)
    text = model.encode_text(ids, mask)
    fused = model.fuse(text, mask, image)
    embedding_flops = count_flops(lambda: model.text.embeddings(ids, torch.zeros_like(ids)))
    budget = parameter_budget(model)
    rows = [
        ("vision", f"ViT: {v.layers} layers, {v.num_tokens} tokens ({v.image_size}x{v.image_size}, "
                   f"{v.patch_size}-px patches)",
         budget["vision"], count_flops(lambda: model.encode_image(images))),
        ("text", f"embeddings (words {t.vocab_size}x{t.hidden_size}, positions, types)",
         budget["text embeddings"], embedding_flops),
        ("text", f"layers: {t.text_layers} ({t.max_text_len} tokens)",
         budget["text layers"], count_flops(lambda: model.encode_text(ids, mask)) - embedding_flops),
        ("cross-modal", f"layers: {t.cross_layers} ({t.max_text_len} text x {v.num_tokens} image tokens)",
         budget["cross layers"], count_flops(lambda: model.fuse(text, mask, image))),
        ("heads", "ITC, ITM, MLM (MLM logits of one position)", budget["heads (ITC, ITM, MLM)"],
         count_flops(lambda: (model.heads.contrast(image, text), model.heads.itm_logits(fused),
                              model.mlm_logits(fused[:, :1])))),
        ("heads", f"VQA classifier ({cfg.num_answers} answers; not in X-VLM)", budget["VQA head"],
         count_flops(lambda: model.heads.vqa_logits(fused))),
    ]
    reports = [PartReport(*row) for row in rows]
    reports.append(PartReport("efficientvlm", "total", budget["total"], sum(r.flops for r in reports)))
    vocabulary = model.text.embeddings.word_embeddings.weight.numel() + model.heads.mlm_head.bias.numel()
    return EfficientVLMProfile(cfg, tuple(reports), vocabulary)


def structure_lines(cfg: EfficientVLMConfig) -> list[str]:
    """The heads and neurons each layer keeps, one line per modality (vision, text, cross-modal)."""
    s = structure(cfg)
    show = lambda counts: " ".join(map(str, counts))  # noqa: E731
    text_layers = cfg.text.text_layers
    return [
        f"vision  heads {show(s['vision']['heads'])} (of {cfg.vision.heads}); "
        f"MLP {show(s['vision']['mlp'])} (of {cfg.vision.width * cfg.vision.mlp_ratio})",
        f"text    heads {show(s['text']['self_heads'][:text_layers])} (of {cfg.text.heads}); "
        f"FFN {show(s['text']['ffn'][:text_layers])} (of {cfg.text.intermediate_size})",
        f"cross   self-attention heads {show(s['text']['self_heads'][text_layers:])}, cross-attention heads "
        f"{show(s['text']['cross_heads'])}; FFN {show(s['text']['ffn'][text_layers:])}",
    ]


def info_report(preset: str | EfficientVLMConfig, image_size: int | None = None) -> str:
    """What `minivlm info` prints for an EfficientVLM preset or config: the table of `profile_efficientvlm`, the
    parameters without vocabulary-sized tensors, for a structurally pruned config the widths of every layer
    and its parameters against its preset's, and for a student (`TEACHERS`) its ratios to its teacher
    profiled at the same image size."""
    profile = profile_efficientvlm(preset, image_size)
    lines = [format_report(list(profile.rows)),
             f"parameters without vocabulary-sized tensors (word embeddings = MLM decoder, MLM bias): "
             f"{profile.params_without_vocabulary / 1e6:.3f} M"]
    if is_pruned(profile.cfg):
        unpruned = profile_efficientvlm(profile.cfg.name, image_size)
        lines += [f"structurally pruned {profile.cfg.name}: parameters {profile.total.params / 1e6:.3f} M of the "
                  f"preset's {unpruned.total.params / 1e6:.3f} M, FLOPs {profile.total.flops / unpruned.total.flops:.3f}"
                  f" of its; per layer:", *structure_lines(profile.cfg)]
    if profile.cfg.name in TEACHERS:
        teacher = profile_efficientvlm(TEACHERS[profile.cfg.name], image_size)
        lines.append(f"{profile.cfg.name} / {teacher.cfg.name}: parameters "
                     f"{profile.total.params / teacher.total.params:.3f} (without vocabulary-sized tensors "
                     f"{profile.params_without_vocabulary / teacher.params_without_vocabulary:.3f}), "
                     f"FLOPs {profile.total.flops / teacher.total.flops:.3f}")
    return "\n".join(lines)


__all__ = ["EfficientVLMProfile", "config_at", "format_budget", "info_report", "parameter_budget",
           "profile_efficientvlm", "structure_lines"]
