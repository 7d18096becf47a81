"""Distillation on real (tiny) EfficientVLMs: `init_student_from_teacher` (sdk/training/distill_init.py) copies
exactly what the layer map pairs, refuses what cannot pair, and with taps.recording and distill_losses the
terms vanish where student and teacher compute the same thing, and train the student only."""

from dataclasses import replace

import pytest
import torch

from minivlm.errors import ConfigError
from minivlm.python_ref.efficientvlm.config import (efficientvlm_demo_student, efficientvlm_demo_teacher,
                                                    efficientvlm_tiny)
from minivlm.python_ref.efficientvlm.model import EfficientVLM
from minivlm.python_ref.efficientvlm.taps import recording
from minivlm.training.distill_init import init_student_from_teacher, teacher_key
from minivlm.training.distill_losses import kd_terms, kd_total, states_of

TINY = efficientvlm_tiny()  # 2 vision / 1 text / 2 cross layers: the text stack cannot halve, so the pair is built
TEACHER = replace(TINY, vision=replace(TINY.vision, layers=4), text=replace(TINY.text, vocab_size=100, text_layers=2))
STUDENT = replace(TEACHER, vision=replace(TEACHER.vision, layers=2),
                  text=replace(TEACHER.text, text_layers=1, cross_layers=1))
B, T = 2, 6


def _model(cfg, seed: int) -> EfficientVLM:
    torch.manual_seed(seed)
    model = EfficientVLM(cfg)
    with torch.no_grad():  # off init, so that a tensor copied from the wrong place shows
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


def _pair():
    teacher, student = _model(TEACHER, 0).eval(), _model(STUDENT, 1)
    assert init_student_from_teacher(student, teacher) == []  # same widths, same FFN: every tensor has a source
    return teacher, student


def test_teacher_key_names_layer_2i_for_layer_i():
    assert teacher_key("vision.blocks.0.attn.query.weight") == "vision.blocks.1.attn.query.weight"
    assert teacher_key("vision.blocks.5.mlp_in.bias") == "vision.blocks.11.mlp_in.bias"
    assert teacher_key("text.layers.2.ffn.ffn_norm.weight") == "text.layers.5.ffn.ffn_norm.weight"
    assert teacher_key("cross.layers.1.cross_attn.key.weight") == "cross.layers.3.cross_attn.key.weight"
    assert teacher_key("heads.itc.temp") == "heads.itc.temp"
    assert teacher_key("vision.ln_post.weight") == "vision.ln_post.weight"


def test_the_copy_is_exact_for_embeddings_heads_and_mapped_layers():
    teacher, student = _pair()
    s, t = student.state_dict(), teacher.state_dict()
    outside = [n for n in s if not n.startswith(("vision.blocks.", "text.layers.", "cross.layers."))]
    assert {"vision.patch_embed.weight", "vision.class_embedding", "vision.position_embedding", "vision.ln_pre.weight",
            "vision.ln_post.bias", "text.embeddings.word_embeddings.weight", "heads.itc.temp",
            "heads.itm_head.fc2.weight", "heads.mlm_head.bias", "heads.vqa_head.fc1.weight"} <= set(outside)
    for name in outside:  # embeddings, ln_pre / ln_post, heads: by name
        assert torch.equal(s[name], t[name]), name
    layers = {"vision.blocks": (student.vision.blocks, teacher.vision.blocks),
              "text.layers": (student.text.layers, teacher.text.layers),
              "cross.layers": (student.cross.layers, teacher.cross.layers)}
    for prefix, (s_layers, t_layers) in layers.items():
        for k, layer in enumerate(s_layers):  # student layer k (0-based) <- teacher layer 2k + 1
            mapped, other = t_layers[2 * k + 1].state_dict(), t_layers[2 * k].state_dict()
            for name, tensor in layer.state_dict().items():
                assert torch.equal(tensor, mapped[name]), f"{prefix}.{k}.{name}"
            assert not all(torch.equal(tensor, other[n]) for n, tensor in layer.state_dict().items())


def test_mismatched_pairs_are_refused_in_one_line():
    teacher = _model(TEACHER, 0)
    narrow = replace(STUDENT, text=replace(STUDENT.text, hidden_size=16, intermediate_size=32))
    with pytest.raises(ConfigError) as e:
        init_student_from_teacher(_model(narrow, 1), teacher)
    assert str(e.value) == "the student's text width 16 differs from the teacher's 32: layers copy only at the same width and heads"
    three = replace(STUDENT, vision=replace(STUDENT.vision, layers=3))
    with pytest.raises(ConfigError) as e:
        init_student_from_teacher(_model(three, 1), teacher)
    assert str(e.value) == "vision.blocks: a teacher of 4 layers is not twice (or another whole multiple of) a student of 3 layers"


def test_the_demo_student_keeps_only_its_narrower_feed_forward_weights():
    student, teacher = EfficientVLM(efficientvlm_demo_student()), EfficientVLM(efficientvlm_demo_teacher())
    left = init_student_from_teacher(student, teacher)
    # 3x instead of 4x wide: the first Linear's weight and bias and the second's weight differ in shape; the second
    # Linear's bias (width 192) has the teacher's shape and is copied.
    want = [f"vision.blocks.{k}.{n}" for k in range(4) for n in ("mlp_in.weight", "mlp_in.bias", "mlp_out.weight")]
    want += [f"{stack}.{k}.ffn.{n}" for stack in ("text.layers", "cross.layers") for k in range(2)
             for n in ("ffn_in.weight", "ffn_in.bias", "ffn_out.weight")]
    assert sorted(left) == sorted(want)
    assert torch.equal(student.vision.blocks[3].mlp_out.bias, teacher.vision.blocks[7].mlp_out.bias)


def _batch():
    g = torch.Generator().manual_seed(2)
    images = torch.randn(B, 3, TINY.vision.image_size, TINY.vision.image_size, generator=g)
    ids = torch.randint(5, 100, (B, T), generator=g)
    mask = torch.ones(B, T)
    mask[1, 4:] = 0.0
    return images, ids, mask


def _pass(model, images, ids, mask):
    with recording(model) as rec:
        fused = model.fuse(model.encode_text(ids, mask), mask, model.encode_image(images))
    logits = {"itm": model.heads.itm_logits(fused), "mlm": model.mlm_logits(fused)}
    return states_of(rec, mask), logits


def test_distilling_recorded_models():
    teacher, student = _pair()
    with torch.no_grad():  # teacher vision layers 1 and 3 (1-based), the unmapped ones, become identities
        for block in teacher.vision.blocks[::2]:
            for linear in (block.attn.out, block.mlp_out):
                linear.weight.zero_()
                linear.bias.zero_()
    batch = _batch()
    with torch.no_grad():
        t_states, t_logits = _pass(teacher, *batch)
    s_states, s_logits = _pass(student, *batch)
    terms = kd_terms(s_states, t_states, s_logits, t_logits, {"mlm": batch[2]})
    assert sorted(terms) == ["cross_attention", "cross_cross_attention", "cross_hidden", "itm_logits", "mlm_logits",
                             "text_attention", "text_hidden", "vision_attention", "vision_hidden"]
    # Vision: teacher state 2i is student state i, computed by the same code from the same weights and input.
    assert terms["vision_hidden"].item() == 0.0 and terms["vision_attention"].item() == 0.0
    # Text: the embeddings (pair (0, 0)) are the same; teacher layer 1 is no identity, so layer outputs differ.
    assert torch.equal(s_states["text"].hidden[0], t_states["text"].hidden[0])
    assert all(terms[n].item() > 0 for n in terms if not n.startswith("vision"))
    student.zero_grad()
    kd_total(terms).backward()
    assert student.text.layers[0].ffn.ffn_out.weight.grad.abs().sum() > 0
    assert student.cross.layers[0].cross_attn.query.weight.grad.abs().sum() > 0
    assert student.heads.itm_head.fc2.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in teacher.parameters())
