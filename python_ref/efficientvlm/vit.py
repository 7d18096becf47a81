"""The CLIP ViT image encoder of EfficientVLM / X-VLM-clip, as one export-friendly module.

Follows OpenAI CLIP `clip/model.py` (`VisionTransformer`, `ResidualAttentionBlock`, `QuickGELU`) and HF
transformers `models/clip/modeling_clip.py` (`CLIPVisionModel`); X-VLM (zengyan-97/X-VLM
`models/clip_vit.py`, `CLIPVisionTransformer`) is the same network, except that it applies the final
LayerNorm to every token and returns them all, class token first: those are the image tokens the text
cross-attends to. HF `CLIPVisionModel` instead returns the blocks' output un-normalised in
`last_hidden_state` and applies `post_layernorm` to the class token only (`pooler_output`), so our output is
HF's `post_layernorm(last_hidden_state)`, and our class token is HF's `pooler_output`.

    images (B, 3, S, S) -> patch conv (no bias) -> [class | patches] + positions -> ln_pre
        -> layers x (x + attn(ln_1 x); x + mlp(ln_2 x))  with quick_gelu -> ln_post -> (B, 1 + (S/P)², width)

Written like `fusion.py` for export (docs/ARCHITECTURE.md §3): static shapes from the config, attention as
3-D `bmm` + softmax (`text.Attention`, unmasked here; q/k/v are three Linears as HF `CLIPAttention` and X-VLM
store them, OpenAI's fused `in_proj` is split on loading: `vit_weights.split_openai_in_proj`), the mean/rsqrt LayerNorm of `fusion.py`, no tensor-dependent Python branch. Inputs are
checked outside the graph by `preprocess.check_images`. Key maps of the upstream checkpoint layouts: `vit_weights.py`.
"""

from __future__ import annotations

import torch
from torch import nn

from ..fusion import LayerNorm
from .config import ViTConfig
from .text import Attention, OutputBias


def quick_gelu(x: torch.Tensor) -> torch.Tensor:
    """CLIP's GELU approximation, x·σ(1.702x): the activation the CLIP weights were trained with."""
    return x * torch.sigmoid(1.702 * x)


class Block(nn.Module):
    """OpenAI `ResidualAttentionBlock` / HF `CLIPEncoderLayer` (pre-LN): x + attn(ln_1 x), then x + mlp(ln_2 x).

    Block `index` of the config's per-layer heads and MLP neurons (0 neurons: `mlp_out` is its bias alone,
    `text.OutputBias`). `neuron_mask` is None, or a (neurons,) tensor multiplying the quick_gelu output
    (pruning's gates, as `Attention.head_mask`)."""

    def __init__(self, cfg: ViTConfig, index: int = 0) -> None:
        super().__init__()
        neurons = cfg.layer_mlp(index)
        self.neurons = neurons
        self.neuron_mask: torch.Tensor | None = None
        self.ln_1 = LayerNorm(cfg.width, cfg.layer_norm_eps)
        self.attn = Attention(cfg.width, cfg.layer_heads(index), cfg.width, cfg.head_dim)
        self.ln_2 = LayerNorm(cfg.width, cfg.layer_norm_eps)
        if neurons == 0:
            self.mlp_out = OutputBias(cfg.width)
        else:
            self.mlp_in = nn.Linear(cfg.width, neurons)
            self.mlp_out = nn.Linear(neurons, cfg.width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.ln_1(x)
        x = x + self.attn(h, h)  # no mask: every image token sees every other
        if self.neurons == 0:
            return x + self.mlp_out.bias
        act = quick_gelu(self.mlp_in(self.ln_2(x)))
        if self.neuron_mask is not None:
            act = act * self.neuron_mask
        return x + self.mlp_out(act)


class VisionTransformer(nn.Module):
    """images (B, 3, S, S) float32, normalised with the config's CLIP mean/std -> (B, 1 + (S/P)², width).

    Every token goes through `ln_post` (X-VLM); token 0 is the class token. S is fixed by the config:
    the position table has exactly `cfg.num_tokens` rows (fine-tuning at another size interpolates the
    table when loading, which is not done here).
    State dict: `patch_embed.weight`, `class_embedding`, `position_embedding`, `ln_pre.*`,
    `blocks.{i}.{ln_1,attn.{query,key,value,out},ln_2,mlp_in,mlp_out}.*`, `ln_post.*`.
    """

    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        w = cfg.width
        self.patch_embed = nn.Conv2d(3, w, kernel_size=cfg.patch_size, stride=cfg.patch_size, bias=False)
        scale = w**-0.5  # OpenAI CLIP's init scale for the class token and positions
        self.class_embedding = nn.Parameter(scale * torch.randn(w))
        self.position_embedding = nn.Parameter(scale * torch.randn(cfg.num_tokens, w))
        self.ln_pre = LayerNorm(w, cfg.layer_norm_eps)
        self.blocks = nn.ModuleList(Block(cfg, i) for i in range(cfg.layers))
        self.ln_post = LayerNorm(w, cfg.layer_norm_eps)
        self.input_names = ("images",)
        self.output_names = ("image_tokens",)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        b = images.shape[0]
        patches = self.patch_embed(images).flatten(2).transpose(1, 2)  # (B, (S/P)², W), row-major grid
        cls = self.class_embedding.view(1, 1, -1).expand(b, 1, self.cfg.width)
        x = self.ln_pre(torch.cat([cls, patches], dim=1) + self.position_embedding)
        for block in self.blocks:
            x = block(x)
        return self.ln_post(x)


__all__ = ["Block", "VisionTransformer", "quick_gelu"]
