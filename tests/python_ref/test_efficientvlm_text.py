"""EfficientVLM text side on the tiny preset: upstream parity through the key maps (HF `BertModel` -> text encoder;
an X-VLM-named checkpoint built from HF `BertLayer`s and X-VLM's head layouts -> text, cross-modal stack and
heads), head shapes, ITC roles, the causal mask, and torch.export of the text + cross stack."""

from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from minivlm.python_ref.efficientvlm.bert_key_maps import HF_BERT_TO_TEXT, xvlm_text_key_map
from minivlm.python_ref.efficientvlm.config import efficientvlm_tiny
from minivlm.python_ref.efficientvlm.cross_modal import CrossModalEncoder
from minivlm.python_ref.efficientvlm.heads import Heads
from minivlm.python_ref.efficientvlm.text import TextEncoder, padding_mask
from minivlm.python_ref.errors import WeightsError
from minivlm.python_ref.key_maps import load_with_key_map

transformers = pytest.importorskip("transformers")
from transformers.models.bert import modeling_bert as hf  # noqa: E402

ATOL = 1e-5
CFG = efficientvlm_tiny()
B, T, N = 3, 9, 5
LENGTHS = (9, 6, 3)  # valid tokens per row; the rest is padding


def _hf_config(num_layers: int, **extra) -> "transformers.BertConfig":
    t = CFG.text
    config = transformers.BertConfig(
        vocab_size=t.vocab_size, hidden_size=t.hidden_size, num_hidden_layers=num_layers,
        num_attention_heads=t.heads, intermediate_size=t.intermediate_size,
        max_position_embeddings=t.max_position_embeddings, type_vocab_size=t.type_vocab_size,
        layer_norm_eps=t.layer_norm_eps, hidden_act="gelu", hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0, **extra)
    config._attn_implementation = "eager"
    return config


def _perturb(*modules: nn.Module) -> None:
    """Move every parameter off its init (LayerNorm at identity would hide a swapped weight/bias)."""
    with torch.no_grad():
        for module in modules:
            for p in module.parameters():
                p.add_(torch.randn_like(p) * 0.1)


def _inputs(vision_width: int = CFG.vision.width):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1000, CFG.text.vocab_size, (B, T), generator=g)
    mask = torch.tensor([[1.0] * n + [0.0] * (T - n) for n in LENGTHS])
    image = torch.randn(B, N, vision_width, generator=g)
    image_mask = torch.ones(B, N)
    image_mask[2, -2:] = 0.0  # a partly masked image, so that the image mask is exercised too
    return ids, mask, image, image_mask


def _hf_mask(mask01: torch.Tensor) -> torch.Tensor:
    """Our additive (B, 1, S) mask in HF's eager layout (B, heads=1, 1, S)."""
    return padding_mask(mask01).unsqueeze(1)


def test_text_encoder_matches_hf_bert():
    torch.manual_seed(0)
    bert = transformers.BertModel(_hf_config(CFG.text.text_layers), add_pooling_layer=True).eval()
    _perturb(bert)
    ours = TextEncoder(CFG.text).eval()
    left = load_with_key_map(ours, bert.state_dict(), HF_BERT_TO_TEXT)
    assert left == ()
    ids, mask, _, _ = _inputs()
    with torch.no_grad():
        want = bert(input_ids=ids, attention_mask=mask.long()).last_hidden_state
        got = ours(ids, mask)
    assert got.shape == (B, T, CFG.text.hidden_size)
    torch.testing.assert_close(got, want, atol=ATOL, rtol=0)


def _upstream(vision_width: int):
    """X-VLM's text side out of HF parts: embeddings, text layers, cross layers (xbert's key/value width
    `encoder_width` = `vision_width`), the tied MLM head, and `models/xvlm.py`'s projections and `build_mlp`."""
    t = CFG.text
    torch.manual_seed(0)
    plain, decoder = _hf_config(1), _hf_config(1, is_decoder=True, add_cross_attention=True)
    parts = nn.ModuleDict({
        "embeddings": hf.BertEmbeddings(plain),
        "layers": nn.ModuleList([*(hf.BertLayer(plain) for _ in range(t.text_layers)),
                                 *(hf.BertLayer(decoder) for _ in range(t.cross_layers))]),
        "mlm": hf.BertLMPredictionHead(plain),
        "vision_proj": nn.Linear(vision_width, CFG.embed_dim),
        "text_proj": nn.Linear(t.hidden_size, CFG.embed_dim),
        "itm_head": nn.Sequential(nn.Linear(t.hidden_size, 2 * t.hidden_size), nn.LayerNorm(2 * t.hidden_size),
                                  nn.GELU(), nn.Linear(2 * t.hidden_size, 2)),
    })
    for layer in parts["layers"][t.text_layers:]:
        # HF sizes cross key/value from hidden_size; xbert from `encoder_width`: swap in xbert's Linear layers.
        layer.crossattention.self.key = nn.Linear(vision_width, t.hidden_size)
        layer.crossattention.self.value = nn.Linear(vision_width, t.hidden_size)
    parts["mlm"].decoder.weight = parts["embeddings"].word_embeddings.weight  # xbert's ties
    parts["mlm"].decoder.bias = parts["mlm"].bias
    _perturb(parts)
    temp = torch.tensor(0.3)
    state = {f"text_encoder.bert.embeddings.{k}": v for k, v in parts["embeddings"].state_dict().items()}
    for i, layer in enumerate(parts["layers"]):
        state |= {f"text_encoder.bert.encoder.layer.{i}.{k}": v for k, v in layer.state_dict().items()}
    state |= {f"text_encoder.cls.predictions.{k}": v for k, v in parts["mlm"].state_dict().items()}
    for name in ("vision_proj", "text_proj", "itm_head"):
        state |= {f"{name}.{k}": v for k, v in parts[name].state_dict().items()}
    state["temp"] = temp
    return parts.eval(), temp, state


def _ours(vision_width: int) -> nn.ModuleDict:
    cfg = replace(CFG, vision=replace(CFG.vision, width=vision_width))
    return nn.ModuleDict({"text": TextEncoder(cfg.text), "cross": CrossModalEncoder(cfg.text, vision_width),
                          "heads": Heads(cfg)}).eval()


@pytest.mark.parametrize("vision_width", [CFG.text.hidden_size, 48], ids=["hf-width", "xbert-encoder-width"])
def test_xvlm_checkpoint_through_the_key_map_matches_hf_layers(vision_width):
    """Each HF `BertLayer` is called directly with our additive masks; the cross layers with the image tokens
    as `encoder_hidden_states`. At the text width the cross layers are HF's unchanged."""
    parts, temp, state = _upstream(vision_width)
    ours = _ours(vision_width)
    left = load_with_key_map(ours, state, xvlm_text_key_map(CFG.text))
    assert all(k.startswith("heads.vqa_head.") for k in left) and left
    ids, mask, image, image_mask = _inputs(vision_width)
    with torch.no_grad():
        x = parts["embeddings"](input_ids=ids)
        for i, layer in enumerate(parts["layers"]):
            x = layer(x, _hf_mask(mask)) if i < CFG.text.text_layers else \
                layer(x, _hf_mask(mask), encoder_hidden_states=image, encoder_attention_mask=_hf_mask(image_mask))
            if i == CFG.text.text_layers - 1:
                want_text = x
        text = ours["text"](ids, mask)
        fused = ours["cross"](text, mask, image, image_mask)
        torch.testing.assert_close(text, want_text, atol=ATOL, rtol=0)
        torch.testing.assert_close(fused, x, atol=ATOL, rtol=0)
        heads = ours["heads"]
        img_feat = F.normalize(parts["vision_proj"](image[:, 0]), dim=-1)
        txt_feat = F.normalize(parts["text_proj"](want_text[:, 0]), dim=-1)
        i2t, t2i = heads.contrast(image, text)
        torch.testing.assert_close(i2t, img_feat @ txt_feat.t() / temp, atol=ATOL, rtol=0)
        torch.testing.assert_close(t2i, txt_feat @ img_feat.t() / temp, atol=ATOL, rtol=0)
        torch.testing.assert_close(heads.itm_logits(fused), parts["itm_head"](x[:, 0]), atol=ATOL, rtol=0)
        mlm = heads.mlm_logits(fused, ours["text"].embeddings.word_embeddings.weight)
        want_mlm = parts["mlm"](x)  # HF's N(0, 1) word embeddings make logits ~10x the hidden states: scale ATOL
        torch.testing.assert_close(mlm, want_mlm, atol=ATOL * want_mlm.abs().max().item(), rtol=0)


def test_xvlm_key_map_rejects_a_checkpoint_without_cross_attention():
    _, _, state = _upstream(CFG.text.hidden_size)
    del state[f"text_encoder.bert.encoder.layer.{CFG.text.text_layers}.crossattention.self.key.weight"]
    with pytest.raises(WeightsError, match="1 target keys unfilled.*cross.layers.0.cross_attn.key.weight"):
        load_with_key_map(_ours(CFG.text.hidden_size), state, xvlm_text_key_map(CFG.text))


def test_head_shapes():
    torch.manual_seed(0)
    ours = _ours(CFG.vision.width)
    ids, mask, image, image_mask = _inputs()
    with torch.no_grad():
        fused = ours["cross"](ours["text"](ids, mask), mask, image, image_mask)
        heads = ours["heads"]
        assert fused.shape == (B, T, CFG.text.hidden_size)
        assert heads.itm_logits(fused).shape == (B, 2)
        assert heads.vqa_logits(fused).shape == (B, CFG.num_answers)
        word = ours["text"].embeddings.word_embeddings.weight
        assert heads.mlm_logits(fused, word).shape == (B, T, CFG.text.vocab_size)
        assert [f.shape for f in heads.contrast(image, fused)] == [(B, B), (B, B)]


def test_itc_roles_are_symmetric_and_the_temperature_is_clamped():
    torch.manual_seed(0)
    heads = Heads(CFG).eval()
    image, text = torch.randn(4, N, CFG.vision.width), torch.randn(2, T, CFG.text.hidden_size)
    with torch.no_grad():
        i2t, t2i = heads.contrast(image, text)
        assert i2t.shape == (4, 2) and t2i.shape == (2, 4)
        torch.testing.assert_close(t2i, i2t.t())
        cosine = heads.itc.image_features(image) @ heads.itc.text_features(text).t()
        assert cosine.abs().max() <= 1.0 + 1e-6
        torch.testing.assert_close(i2t, cosine / CFG.temperature)
        heads.itc.temp.fill_(2.0)  # above X-VLM's 0.5 ceiling
        torch.testing.assert_close(heads.contrast(image, text)[0], cosine / 0.5)
        heads.itc.temp.fill_(0.0)  # below its 0.001 floor
        torch.testing.assert_close(heads.contrast(image, text)[0], cosine / 0.001)


@pytest.mark.parametrize("stack", ["text", "cross"])
def test_causal_mask_hides_later_tokens(stack):
    torch.manual_seed(0)
    ours = _ours(CFG.vision.width)
    ids, mask, image, image_mask = _inputs()
    changed = ids.clone()
    changed[:, 5] = 1000 + (ids[:, 5] + 1) % 1000  # a different token at t = 5 (row 2's is padding: no effect)

    def run(x: torch.Tensor, causal: bool) -> torch.Tensor:
        with torch.no_grad():
            if stack == "text":
                return (ours["text"].forward_causal if causal else ours["text"])(x, mask)
            text = ours["text"].embeddings(x, torch.zeros_like(x))  # token-local, so only the cross stack can leak
            return (ours["cross"].forward_causal if causal else ours["cross"])(text, mask, image, image_mask)

    before, after = run(ids, causal=True), run(changed, causal=True)
    torch.testing.assert_close(after[:, :5], before[:, :5], atol=0, rtol=0)
    assert not torch.allclose(after[0, 5:], before[0, 5:])
    bidirectional = run(ids, causal=False), run(changed, causal=False)
    assert not torch.allclose(bidirectional[0][0, :5], bidirectional[1][0, :5])  # the test could fail


class _Stack(nn.Module):
    def __init__(self, text: TextEncoder, cross: CrossModalEncoder) -> None:
        super().__init__()
        self.text, self.cross = text, cross

    def forward(self, ids, mask, image, image_mask):
        return self.cross(self.text(ids, mask), mask, image, image_mask)


def test_text_and_cross_stack_export_and_match_eager():
    torch.manual_seed(0)
    ours = _ours(CFG.vision.width)
    stack = _Stack(ours["text"], ours["cross"]).eval()
    args = _inputs()
    exported = torch.export.export(stack, args)
    with torch.no_grad():
        torch.testing.assert_close(exported.module()(*args), stack(*args), atol=1e-6, rtol=0)
