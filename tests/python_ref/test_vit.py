"""EfficientVLM's CLIP ViT (python_ref/efficientvlm/vit.py) and its key maps (vit_weights.py): parity with a tiny
transformers.CLIPVisionModel through HF_CLIP_TO_VIT, OpenAI and X-VLM layouts round-tripped from our own weights,
loud failures, torch.export, the ViT-B/16 parameter count, and the input check."""

import pytest
import torch

from minivlm.python_ref.efficientvlm.config import efficientvlm_teacher, efficientvlm_tiny
from minivlm.python_ref.efficientvlm.vit import VisionTransformer
from minivlm.python_ref.preprocess import check_images
from minivlm.python_ref.efficientvlm.vit_weights import (
    HF_CLIP_TO_VIT,
    OPENAI_CLIP_TO_VIT,
    XVLM_TO_VIT,
    split_openai_in_proj,
)
from minivlm.python_ref.errors import InputError, WeightsError
from minivlm.python_ref.key_maps import load_with_key_map

CFG = efficientvlm_tiny().vision


def _vit(seed: int) -> VisionTransformer:
    torch.manual_seed(seed)
    vit = VisionTransformer(CFG).eval()
    with torch.no_grad():  # LayerNorms start at 1/0: perturb them so that a swapped weight/bias would show
        for p in vit.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return vit


def _images(batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, CFG.image_size, CFG.image_size, generator=torch.Generator().manual_seed(1))


def test_output_shape_and_class_token_first():
    out = _vit(0)(_images())
    assert out.shape == (2, CFG.num_tokens, CFG.width) == (2, 1 + (32 // 8) ** 2, 32)


# ---- HF transformers parity ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hf_vision():
    transformers = pytest.importorskip("transformers")
    hf_cfg = transformers.CLIPVisionConfig(
        hidden_size=CFG.width, intermediate_size=CFG.width * CFG.mlp_ratio, num_hidden_layers=CFG.layers,
        num_attention_heads=CFG.heads, image_size=CFG.image_size, patch_size=CFG.patch_size,
        hidden_act="quick_gelu", layer_norm_eps=CFG.layer_norm_eps, attn_implementation="eager")
    torch.manual_seed(3)
    model = transformers.CLIPVisionModel(hf_cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


@pytest.mark.parametrize("prefix", ["", "vision_model."])
def test_matches_hf_clip_vision_model(hf_vision, prefix):
    """HF applies post_layernorm only to the class token (pooler_output); last_hidden_state is un-normalised.
    Our output is post_layernorm over every token (X-VLM), so compare with post_layernorm(last_hidden_state)."""
    state = {prefix + k: v for k, v in hf_vision.state_dict().items()}
    vit = VisionTransformer(CFG).eval()
    assert load_with_key_map(vit, state, HF_CLIP_TO_VIT) == ()
    images = _images()
    with torch.no_grad():
        hf = hf_vision(pixel_values=images)
        expected = hf_vision.post_layernorm(hf.last_hidden_state)
        ours = vit(images)
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(ours[:, 0], hf.pooler_output, atol=1e-5, rtol=0)
    assert not torch.allclose(ours, hf.last_hidden_state, atol=1e-3)  # the final LN does matter


# ---- OpenAI and X-VLM layouts, built by hand from our module -----------------------------------------------------


def _openai_state(vit: VisionTransformer) -> dict[str, torch.Tensor]:
    """Our weights under OpenAI CLIP's names (`visual.`), q/k/v fused as nn.MultiheadAttention stores them."""
    s = vit.state_dict()
    out = {"visual.conv1.weight": s["patch_embed.weight"], "visual.class_embedding": s["class_embedding"],
           "visual.positional_embedding": s["position_embedding"], "visual.proj": torch.randn(CFG.width, 8)}
    for n in ("ln_pre", "ln_post"):
        out |= {f"visual.{n}.{p}": s[f"{n}.{p}"] for p in ("weight", "bias")}
    for i in range(CFG.layers):
        src, dst = f"blocks.{i}.", f"visual.transformer.resblocks.{i}."
        for p in ("weight", "bias"):
            out[f"{dst}attn.in_proj_{p}"] = torch.cat([s[f"{src}attn.{c}.{p}"] for c in ("query", "key", "value")])
            for theirs, ours in (("attn.out_proj", "attn.out"), ("ln_1", "ln_1"), ("ln_2", "ln_2"),
                                 ("mlp.c_fc", "mlp_in"), ("mlp.c_proj", "mlp_out")):
                out[f"{dst}{theirs}.{p}"] = s[f"{src}{ours}.{p}"]
    return out


def _xvlm_state(vit: VisionTransformer) -> dict[str, torch.Tensor]:
    """Our weights under X-VLM's names (`vision_encoder.`, HF layer names, `patch_embed`, `pos_embed`)."""
    s = vit.state_dict()
    out = {"vision_encoder.patch_embed.weight": s["patch_embed.weight"],
           "vision_encoder.class_embedding": s["class_embedding"],
           "vision_encoder.pos_embed.weight": s["position_embedding"],
           "vision_encoder.position_ids": torch.arange(CFG.num_tokens)[None]}
    for theirs, ours in (("pre_layrnorm", "ln_pre"), ("post_layernorm", "ln_post")):
        out |= {f"vision_encoder.{theirs}.{p}": s[f"{ours}.{p}"] for p in ("weight", "bias")}
    names = {"self_attn.q_proj": "attn.query", "self_attn.k_proj": "attn.key", "self_attn.v_proj": "attn.value",
             "self_attn.out_proj": "attn.out", "layer_norm1": "ln_1", "layer_norm2": "ln_2",
             "mlp.fc1": "mlp_in", "mlp.fc2": "mlp_out"}
    for i in range(CFG.layers):
        for theirs, ours in names.items():
            out |= {f"vision_encoder.encoder.layers.{i}.{theirs}.{p}": s[f"blocks.{i}.{ours}.{p}"]
                    for p in ("weight", "bias")}
    return out


@pytest.mark.parametrize("layout", ["openai", "xvlm"])
def test_upstream_layout_round_trip(layout):
    source = _vit(0)
    if layout == "openai":
        state, key_map = split_openai_in_proj(_openai_state(source)), OPENAI_CLIP_TO_VIT
    else:
        state, key_map = _xvlm_state(source), XVLM_TO_VIT
    target = _vit(1)
    assert load_with_key_map(target, state, key_map) == ()
    for k, v in source.state_dict().items():
        assert torch.equal(target.state_dict()[k], v), k
    images = _images()
    with torch.no_grad():
        torch.testing.assert_close(target(images), source(images), atol=0, rtol=0)


def test_openai_split_takes_q_k_v_in_order():
    w = torch.arange(12.0).view(6, 2)
    split = split_openai_in_proj({"transformer.resblocks.0.attn.in_proj_weight": w, "ln_pre.bias": torch.ones(2)})
    assert set(split) == {f"transformer.resblocks.0.attn.{c}_proj.weight" for c in "qkv"} | {"ln_pre.bias"}
    for i, c in enumerate("qkv"):
        assert torch.equal(split[f"transformer.resblocks.0.attn.{c}_proj.weight"], w[2 * i : 2 * i + 2])


def test_position_table_mismatch_fails_naming_key_and_shapes():
    """A checkpoint fine-tuned at another size (more positions) is refused, not silently cut."""
    state = split_openai_in_proj(_openai_state(_vit(0)))
    state["visual.positional_embedding"] = torch.randn(CFG.num_tokens + 8, CFG.width)
    with pytest.raises(WeightsError) as err:
        load_with_key_map(_vit(1), state, OPENAI_CLIP_TO_VIT)
    message = str(err.value)
    assert "\n" not in message
    assert "visual.positional_embedding" in message and str((CFG.num_tokens + 8, CFG.width)) in message
    assert str((CFG.num_tokens, CFG.width)) in message


def test_fused_in_proj_of_wrong_size_fails():
    with pytest.raises(WeightsError, match=r"resblocks\.0\.attn\.in_proj_bias has shape \(7,\)"):
        split_openai_in_proj({"visual.transformer.resblocks.0.attn.in_proj_bias": torch.zeros(7)})


def test_unknown_key_fails():
    state = _xvlm_state(_vit(0)) | {"vision_encoder.encoder.layers.0.extra.weight": torch.zeros(1)}
    with pytest.raises(WeightsError, match=r"1 source keys unused .*layers\.0\.extra\.weight"):
        load_with_key_map(_vit(1), state, XVLM_TO_VIT)


# ---- export, size, inputs ------------------------------------------------------------------------------------


def test_torch_export_matches_eager():
    vit, images = _vit(0), _images()
    exported = torch.export.export(vit, (images,))
    with torch.no_grad():
        torch.testing.assert_close(exported.module()(images), vit(images), atol=1e-6, rtol=0)


def _clip_vit_params(image: int, patch: int, width: int, layers: int, mlp: int) -> int:
    """CLIP ViT vision tower, counted from the architecture (OpenAI clip/model.py), without the projection."""
    tokens = (image // patch) ** 2 + 1
    embed = 3 * patch * patch * width + width + tokens * width  # conv (no bias), class token, positions
    block = 4 * (width * width + width) + (width * mlp + mlp) + (mlp * width + width) + 2 * 2 * width
    return embed + 2 * 2 * width + layers * block  # + ln_pre, ln_post


def test_teacher_parameter_count_is_clip_vit_b16():
    with torch.device("meta"):  # shapes only: no 340 MB allocation
        vit = VisionTransformer(efficientvlm_teacher().vision)
    expected = _clip_vit_params(image=224, patch=16, width=768, layers=12, mlp=3072)
    assert sum(p.numel() for p in vit.parameters()) == expected == 85_799_424
    assert expected + 768 * 512 == 86_192_640  # + OpenAI's 768x512 `proj`: CLIP ViT-B/16's visual tower


@pytest.mark.parametrize(("images", "match"), [
    (torch.zeros(2, 3, 16, 16), r"shape is \(2, 3, 16, 16\), expected \(B, 3, 32, 32\)"),
    (torch.zeros(3, 32, 32), r"rank 3 \(shape \(3, 32, 32\)\), expected 4: \(B, 3, 32, 32\)"),
    (torch.zeros(1, 3, 32, 32, dtype=torch.float64), "dtype is torch.float64"),
    (torch.full((1, 3, 32, 32), float("nan")), "NaN or infinite"),
    ([[0.0]], "is a list"),
])
def test_bad_images_raise_one_line_input_error(images, match):
    with pytest.raises(InputError, match=match) as err:
        check_images(images, CFG.image_size)
    assert "\n" not in str(err.value)


def test_good_images_pass_the_check():
    check_images(_images(3), CFG.image_size)
