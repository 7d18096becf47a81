"""Recording EfficientVLM's hidden states and attention probabilities (python_ref/efficientvlm/taps.py): the
outputs do not change, each stack records what its docstring says (counts, shapes, which tensor is which),
attention rows are distributions that give a masked key nothing, gradients flow, and the model is left as it
was."""

import pytest
import torch

from minivlm.python_ref.efficientvlm.config import efficientvlm_tiny
from minivlm.python_ref.efficientvlm.model import EfficientVLM
from minivlm.python_ref.efficientvlm.taps import recording
from minivlm.python_ref.efficientvlm.text import Attention

CFG = efficientvlm_tiny()  # vision 2 blocks, text 1 layer, cross 2 layers, width 32, 4 heads, 17 image tokens
B, T, N, W, HEADS = 2, 7, CFG.vision.num_tokens, 32, 4
PAD_FROM = 4  # row 1 of the batch is padded from position 4 on


def _model() -> EfficientVLM:
    torch.manual_seed(0)
    model = EfficientVLM(CFG).eval()
    with torch.no_grad():  # off init, so that attention is not near-uniform
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


def _inputs():
    g = torch.Generator().manual_seed(1)
    images = torch.randn(B, 3, CFG.vision.image_size, CFG.vision.image_size, generator=g)
    ids = torch.randint(1000, CFG.text.vocab_size, (B, T), generator=g)
    mask = torch.ones(B, T)
    mask[1, PAD_FROM:] = 0.0
    return images, ids, mask


def _run(model, images, ids, mask):
    image = model.encode_image(images)
    text = model.encode_text(ids, mask)
    fused = model.fuse(text, mask, image)
    return image, text, fused, model.heads.itm_logits(fused), model.mlm_logits(fused)


def test_recording_changes_no_output():
    model, inputs = _model(), _inputs()
    with torch.no_grad():
        plain = _run(model, *inputs)
        with recording(model):
            recorded = _run(model, *inputs)
    for got, want in zip(recorded, plain, strict=True):  # same code on the same input in one process: bit-exact
        torch.testing.assert_close(got, want, atol=0, rtol=0)


def test_counts_shapes_and_which_state_is_which():
    model, (images, ids, mask) = _model(), _inputs()
    with torch.no_grad(), recording(model) as rec:
        image, text, fused, _, _ = _run(model, images, ids, mask)
    assert len(rec.vision.hidden) == CFG.vision.layers + 1 == 3
    assert len(rec.vision.attention) == CFG.vision.layers == 2
    assert len(rec.text.hidden) == CFG.text.text_layers + 1 == 2 and len(rec.text.attention) == 1
    assert len(rec.cross.hidden) == CFG.text.cross_layers + 1 == 3
    assert len(rec.cross.attention) == len(rec.cross.cross_attention) == 2
    assert all(h.shape == (B, N, W) for h in rec.vision.hidden)
    assert all(a.shape == (B, HEADS, N, N) for a in rec.vision.attention)
    assert all(h.shape == (B, T, W) for h in rec.text.hidden + rec.cross.hidden)
    assert all(a.shape == (B, HEADS, T, T) for a in rec.text.attention + rec.cross.attention)
    assert all(a.shape == (B, HEADS, T, N) for a in rec.cross.cross_attention)
    with torch.no_grad():
        # vision: [ln_pre output, block outputs...]; the last is before ln_post, and ln_post of it is the output
        emb = model.vision.ln_pre(torch.cat([model.vision.class_embedding.expand(B, 1, W),
                                             model.vision.patch_embed(images).flatten(2).transpose(1, 2)], 1)
                                  + model.vision.position_embedding)
        torch.testing.assert_close(rec.vision.hidden[0], emb, atol=0, rtol=0)
        torch.testing.assert_close(rec.vision.hidden[1], model.vision.blocks[0](emb), atol=0, rtol=0)
        torch.testing.assert_close(model.vision.ln_post(rec.vision.hidden[-1]), image, atol=0, rtol=0)
        assert not torch.allclose(rec.vision.hidden[-1], image)  # so the recorded state really is pre-ln_post
        text_emb = model.text.embeddings(ids, torch.zeros_like(ids))
        torch.testing.assert_close(rec.text.hidden[0], text_emb, atol=0, rtol=0)
    torch.testing.assert_close(rec.text.hidden[-1], text, atol=0, rtol=0)
    assert rec.cross.hidden[0] is text  # the cross stack's input: the text states it fuses
    torch.testing.assert_close(rec.cross.hidden[-1], fused, atol=0, rtol=0)


def test_attention_rows_are_distributions_and_masked_keys_get_nothing():
    model, (images, ids, mask) = _model(), _inputs()
    image_mask = torch.ones(B, N)
    image_mask[0, -5:] = 0.0  # hide 5 image tokens from batch row 0's cross-attention
    with torch.no_grad(), recording(model) as rec:
        text = model.encode_text(ids, mask)
        model.fuse(text, mask, model.encode_image(images), image_mask)
    every = rec.vision.attention + rec.text.attention + rec.cross.attention + rec.cross.cross_attention
    for probs in every:
        # float32 softmax rows sum to 1 up to rounding over at most 17 terms
        torch.testing.assert_close(probs.sum(-1), torch.ones(probs.shape[:-1]), atol=1e-6, rtol=0)
    for probs in rec.text.attention + rec.cross.attention:
        assert torch.all(probs[1, :, :, PAD_FROM:] == 0)  # padded text keys: exactly 0 (the mask underflows)
        assert torch.all(probs[0] > 0)  # nothing hidden in the unpadded row
    for probs in rec.cross.cross_attention:
        assert torch.all(probs[0, :, :, -5:] == 0) and torch.all(probs[0, :, :, :-5] > 0)
        assert torch.all(probs[1] > 0)


def test_causal_passes_are_recorded_too():
    model, (images, ids, mask) = _model(), _inputs()
    with torch.no_grad(), recording(model) as rec:
        text = model.text.forward_causal(ids, mask)
        fused = model.fuse_causal(text, mask, model.encode_image(images))
    assert len(rec.cross.hidden) == 3 and rec.cross.hidden[0] is text
    torch.testing.assert_close(rec.cross.hidden[-1], fused, atol=0, rtol=0)
    future = torch.ones(T, T).triu(1).bool()  # query t must not see keys after t
    for probs in rec.text.attention + rec.cross.attention:
        assert torch.all(probs[..., future] == 0) and torch.all(probs[0][..., ~future] > 0)


def test_gradients_flow_through_what_is_recorded():
    model, (images, ids, mask) = _model(), _inputs()
    with recording(model) as rec:
        model.encode_text(ids, mask)
        model.encode_image(images)
    # A sum of probabilities is constant (rows sum to 1): square them so that the loss depends on them.
    rec.vision.attention[0].pow(2).sum().backward()
    assert model.vision.blocks[0].attn.query.weight.grad.abs().sum() > 0
    assert model.vision.blocks[0].mlp_out.weight.grad is None  # the attention probs do not depend on it
    rec.text.hidden[1].pow(2).sum().backward()
    assert model.text.layers[0].ffn.ffn_out.weight.grad.abs().sum() > 0


def test_the_model_is_left_as_it_was_and_misuse_is_refused():
    model, images = _model(), _inputs()[0]
    attentions = [m for m in model.modules() if isinstance(m, Attention)]
    assert len(attentions) == 2 + 1 + 2 * 2
    with torch.no_grad(), recording(model) as rec:
        model.encode_image(images)
        assert all(a.record is not None for a in attentions)
        with pytest.raises(RuntimeError, match="already inside a `recording`"):
            with recording(model):
                pass
        with pytest.raises(RuntimeError, match="vision stack ran twice"):
            model.encode_image(images)
    assert len(rec.vision.hidden) == 3
    assert all(a.record is None for a in attentions)
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())
    with torch.no_grad():  # and a new recording starts afresh
        with recording(model) as again:
            model.encode_image(images)
    assert len(again.vision.hidden) == 3 and len(again.text.hidden) == 0
