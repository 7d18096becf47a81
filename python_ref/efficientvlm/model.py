"""The whole EfficientVLM (X-VLM layout): CLIP ViT + BERT text encoder + cross-modal layers + heads, and the
key map of a whole X-VLM / EfficientVLM checkpoint.

Mirrors zengyan-97/X-VLM `models/xvlm.py` (`XVLMBase`: `vision_encoder`, `text_encoder` split at
`fusion_layer`, `vision_proj`, `text_proj`, `temp`, `itm_head`; `get_vision_embeds`, `get_text_embeds`,
`get_cross_embeds`) and swaggy-TN/EfficientVLM `efficient_models/xvlm.py`. The attribute names (`vision`, `text`,
`cross`, `heads`) are the targets of `xvlm_key_map`. Each method is one step a pipeline runs; the parts
themselves are `vit.py`, `text.py`, `cross_modal.py` and `heads.py`.
"""

from __future__ import annotations

import torch
from torch import nn

from ..key_maps import KeyMap, KeyRule
from .bert_key_maps import xvlm_text_key_map
from .config import EfficientVLMConfig
from .cross_modal import CrossModalEncoder
from .heads import Heads
from .text import TextEncoder
from .vit import VisionTransformer
from .vit_weights import XVLM_VIT_RULES

VISION_PREFIX = "vision_encoder."  # where X-VLM keeps its ViT (`models/xvlm.py`, `build_vision_encoder`)


class EfficientVLM(nn.Module):
    """vision (`VisionTransformer`), text (`TextEncoder`), cross (`CrossModalEncoder`), heads (`Heads`).

    The text side is BERT-initialised (`fusion.init_bert`, applied by each part's constructor, as `fusion.py`
    does for MiniVLM); the ViT keeps its own init (a real model loads CLIP or X-VLM weights)."""

    def __init__(self, cfg: EfficientVLMConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.vision = VisionTransformer(cfg.vision)
        self.text = TextEncoder(cfg.text)
        self.cross = CrossModalEncoder(cfg.text, cfg.vision.width)
        self.heads = Heads(cfg)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """Image tokens (B, N, Dv), class token first, of normalised images (B, 3, S, S)."""
        return self.vision(images)

    def encode_text(self, input_ids: torch.Tensor, token_mask: torch.Tensor) -> torch.Tensor:
        """Text states (B, T, H) of ids (B, T) under a 0/1 padding mask (B, T) (bidirectional)."""
        return self.text(input_ids, token_mask)

    def fuse(
        self, text: torch.Tensor, text_mask: torch.Tensor, image: torch.Tensor, image_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Fused states (B, T, H): the cross-modal layers over text states and image tokens; `image_mask`
        (B, N) defaults to every token valid (a whole image, X-VLM's `image_atts` of ones)."""
        return self.cross(text, text_mask, image, _all_valid(image, image_mask))

    def fuse_causal(
        self, text: torch.Tensor, text_mask: torch.Tensor, image: torch.Tensor, image_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """As `fuse`, with causal text self-attention (captioning; `text` from `self.text.forward_causal`)."""
        return self.cross.forward_causal(text, text_mask, image, _all_valid(image, image_mask))

    def itc_logits(
        self, images: torch.Tensor, input_ids: torch.Tensor, token_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(image->text, text->image) contrastive logits, each (B, B), of B images and B texts."""
        return self.heads.contrast(self.encode_image(images), self.encode_text(input_ids, token_mask))

    def itm_logits(self, images: torch.Tensor, input_ids: torch.Tensor, token_mask: torch.Tensor) -> torch.Tensor:
        """(B, 2) no-match / match logits of image i with text i."""
        return self.heads.itm_logits(self._fused(images, input_ids, token_mask))

    def vqa_logits(self, images: torch.Tensor, input_ids: torch.Tensor, token_mask: torch.Tensor) -> torch.Tensor:
        """(B, num_answers) answer logits of question i about image i."""
        return self.heads.vqa_logits(self._fused(images, input_ids, token_mask))

    def mlm_logits(self, fused: torch.Tensor) -> torch.Tensor:
        """(B, T, V) vocabulary logits of fused states; the decoder is tied to the word embeddings."""
        return self.heads.mlm_logits(fused, self.text.embeddings.word_embeddings.weight)

    def _fused(self, images: torch.Tensor, input_ids: torch.Tensor, token_mask: torch.Tensor) -> torch.Tensor:
        return self.fuse(self.encode_text(input_ids, token_mask), token_mask, self.encode_image(images))


def _all_valid(image: torch.Tensor, image_mask: torch.Tensor | None) -> torch.Tensor:
    return torch.ones(image.shape[:2], device=image.device) if image_mask is None else image_mask


def xvlm_key_map(cfg: EfficientVLMConfig) -> KeyMap:
    """A whole X-VLM-clip / EfficientVLM checkpoint -> `EfficientVLM`: `vit_weights.XVLM_VIT_RULES` under
    `vision_encoder.` -> `vision.`, plus `bert_key_maps.xvlm_text_key_map` (text, cross, heads), in one table so
    that every source key is used once and every target key filled (or allowed to stay at init)."""
    text = xvlm_text_key_map(cfg.text)
    vision = tuple(KeyRule(VISION_PREFIX + r.source, "vision." + r.target, r.transform) for r in XVLM_VIT_RULES)
    bbox = tuple((f"bbox_head.{{}}.{p}", "X-VLM's box regression (grounding pre-training); no head here")
                 for p in ("weight", "bias"))
    return KeyMap(
        name="XVLM",
        rules=vision + text.rules,
        ignored=((VISION_PREFIX + "position_ids", "a buffer (arange of positions) X-VLM registers and saves"),
                 *text.ignored, *bbox),
        tied=text.tied,
        allow_missing=text.allow_missing,
    )


__all__ = ["EfficientVLM", "VISION_PREFIX", "xvlm_key_map"]
