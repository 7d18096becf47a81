"""The whole EfficientVLM (python_ref/efficientvlm/model.py): its methods compose the parts, a whole X-VLM
checkpoint loads through `xvlm_key_map` (round trip, loud on a missing or extra key), the parameter budget
(profile.py) of the teacher and the paper's student matches counts written from the architecture, and greedy
captioning (generate.py) matches a hand-rolled loop."""

import pytest
import torch

from dataclasses import replace

from minivlm.python_ref.efficientvlm.config import EfficientVLMConfig, efficientvlm_paper, efficientvlm_teacher, efficientvlm_tiny
from minivlm.python_ref.efficientvlm.generate import greedy_caption, greedy_caption_ids, prompt_ids
from minivlm.python_ref.efficientvlm.model import EfficientVLM, xvlm_key_map
from minivlm.python_ref.efficientvlm.profile import parameter_budget
from minivlm.python_ref.errors import InputError, WeightsError
from minivlm.python_ref.key_maps import load_with_key_map
from minivlm.python_ref.tokenizer import Tokenizer

CFG = efficientvlm_tiny()
B, T = 2, 7


def _model(seed: int, cfg: EfficientVLMConfig = CFG) -> EfficientVLM:
    torch.manual_seed(seed)
    model = EfficientVLM(cfg).eval()
    with torch.no_grad():  # off init, so that a swapped or unloaded tensor shows
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


def _inputs():
    g = torch.Generator().manual_seed(1)
    s = CFG.vision.image_size
    images = torch.randn(B, 3, s, s, generator=g)
    ids = torch.randint(1000, CFG.text.vocab_size, (B, T), generator=g)
    mask = torch.ones(B, T)
    mask[1, 4:] = 0.0
    return images, ids, mask


def test_methods_compose_the_parts():
    model = _model(0)
    images, ids, mask = _inputs()
    with torch.no_grad():
        image, text = model.vision(images), model.text(ids, mask)
        assert image.shape == (B, CFG.vision.num_tokens, CFG.vision.width)
        fused = model.cross(text, mask, image, torch.ones(B, CFG.vision.num_tokens))
        torch.testing.assert_close(model.encode_image(images), image, atol=0, rtol=0)
        torch.testing.assert_close(model.encode_text(ids, mask), text, atol=0, rtol=0)
        torch.testing.assert_close(model.fuse(text, mask, image), fused, atol=0, rtol=0)
        for got, want in zip(model.itc_logits(images, ids, mask), model.heads.contrast(image, text)):
            torch.testing.assert_close(got, want, atol=0, rtol=0)
        itm, vqa = model.itm_logits(images, ids, mask), model.vqa_logits(images, ids, mask)
        torch.testing.assert_close(itm, model.heads.itm_head(fused[:, 0]), atol=0, rtol=0)
        torch.testing.assert_close(vqa, model.heads.vqa_head(fused[:, 0]), atol=0, rtol=0)
        assert itm.shape == (B, 2) and vqa.shape == (B, CFG.num_answers)
        mlm = model.mlm_logits(fused)
        word = model.text.embeddings.word_embeddings.weight
        torch.testing.assert_close(mlm, model.heads.mlm_head(fused, word), atol=0, rtol=0)
        assert mlm.shape == (B, T, CFG.text.vocab_size)


def test_image_mask_and_causal_fusion_are_used():
    model = _model(0)
    images, ids, mask = _inputs()
    with torch.no_grad():
        image, text = model.encode_image(images), model.encode_text(ids, mask)
        part = torch.ones(B, CFG.vision.num_tokens)
        part[:, -3:] = 0.0
        assert not torch.allclose(model.fuse(text, mask, image, part), model.fuse(text, mask, image))
        causal = model.fuse_causal(text, mask, image)
        torch.testing.assert_close(causal, model.cross.forward_causal(text, mask, image, torch.ones_like(part)),
                                   atol=0, rtol=0)
        assert not torch.allclose(causal[:, 0], model.fuse(text, mask, image)[:, 0])


# ---- a whole X-VLM checkpoint --------------------------------------------------------------------------------

# Our name -> X-VLM's (models/xvlm.py, models/xbert.py, models/clip_vit.py), written out by hand.
_VISION = {"patch_embed.weight": "patch_embed.weight", "class_embedding": "class_embedding",
           "position_embedding": "pos_embed.weight", "ln_pre.": "pre_layrnorm.", "ln_post.": "post_layernorm.",
           "blocks.": "encoder.layers.", ".ln_1.": ".layer_norm1.", ".ln_2.": ".layer_norm2.",
           ".attn.query.": ".self_attn.q_proj.", ".attn.key.": ".self_attn.k_proj.",
           ".attn.value.": ".self_attn.v_proj.", ".attn.out.": ".self_attn.out_proj.",
           ".mlp_in.": ".mlp.fc1.", ".mlp_out.": ".mlp.fc2."}
_LAYER = {".attn.query.": ".attention.self.query.", ".attn.key.": ".attention.self.key.",
          ".attn.value.": ".attention.self.value.", ".attn.out.": ".attention.output.dense.",
          ".attn_norm.": ".attention.output.LayerNorm.", ".cross_attn.out.": ".crossattention.output.dense.",
          ".cross_attn.": ".crossattention.self.", ".cross_norm.": ".crossattention.output.LayerNorm.",
          ".ffn.ffn_in.": ".intermediate.dense.", ".ffn.ffn_out.": ".output.dense.",
          ".ffn.ffn_norm.": ".output.LayerNorm."}
_HEADS = {"heads.mlm_head.transform.": "text_encoder.cls.predictions.transform.dense.",
          "heads.mlm_head.transform_norm.": "text_encoder.cls.predictions.transform.LayerNorm.",
          "heads.mlm_head.bias": "text_encoder.cls.predictions.bias", "heads.itc.vision_proj.": "vision_proj.",
          "heads.itc.text_proj.": "text_proj.", "heads.itc.temp": "temp", "heads.itm_head.fc1.": "itm_head.0.",
          "heads.itm_head.norm.": "itm_head.1.", "heads.itm_head.fc2.": "itm_head.3."}


def _replace_all(key: str, table: dict[str, str]) -> str:
    for ours, theirs in table.items():
        key = key.replace(ours, theirs)
    return key


def _theirs(key: str) -> str | None:
    bert = "text_encoder.bert."
    if key.startswith("vision."):
        return "vision_encoder." + _replace_all(key[len("vision."):], _VISION)
    if key.startswith("text.embeddings."):
        return bert + "embeddings." + key[len("text.embeddings."):].replace("layer_norm", "LayerNorm")
    for stack, offset in (("text.layers.", 0), ("cross.layers.", CFG.text.text_layers)):
        if key.startswith(stack):
            index, rest = key[len(stack):].split(".", 1)
            return _replace_all(f"{bert}encoder.layer.{int(index) + offset}.{rest}", _LAYER)
    if key.startswith("heads.vqa_head."):
        return None  # X-VLM has no VQA classifier
    return _replace_all(key, _HEADS)


def _xvlm_state(model: EfficientVLM) -> dict[str, torch.Tensor]:
    """`model`'s weights under X-VLM's names, with the extras a real checkpoint carries: position-id buffers,
    xbert's tied MLM decoder, and the grounding `bbox_head`."""
    state = {_theirs(k): v for k, v in model.state_dict().items() if _theirs(k) is not None}
    predictions = "text_encoder.cls.predictions."
    state |= {"vision_encoder.position_ids": torch.arange(CFG.vision.num_tokens)[None],
              "text_encoder.bert.embeddings.position_ids": torch.arange(CFG.text.max_position_embeddings)[None],
              predictions + "decoder.weight": state["text_encoder.bert.embeddings.word_embeddings.weight"],
              predictions + "decoder.bias": state[predictions + "bias"],
              "bbox_head.0.weight": torch.zeros(4, 4), "bbox_head.3.bias": torch.zeros(4)}
    return state


def test_whole_xvlm_checkpoint_round_trip():
    source, target = _model(0), _model(1)
    left = load_with_key_map(target, _xvlm_state(source), xvlm_key_map(CFG))
    assert set(left) == {k for k in source.state_dict() if k.startswith("heads.vqa_head.")} and left
    for key, value in source.state_dict().items():
        if not key.startswith("heads.vqa_head."):
            assert torch.equal(target.state_dict()[key], value), key
    images, ids, mask = _inputs()
    with torch.no_grad():
        torch.testing.assert_close(target.itm_logits(images, ids, mask), source.itm_logits(images, ids, mask),
                                   atol=0, rtol=0)


@pytest.mark.parametrize(("drop", "match"), [
    ("vision_encoder.encoder.layers.1.mlp.fc2.bias", r"1 target keys unfilled \(vision\.blocks\.1\.mlp_out\.bias"),
    ("text_encoder.bert.encoder.layer.2.crossattention.self.value.weight",
     r"1 target keys unfilled \(cross\.layers\.1\.cross_attn\.value\.weight"),
])
def test_missing_key_fails_naming_it(drop, match):
    state = _xvlm_state(_model(0))
    del state[drop]
    with pytest.raises(WeightsError, match=match):
        load_with_key_map(_model(1), state, xvlm_key_map(CFG))


@pytest.mark.parametrize("extra", ["vision_encoder.encoder.layers.0.extra.weight", "text_encoder.bert.pooler.dense.bias",
                                   "vision_encoder.encoder.layers.2.layer_norm1.weight"])
def test_extra_key_fails_naming_it(extra):
    state = _xvlm_state(_model(0)) | {extra: torch.zeros(CFG.vision.width)}
    with pytest.raises(WeightsError, match=r"1 source keys unused \(" + extra.replace(".", r"\.")):
        load_with_key_map(_model(1), state, xvlm_key_map(CFG))


# ---- parameter budget ----------------------------------------------------------------------------------------


def _linear(i: int, o: int) -> int:
    return i * o + o


def _expected_budget(vision_layers: int, text_layers: int, cross_layers: int) -> dict[str, int]:
    """Written from the architecture: CLIP ViT-B/16 at 224² (OpenAI clip/model.py without `proj`), BERT-base
    (vocab 30522, 512 positions, 2 token types), xbert cross layers with K/V from the ViT width 768, X-VLM's
    heads (embed_dim 256, `build_mlp`), and the SDK's VQA classifier over VQA v2's 3129 answers."""
    w, h, ffn, v = 768, 768, 3072, 30522
    ln = 2 * h
    vit_block = 4 * _linear(w, w) + _linear(w, 4 * w) + _linear(4 * w, w) + 2 * 2 * w
    vision = 3 * 16 * 16 * w + w + (14 * 14 + 1) * w + 2 * 2 * w + vision_layers * vit_block
    bert_layer = 4 * _linear(h, h) + ln + _linear(h, ffn) + _linear(ffn, h) + ln
    cross_layer = bert_layer + _linear(h, h) + 2 * _linear(w, h) + _linear(h, h) + ln
    heads = (_linear(w, 256) + _linear(h, 256) + 1  # ITC projections and temperature
             + _linear(h, 2 * h) + 2 * 2 * h + _linear(2 * h, 2)  # ITM build_mlp
             + _linear(h, h) + ln + v)  # MLM transform, its LayerNorm, the decoder bias (weight tied)
    budget = {"vision": vision, "text embeddings": (v + 512 + 2) * h + ln, "text layers": text_layers * bert_layer,
              "cross layers": cross_layers * cross_layer, "heads (ITC, ITM, MLM)": heads,
              "VQA head": _linear(h, 2 * h) + 2 * 2 * h + _linear(2 * h, 3129)}
    budget["total"] = sum(budget.values())
    return budget


@pytest.mark.parametrize(("preset", "layers", "total"), [
    (efficientvlm_teacher, (12, 6, 6), 217_071_734),
    (efficientvlm_paper, (6, 3, 3), 124_925_558),
])
def test_parameter_budget_matches_the_architecture(preset, layers, total):
    with torch.device("meta"):  # shapes only: the teacher would take ~870 MB
        model = EfficientVLM(preset())
    budget = parameter_budget(model)
    assert budget == _expected_budget(*layers)
    assert budget["total"] == total
    # Without the SDK's VQA classifier (X-VLM has none): the figures the paper's model sizes derive from.
    assert total - budget["VQA head"] == {"efficientvlm-teacher": 211_078_205,
                                          "efficientvlm-paper": 118_932_029}[model.cfg.name]


# ---- greedy captioning ---------------------------------------------------------------------------------------


def _hand_rolled(model: EfficientVLM, image: torch.Tensor, prefix: list[int], sep_id: int) -> list[int]:
    """One image, a sequence that grows by one token per step (no padding), the next token read at its end."""
    ids, out = list(prefix), []
    with torch.no_grad():
        tokens = model.vision(image[None])
        while len(ids) < model.cfg.text.max_text_len:
            x, mask = torch.tensor([ids]), torch.ones(1, len(ids))
            fused = model.cross.forward_causal(model.text.forward_causal(x, mask), mask, tokens,
                                               torch.ones(1, tokens.shape[1]))
            token = int(model.mlm_logits(fused)[0, -1].argmax())
            if token == sep_id:
                break
            ids.append(token)
            out.append(token)
    return out


def test_greedy_caption_matches_a_hand_rolled_loop():
    tokenizer = Tokenizer.default()
    cfg = replace(CFG, text=replace(CFG.text, max_text_len=10))  # 5 steps after the 5-token prompt: seconds
    model, (images, _, _) = _model(0, cfg), _inputs()
    prefix = prompt_ids(tokenizer)
    assert tokenizer.decode(prefix) == "a picture of" and prefix[0] == tokenizer.cls_id
    got = greedy_caption_ids(model, images, prefix, tokenizer.sep_id)
    want = [_hand_rolled(model, image, prefix, tokenizer.sep_id) for image in images]
    assert got == want and len(want[0]) == cfg.text.max_text_len - len(prefix)  # random weights: no [SEP]
    assert greedy_caption(model, images, tokenizer) == [tokenizer.decode(ids) for ids in want]
    stop = want[0][3]  # pretend the 4th generated token of image 0 is [SEP]: decoding stops before it
    cut = greedy_caption_ids(model, images, prefix, stop)
    assert cut == [ids[: ids.index(stop)] if stop in ids else ids for ids in want] and len(cut[0]) <= 3


@pytest.mark.parametrize("length", [0, CFG.text.max_text_len])
def test_prompt_that_leaves_no_room_fails(length):
    with pytest.raises(InputError, match=f"prompt has {length} tokens; it needs 1 to {CFG.text.max_text_len - 1}"):
        greedy_caption_ids(_model(0), _inputs()[0], [101] * length, 102)
