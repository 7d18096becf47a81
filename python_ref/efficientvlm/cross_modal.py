"""EfficientVLM's cross-modal encoder: the last `cross_layers` layers of X-VLM's BERT, where text attends to itself
and then to the image tokens.

Mirrors zengyan-97/X-VLM `models/xbert.py` (`BertLayer` with `has_cross_attention`, layers from `fusion_layer`
on, i.e. `mode='fusion'`): self-attention (padding mask, or xbert's causal decoder mask for captioning) ->
residual -> LN, cross-attention from the text queries to the image tokens with key/value Linear(`encoder_width`
-> H) -> residual -> LN, FFN -> residual -> LN. HF transformers' `BertLayer(add_cross_attention=True)` is the
same layer when the image width equals the text width (HF's cross key/value are Linear(H -> H)).
"""

from __future__ import annotations

import torch
from torch import nn

from ..fusion import LayerNorm, init_bert
from .config import TextConfig
from .text import Attention, FeedForward, causal_padding_mask, padding_mask


class CrossModalLayer(nn.Module):
    """One xbert layer with cross-attention; all masks additive (see `text.padding_mask`). Cross-modal layer
    `index` of the config: its self-attention and FFN are global layer `text_layers + index` of the per-layer
    widths, its cross-attention entry `index` of `cross_heads_per_layer`."""

    def __init__(self, cfg: TextConfig, vision_width: int, index: int = 0) -> None:
        super().__init__()
        layer = cfg.text_layers + index
        self.attn = Attention(cfg.hidden_size, cfg.layer_self_heads(layer), cfg.hidden_size, cfg.head_dim)
        self.attn_norm = LayerNorm(cfg.hidden_size, cfg.layer_norm_eps)
        self.cross_attn = Attention(cfg.hidden_size, cfg.layer_cross_heads(index), vision_width, cfg.head_dim)
        self.cross_norm = LayerNorm(cfg.hidden_size, cfg.layer_norm_eps)
        self.ffn = FeedForward(cfg, cfg.layer_ffn(layer))

    def forward(
        self, x: torch.Tensor, text_mask: torch.Tensor, image: torch.Tensor, image_mask: torch.Tensor
    ) -> torch.Tensor:
        """`x` (B, T, H) under `text_mask` (B, T or 1, T), attending to `image` (B, N, Dv) under `image_mask`
        (B, 1, N) -> (B, T, H)."""
        x = self.attn_norm(x + self.attn(x, x, text_mask))
        x = self.cross_norm(x + self.cross_attn(x, image, image_mask))
        return self.ffn(x)


class CrossModalEncoder(nn.Module):
    """`cross_layers` cross-modal layers over the text encoder's states and the image tokens, BERT-initialised."""

    def __init__(self, cfg: TextConfig, vision_width: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.layers = nn.ModuleList(CrossModalLayer(cfg, vision_width, j) for j in range(cfg.cross_layers))
        self.apply(init_bert)

    def forward(
        self, text: torch.Tensor, text_mask: torch.Tensor, image: torch.Tensor, image_mask: torch.Tensor
    ) -> torch.Tensor:
        """Fused states (B, T, H) of text states (B, T, H) with 0/1 padding mask (B, T) and image tokens
        (B, N, Dv) with 0/1 mask (B, N) (X-VLM's `image_atts`, all ones for a whole image). Bidirectional text
        self-attention (ITM, MLM, VQA)."""
        return self._run(text, padding_mask(text_mask), image, padding_mask(image_mask))

    def forward_causal(
        self, text: torch.Tensor, text_mask: torch.Tensor, image: torch.Tensor, image_mask: torch.Tensor
    ) -> torch.Tensor:
        """As `forward`, with causal text self-attention: position t never sees the text after t (captioning;
        X-VLM decodes with the same stack under xbert's `is_decoder` mask)."""
        return self._run(text, causal_padding_mask(text_mask), image, padding_mask(image_mask))

    def _run(self, x: torch.Tensor, text_mask: torch.Tensor, image: torch.Tensor, image_mask: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x, text_mask, image, image_mask)
        return x


__all__ = ["CrossModalEncoder", "CrossModalLayer"]
