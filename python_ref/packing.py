"""Host-side packing for the fusion graphs: `[CLS] text [SEP] | tags [SEP] | regions` into fixed-size tensors.

The sequence layout is OSCAR's (see `fusion.py`); every input check lives here, outside the graphs. The C++
core's `pack.cpp` (`mvlm_pack_inputs`) is a port of `pack_inputs` and is tested against it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch

from .config import FusionConfig
from .errors import ConfigError, InputError
from .tokenizer import Tokenizer


@dataclass(frozen=True)
class FusionInputs:
    """One packed example, batch 1, fixed sizes: Tt = max_text_tags_len, R = max_regions."""

    input_ids: torch.Tensor  # (1, Tt) int64: [CLS] text [SEP] pad… | tags [SEP] pad…
    token_type_ids: torch.Tensor  # (1, Tt) int64: 0 for segment A and padding, 1 for tags and their [SEP]
    token_mask: torch.Tensor  # (1, Tt) f32 0/1
    regions: torch.Tensor  # (1, R, region_dim) f32, zero rows past the real regions
    region_mask: torch.Tensor  # (1, R) f32 0/1

    def as_tuple(self) -> tuple[torch.Tensor, ...]:
        """The five tensors in the order of the classifier graphs' inputs (`FUSION_INPUT_NAMES`)."""
        return self.input_ids, self.token_type_ids, self.token_mask, self.regions, self.region_mask

    def caption_prefix(self, max_text_len: int) -> tuple[torch.Tensor, ...]:
        """The tags+regions part, in the order of `CaptionPrefixGraph` inputs."""
        tags = slice(max_text_len, None)
        return (
            self.input_ids[:, tags],
            self.token_type_ids[:, tags],
            self.token_mask[:, tags],
            self.regions,
            self.region_mask,
        )


def _text_ids(tokenizer: Tokenizer, text: str | list[int], cfg: FusionConfig) -> list[int]:
    if isinstance(text, str):
        return tokenizer.encode(text)
    if not isinstance(text, (list, tuple)) or not all(isinstance(i, (int, np.integer)) for i in text):
        raise InputError(f"text must be a str or a list of token ids, got {type(text).__name__}")
    bad = [int(i) for i in text if not 0 <= i < cfg.vocab_size]
    if bad:
        raise InputError(f"token id {bad[0]} is outside the vocabulary [0, {cfg.vocab_size})")
    return [int(i) for i in text]


def _tag_ids(tokenizer: Tokenizer, tags: list[str], budget: int) -> list[int]:
    """Whole tags, in the given (confidence) order, while they fit in `budget` tokens: a half tag ("red" of
    "red circle") would state something the detector did not say."""
    if not isinstance(tags, (list, tuple)) or not all(isinstance(t, str) for t in tags):
        raise InputError("tags must be a list of str")
    ids: list[int] = []
    for tag in tags:
        tag_ids = tokenizer.encode(tag)
        if len(ids) + len(tag_ids) > budget:
            break
        ids += tag_ids
    return ids


def _region_tensor(regions: torch.Tensor | np.ndarray, cfg: FusionConfig) -> torch.Tensor:
    if not isinstance(regions, (torch.Tensor, np.ndarray)):
        raise InputError(f"regions must be a tensor or array, got {type(regions).__name__}")
    r = torch.as_tensor(regions)
    if r.dim() != 2 or r.shape[1] != cfg.region_dim:
        raise InputError(f"regions have shape {tuple(r.shape)}, the model needs (K, {cfg.region_dim})")
    if r.shape[0] > cfg.max_regions:
        raise InputError(f"got {r.shape[0]} regions, the model takes at most {cfg.max_regions}")
    if not r.is_floating_point() or not bool(torch.isfinite(r).all()):
        raise InputError(f"regions must be finite floats, got dtype {r.dtype}")
    return r.to(torch.float32)


def pack_inputs(
    tokenizer: Tokenizer,
    text: str | list[int],
    tags: list[str],
    regions: torch.Tensor | np.ndarray,
    cfg: FusionConfig,
    *,
    require_text: bool = True,
) -> FusionInputs:
    """Pack `[CLS] text [SEP] | tags [SEP] | regions` into fixed-size tensors.

    `text` is a string or token ids without specials; `tags` are detector labels in confidence order, kept
    whole while they fit in `max_tags_len - 1` tokens; `regions` is (K, region_dim), K <= max_regions.
    Captioning passes `text=""` with `require_text=False` (the decoder fills the text segment).
    Raises InputError on empty or too long text, ids outside the vocabulary, or wrong regions.
    """
    text_ids = _text_ids(tokenizer, text, cfg)
    if require_text and not text_ids:
        raise InputError(f"text {text!r} has no tokens; a question or caption is required")
    if len(text_ids) > cfg.max_text_len - 2:
        raise InputError(
            f"text is {len(text_ids)} tokens, the model takes at most {cfg.max_text_len - 2} "
            f"(max_text_len {cfg.max_text_len} minus [CLS] and [SEP])"
        )
    seg_a = [tokenizer.cls_id, *text_ids, tokenizer.sep_id]
    seg_b = [*_tag_ids(tokenizer, tags, cfg.max_tags_len - 1), tokenizer.sep_id]
    special_max = max(tokenizer.cls_id, tokenizer.sep_id, tokenizer.pad_id)
    if special_max >= cfg.vocab_size or tokenizer.vocab_size > cfg.vocab_size:
        raise ConfigError(f"tokenizer has {tokenizer.vocab_size} tokens, the model only {cfg.vocab_size}")
    pad_a, pad_b = cfg.max_text_len - len(seg_a), cfg.max_tags_len - len(seg_b)
    ids = seg_a + [tokenizer.pad_id] * pad_a + seg_b + [tokenizer.pad_id] * pad_b
    types = [0] * cfg.max_text_len + [1] * len(seg_b) + [0] * pad_b
    mask = [1.0] * len(seg_a) + [0.0] * pad_a + [1.0] * len(seg_b) + [0.0] * pad_b
    r = _region_tensor(regions, cfg)
    padded = torch.zeros(1, cfg.max_regions, cfg.region_dim)
    padded[0, : r.shape[0]] = r
    region_mask = (torch.arange(cfg.max_regions) < r.shape[0]).float().unsqueeze(0)
    return FusionInputs(
        input_ids=torch.tensor([ids], dtype=torch.int64),
        token_type_ids=torch.tensor([types], dtype=torch.int64),
        token_mask=torch.tensor([mask], dtype=torch.float32),
        regions=padded,
        region_mask=region_mask,
    )


# The classifier graphs' input names: the fields of FusionInputs, in order.
FUSION_INPUT_NAMES = tuple(f.name for f in dataclasses.fields(FusionInputs))

__all__ = ["FUSION_INPUT_NAMES", "FusionInputs", "pack_inputs"]
