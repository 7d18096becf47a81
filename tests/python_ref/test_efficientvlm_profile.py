"""`minivlm info` for EfficientVLM (python_ref/efficientvlm/profile.py) held to closed forms written from each
config: parameters per part, and FLOPs per layer and per part (2 per multiply-add, matmuls and convolutions, as
`torch.utils.flop_counter` counts them). Profiles run on the meta device, so the teacher takes well under a second."""

import pytest
import torch

from minivlm.python_ref.config import PRESETS as MINIVLM_PRESETS
from minivlm.python_ref.families import known_presets, preset_family
from minivlm.python_ref.efficientvlm.config import PRESETS, EfficientVLMConfig
from minivlm.python_ref.efficientvlm.model import EfficientVLM
from minivlm.python_ref.efficientvlm.profile import config_at, info_report, profile_efficientvlm
from minivlm.python_ref.errors import ConfigError
from minivlm.python_ref.profile import count_flops


def _linear(i: int, o: int) -> int:
    return i * o + o  # weight and bias


def _mlp_head(d: int, out: int) -> int:
    return _linear(d, 2 * d) + 2 * 2 * d + _linear(2 * d, out)  # X-VLM build_mlp: Linear, LayerNorm, Linear


def _expected_params(cfg: EfficientVLMConfig) -> dict[str, int]:
    """Parameters per row of the profile, from the config alone."""
    v, t = cfg.vision, cfg.text
    w, f, p = v.width, v.width * v.mlp_ratio, v.patch_size
    tokens = (v.image_size // p) ** 2 + 1  # patches and the class token
    # pre-LN CLIP block: ln_1, q/k/v/out, ln_2, mlp_in, mlp_out
    vit_block = 2 * w + 4 * _linear(w, w) + 2 * w + _linear(w, f) + _linear(f, w)
    # patch conv (no bias), class token, positions, ln_pre, blocks, ln_post
    vision = 3 * p * p * w + w + tokens * w + 2 * w + v.layers * vit_block + 2 * w
    h, i = t.hidden_size, t.intermediate_size
    embeddings = (t.vocab_size + t.max_position_embeddings + t.type_vocab_size) * h + 2 * h
    bert_layer = 4 * _linear(h, h) + 2 * h + _linear(h, i) + _linear(i, h) + 2 * h
    # plus cross-attention: query and output from the text width, key and value from the image width, and its LN
    cross_layer = bert_layer + 2 * _linear(h, h) + 2 * _linear(w, h) + 2 * h
    heads = (_linear(w, cfg.embed_dim) + _linear(h, cfg.embed_dim) + 1  # ITC projections, temperature
             + _mlp_head(h, 2)  # ITM
             + _linear(h, h) + 2 * h + t.vocab_size)  # MLM transform, its LN, decoder bias (decoder weight tied)
    rows = {"vision": vision, "text embeddings": embeddings, "text layers": t.text_layers * bert_layer,
            "cross layers": t.cross_layers * cross_layer, "heads": heads, "VQA head": _mlp_head(h, cfg.num_answers)}
    rows["total"] = sum(rows.values())
    rows["without vocabulary"] = rows["total"] - t.vocab_size * h - t.vocab_size  # word embeddings, MLM bias
    return rows


def _attention_flops(queries: int, keys: int, width: int, kv_width: int) -> int:
    """q and out projections on the queries, k and v on the keys, scores and weighted sum over all heads."""
    return 2 * 2 * width * width * queries + 2 * 2 * kv_width * width * keys + 2 * 2 * queries * keys * width


def _expected_flops(cfg: EfficientVLMConfig) -> dict[str, int]:
    v, t = cfg.vision, cfg.text
    w, f, p = v.width, v.width * v.mlp_ratio, v.patch_size
    patches = (v.image_size // p) ** 2
    n, s, h, i = patches + 1, t.max_text_len, t.hidden_size, t.intermediate_size
    vision = 2 * (3 * p * p) * w * patches + v.layers * (_attention_flops(n, n, w, w) + 2 * 2 * w * f * n)
    bert_layer = _attention_flops(s, s, h, h) + 2 * 2 * h * i * s
    e = cfg.embed_dim
    heads = (2 * w * e + 2 * h * e + 2 * 2 * e  # ITC: projections of one image and one text, both similarities
             + 2 * h * 2 * h + 2 * 2 * h * 2  # ITM on the fused [CLS]
             + 2 * h * h + 2 * h * t.vocab_size)  # MLM on one position: transform and tied decoder
    return {"vision": vision, "text embeddings": 0, "text layers": t.text_layers * bert_layer,
            "cross layers": t.cross_layers * (bert_layer + _attention_flops(s, n, h, w)),
            "heads": heads, "VQA head": 2 * h * 2 * h + 2 * 2 * h * cfg.num_answers}


ROWS = ("vision", "text embeddings", "text layers", "cross layers", "heads", "VQA head")


@pytest.mark.parametrize("name", PRESETS)
def test_parameters_per_part_match_the_closed_form(name):
    profile = profile_efficientvlm(name)
    expected = _expected_params(PRESETS[name]())
    assert [r.params for r in profile.rows] == [expected[k] for k in (*ROWS, "total")]
    assert profile.params_without_vocabulary == expected["without vocabulary"]


@pytest.mark.parametrize("name", PRESETS)
def test_flops_per_part_match_the_closed_form(name):
    profile = profile_efficientvlm(name)
    expected = _expected_flops(PRESETS[name]())
    assert [r.flops for r in profile.rows] == [expected[k] for k in ROWS] + [sum(expected.values())]


def test_one_linear_and_one_attention_layer_of_tiny_count_2_in_out_tokens():
    cfg = PRESETS["efficientvlm-tiny"]()
    model = EfficientVLM(cfg).eval()
    w, h, n, s = cfg.vision.width, cfg.text.hidden_size, cfg.vision.num_tokens, cfg.text.max_text_len
    x = torch.randn(1, n, w)
    assert count_flops(lambda: model.vision.blocks[0].mlp_in(x)) == 2 * w * (w * cfg.vision.mlp_ratio) * n
    text, image = torch.randn(1, s, h), torch.randn(1, n, w)
    attn = model.cross.layers[0].cross_attn
    projections = 2 * h * h * s + 2 * w * h * n + 2 * w * h * n + 2 * h * h * s  # query, key, value, out
    assert count_flops(lambda: attn(text, image)) == projections + 2 * s * n * h + 2 * s * n * h  # q·k, p·v


def test_the_meta_device_counts_what_a_real_run_counts():
    torch.manual_seed(0)
    assert profile_efficientvlm("efficientvlm-tiny", device="cpu") == profile_efficientvlm("efficientvlm-tiny")


def test_the_paper_student_costs_about_half_the_teacher():
    student, teacher = profile_efficientvlm("efficientvlm-paper"), profile_efficientvlm("efficientvlm-teacher")
    assert student.total.flops < teacher.total.flops and student.total.params < teacher.total.params
    # 6 of 12 blocks; the patch embedding is the same in both
    assert 0.45 < student.rows[0].flops / teacher.rows[0].flops < 0.55
    report = info_report("efficientvlm-paper")
    ratio = student.total.flops / teacher.total.flops
    assert f"efficientvlm-paper / efficientvlm-teacher: parameters {student.total.params / teacher.total.params:.3f}" \
        in report and f"FLOPs {ratio:.3f}" in report
    assert "efficientvlm-teacher /" not in info_report("efficientvlm-teacher")  # a teacher has no ratio line


def test_another_image_size_resizes_the_position_table():
    cfg = PRESETS["efficientvlm-demo-student"]()
    at_64 = profile_efficientvlm(cfg, image_size=64)
    patch, width = cfg.vision.patch_size, cfg.vision.width
    assert at_64.cfg.vision.num_tokens == (64 // patch) ** 2 + 1
    assert at_64.total.params == _expected_params(at_64.cfg)["total"]
    fewer_positions = cfg.vision.num_tokens - at_64.cfg.vision.num_tokens
    assert at_64.total.params == profile_efficientvlm(cfg).total.params - fewer_positions * width


@pytest.mark.parametrize("size", [0, -16, 100, 2056, True, 64.0])
def test_image_sizes_off_the_patch_grid_are_refused(size):
    with pytest.raises(ConfigError, match=rf"^image size {size!r} is not one efficientvlm-paper can take: a multiple "
                                          r"of its patch size 16 from 16 to 2048 \(efficientvlm-paper's own is 224\)$"):
        config_at("efficientvlm-paper", size)


def test_preset_family_knows_both_families_and_lists_them_for_an_unknown_name():
    assert {preset_family(n).name for n in MINIVLM_PRESETS} == {"minivlm"}
    assert {preset_family(n).name for n in PRESETS} == {"efficientvlm"}
    with pytest.raises(ConfigError) as err:
        preset_family("efficientvlm-huge")
    assert str(err.value) == f"unknown model preset 'efficientvlm-huge'; known presets: {known_presets()}"
    assert set(known_presets().split(", ")) == {*MINIVLM_PRESETS, *PRESETS}
