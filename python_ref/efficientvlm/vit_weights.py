"""Upstream checkpoint layouts of the CLIP ViT -> our `vit.VisionTransformer`, one `KeyMap` each (`key_maps.py`).

- `HF_CLIP_TO_VIT`: HF transformers `CLIPVisionModel` (`models/clip/modeling_clip.py`), with or without the
  `vision_model.` prefix (transformers 5 drops it from `CLIPVisionModel.state_dict()`, older versions and
  `CLIPModel` checkpoints keep it). A `CLIPModel` checkpoint also holds the text tower and projections:
  keep only its `vision_model.` keys before applying the map.
- `XVLM_TO_VIT`: X-VLM-clip and EfficientVLM checkpoints (zengyan-97/X-VLM and swaggy-TN/EfficientVLM
  `models/clip_vit.py`, under `vision_encoder.`): HF's names with `patch_embed`, `pos_embed` (an
  `nn.Embedding`) and no `embeddings.` level, since X-VLM builds its ViT from the HF checkpoint
  (`build_vision_encoder` in `models/xvlm.py`). The other parts of such a checkpoint (text, heads) are
  for the whole-model map; `XVLM_VIT_RULES` are the rules to reuse there under a prefix.
- `OPENAI_CLIP_TO_VIT`: OpenAI CLIP `clip/model.py` (`VisionTransformer` under `visual.`). Its attention
  stores q, k and v fused (`nn.MultiheadAttention.in_proj_weight`, rows in q, k, v order); a `KeyMap` maps
  one source key to one target, so `split_openai_in_proj` splits them into `attn.{q,k,v}_proj.*` keys first.

None of these maps interpolates positions: a checkpoint fine-tuned at another image size fails with a
shape mismatch on the position table, naming both shapes.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from ..errors import WeightsError
from ..key_maps import KeyMap, KeyRule, weight_bias_rules


def _layer_rules(source_layer: str, names: dict[str, str]) -> list[KeyRule]:
    """Rules for the modules of block `{}` (`names`: our name in the block -> the source's name)."""
    return weight_bias_rules([(f"{source_layer}.{theirs}", f"blocks.{{}}.{ours}") for ours, theirs in names.items()])


_HF_LAYER = {"ln_1": "layer_norm1", "attn.query": "self_attn.q_proj", "attn.key": "self_attn.k_proj",
             "attn.value": "self_attn.v_proj", "attn.out": "self_attn.out_proj", "ln_2": "layer_norm2",
             "mlp_in": "mlp.fc1", "mlp_out": "mlp.fc2"}
_HF_NORMS = [("pre_layrnorm", "ln_pre"), ("post_layernorm", "ln_post")]  # sic: HF spells it "layrnorm"

HF_CLIP_TO_VIT = KeyMap(
    name="HF_CLIP_TO_VIT",
    rules=(
        KeyRule("embeddings.patch_embedding.weight", "patch_embed.weight"),
        KeyRule("embeddings.class_embedding", "class_embedding"),
        KeyRule("embeddings.position_embedding.weight", "position_embedding"),
        *weight_bias_rules(_HF_NORMS),
        *_layer_rules("encoder.layers.{}", _HF_LAYER),
    ),
    optional_prefixes=("vision_model.",),
    ignored=(("embeddings.position_ids", "a buffer (arange of positions) that older transformers saved"),),
)

XVLM_VIT_RULES: tuple[KeyRule, ...] = (
    KeyRule("patch_embed.weight", "patch_embed.weight"),
    KeyRule("class_embedding", "class_embedding"),
    KeyRule("pos_embed.weight", "position_embedding"),
    *weight_bias_rules(_HF_NORMS),
    *_layer_rules("encoder.layers.{}", _HF_LAYER),
)

XVLM_TO_VIT = KeyMap(
    name="XVLM_TO_VIT",
    rules=XVLM_VIT_RULES,
    optional_prefixes=("vision_encoder.",),
    ignored=(("position_ids", "a buffer (arange of positions) X-VLM registers and saves"),),
)

OPENAI_CLIP_TO_VIT = KeyMap(
    name="OPENAI_CLIP_TO_VIT",
    rules=(
        KeyRule("conv1.weight", "patch_embed.weight"),
        KeyRule("class_embedding", "class_embedding"),
        KeyRule("positional_embedding", "position_embedding"),
        *weight_bias_rules([("ln_pre", "ln_pre"), ("ln_post", "ln_post")]),
        *_layer_rules("transformer.resblocks.{}", {
            "ln_1": "ln_1", "attn.query": "attn.q_proj", "attn.key": "attn.k_proj", "attn.value": "attn.v_proj",
            "attn.out": "attn.out_proj", "ln_2": "ln_2", "mlp_in": "mlp.c_fc", "mlp_out": "mlp.c_proj"}),
    ),
    optional_prefixes=("visual.",),
    ignored=(("proj", "CLIP's image-text projection of the class token; X-VLM keeps the tokens, ITC has its own"),),
)

_IN_PROJ = {"attn.in_proj_weight": "weight", "attn.in_proj_bias": "bias"}


def split_openai_in_proj(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A copy of an OpenAI CLIP state dict with each fused `attn.in_proj_{weight,bias}` (3W rows: q, k, v)
    split into `attn.q_proj.*`, `attn.k_proj.*`, `attn.v_proj.*`; every other key unchanged.

    Raises WeightsError (the key and its shape) if a fused tensor's first dim is not a multiple of 3.
    """
    out: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        suffix = next((s for s in _IN_PROJ if key.endswith(s)), None)
        if suffix is None:
            out[key] = tensor
            continue
        if tensor.dim() < 1 or tensor.shape[0] % 3:
            raise WeightsError(f"{key} has shape {tuple(tensor.shape)}, expected 3·width rows (q, k, v stacked)")
        stem = key[: -len(suffix)]
        for name, part in zip(("q", "k", "v"), tensor.chunk(3, dim=0)):
            out[f"{stem}attn.{name}_proj.{_IN_PROJ[suffix]}"] = part.contiguous()
    return out


__all__ = ["HF_CLIP_TO_VIT", "OPENAI_CLIP_TO_VIT", "XVLM_TO_VIT", "XVLM_VIT_RULES", "split_openai_in_proj"]
