"""EfficientVLM's distillation terms (sdk/training/distill_losses.py) on small tensors: the layer map, each term
against numbers worked out by hand, exact zero when the teacher's mapped states are the student's (and only the
mapped ones count), padded positions that count nowhere, and gradients that reach the student only."""

import pytest
import torch

from minivlm.errors import ConfigError, InputError
from minivlm.training.distill_losses import (KD_WEIGHT, TASK_WEIGHT, StackStates, attention_mse, combine,
                                             cross_attention_mse, hidden_mse, kd_terms, kd_total, layer_map, logit_kl)


def test_layer_map_pairs_student_i_with_teacher_2i_embedding_included():
    assert layer_map(4, 8) == [(0, 0), (1, 2), (2, 4), (3, 6), (4, 8)]
    assert layer_map(2, 4) == [(0, 0), (1, 2), (2, 4)]
    assert layer_map(1, 2) == [(0, 0), (1, 2)]
    assert layer_map(3, 3) == [(0, 0), (1, 1), (2, 2), (3, 3)]  # a copy of the teacher
    assert layer_map(2, 6) == [(0, 0), (1, 3), (2, 6)]
    for student, teacher in ((0, 0), (4, 2)):
        with pytest.raises(ConfigError):
            layer_map(student, teacher)
    with pytest.raises(ConfigError) as e:
        layer_map(3, 8)
    assert str(e.value) == "a teacher of 8 layers is not twice (or another whole multiple of) a student of 3 layers"


# ---- each term against a hand-worked example ------------------------------------------------------------------

def _t(rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32)


JUNK = _t([[[100.0, -100.0], [100.0, 100.0]]])  # an unmapped teacher state: must not matter


def test_hidden_mse_by_hand():
    # One student layer, two teacher layers; B=1, T=2, H=2; token 1 is padding.
    student = StackStates([_t([[[1, 2], [9, 9]]]), _t([[[3, 3], [7, 7]]])], [torch.zeros(1, 1, 2, 2)], _t([[1, 0]]))
    teacher = StackStates([_t([[[0, 0], [5, 5]]]), JUNK, _t([[[1, 3], [0, 0]]])], [torch.zeros(1, 1, 2, 2)] * 2)
    # pair (0, 0), token 0: diffs (1, 2) -> squares 1, 4 -> mean 2.5
    # pair (1, 2), token 0: diffs (2, 0) -> squares 4, 0 -> mean 2.0;   mean over pairs: (2.5 + 2.0) / 2 = 2.25
    assert hidden_mse(student, teacher).item() == 2.25
    # Without a mask (image tokens) token 1 counts: pair (0, 0): (1 + 4 + 16 + 16) / 4 = 9.25,
    # pair (1, 2): (4 + 0 + 49 + 49) / 4 = 25.5;   mean (9.25 + 25.5) / 2 = 17.375
    unmasked = StackStates(student.hidden, student.attention)
    assert hidden_mse(unmasked, teacher).item() == 17.375


def test_attention_mse_by_hand():
    # B=1, 1 head, T=3 with token 2 padded: the 2 x 2 valid block counts, the padded row and column do not.
    s = _t([[[[0.5, 0.5, 0.9], [0.25, 0.75, 0.9], [0.9, 0.9, 0.9]]]])
    t = _t([[[[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.0, 0.0, 0.0]]]])
    hidden = [torch.zeros(1, 3, 2)]
    student = StackStates(hidden * 2, [s], _t([[1, 1, 0]]))
    teacher = StackStates(hidden * 3, [torch.full((1, 1, 3, 3), 7.0), t])  # layer 1 unmapped, layer 2 <-> 1
    # valid diffs: -0.5, 0.5, -0.25, 0.25 -> squares 0.25, 0.25, 0.0625, 0.0625 -> sum 0.625 / 4 = 0.15625
    assert attention_mse(student, teacher).item() == 0.15625


def test_cross_attention_mse_by_hand():
    # T=3 text tokens (token 2 padded) attend to N=2 image tokens (token 1 hidden by the context mask).
    s = _t([[[[0.5, 0.5], [1.0, 0.0], [0.3, 0.7]]]])
    t = _t([[[[0.25, 0.75], [0.5, 0.5], [0.0, 1.0]]]])
    hidden = [torch.zeros(1, 3, 2)]
    self_attn = torch.zeros(1, 1, 3, 3)
    student = StackStates(hidden * 2, [self_attn], _t([[1, 1, 0]]), [s], _t([[1, 0]]))
    teacher = StackStates(hidden * 3, [self_attn] * 2, None, [torch.ones(1, 1, 3, 2), t])
    # valid: (query 0, key 0) and (query 1, key 0): diffs 0.25, 0.5 -> squares 0.0625, 0.25 -> mean 0.15625
    assert cross_attention_mse(student, teacher).item() == 0.15625


def test_logit_kl_by_hand():
    ln3 = 1.0986122886681098  # ln 3: teacher logits (ln 3, 0) are probabilities (3/4, 1/4)
    student, teacher = _t([[0.0, 0.0], [2.0, 1.0]]), _t([[ln3, 0.0], [2.0, 1.0]])
    # row 0: KL((3/4, 1/4) || (1/2, 1/2)) = 0.75 ln 1.5 + 0.25 ln 0.5 = 0.75 * 0.4054651 - 0.25 * 0.6931472
    #        = 0.3040988 - 0.1732868 = 0.1308120;  row 1: identical logits, 0;  batch mean 0.0654060
    assert logit_kl(student, teacher).item() == pytest.approx(0.0654060, abs=1e-6)
    # T = 2: the teacher's (ln 3 / 2, 0) are (√3, 1) / (√3 + 1) = (0.6339746, 0.3660254), the student's still uniform;
    # KL = 0.6339746 ln 1.2679492 + 0.3660254 ln 0.7320508 = 0.0363408; * T² = 0.1453631; batch mean 0.0726816
    assert logit_kl(student, teacher, temperature=2.0).item() == pytest.approx(0.0726816, abs=1e-6)
    # MLM-shaped (B=1, T=2, V=4), position 1 masked out: teacher (ln 2, 0, 0, 0) -> (2/5, 1/5, 1/5, 1/5),
    # student uniform: KL = 0.4 ln 1.6 + 3 * 0.2 ln 0.8 = 0.4 * 0.4700036 - 0.6 * 0.2231436 = 0.0541153
    ln2 = 0.6931471805599453
    s = _t([[[0, 0, 0, 0], [9, -9, 0, 0]]])
    t = _t([[[ln2, 0, 0, 0], [-9, 9, 0, 0]]])
    assert logit_kl(s, t, _t([[1, 0]])).item() == pytest.approx(0.0541153, abs=1e-6)


def test_terms_are_named_summed_and_combined_with_the_papers_weights():
    student, teacher = _stacks(0)
    terms = kd_terms(student, teacher, {"itm": _t([[0.0, 0.0]])}, {"itm": _t([[1.0, 0.0]])})
    assert sorted(terms) == ["cross_attention", "cross_cross_attention", "cross_hidden", "itm_logits",
                             "vision_attention", "vision_hidden"]
    assert kd_total(terms).item() == pytest.approx(sum(v.item() for v in terms.values()), rel=1e-6)
    assert (TASK_WEIGHT, KD_WEIGHT) == (0.6, 0.4)
    assert combine(_t(1.0), _t(2.0)).item() == pytest.approx(1.4)  # 0.6 * 1 + 0.4 * 2


# ---- identity, perturbation, unmapped layers, masks -----------------------------------------------------------

B, T, N, H, HEADS, S_LAYERS = 2, 5, 4, 6, 2, 2
TEXT_MASK = _t([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])


def _probs(g, *shape) -> torch.Tensor:
    return torch.softmax(torch.randn(*shape, generator=g), -1)


def _stacks(seed: int):
    """Student stacks of 2 layers, and teacher stacks of 4 whose state 2i (attention of layer 2i) is the
    student's i: every term is 0. Odd teacher states are random."""
    g = torch.Generator().manual_seed(seed)
    student, teacher = {}, {}
    for name, mask, cross in (("vision", None, False), ("cross", TEXT_MASK, True)):
        hidden = [torch.randn(B, T, H, generator=g) for _ in range(S_LAYERS + 1)]
        attn = [_probs(g, B, HEADS, T, T) for _ in range(S_LAYERS)]
        xattn = [_probs(g, B, HEADS, T, N) for _ in range(S_LAYERS)] if cross else []
        student[name] = StackStates(hidden, attn, mask, xattn, None)
        t_hidden = [hidden[i // 2] if i % 2 == 0 else torch.randn(B, T, H, generator=g) for i in range(2 * S_LAYERS + 1)]
        t_attn = [attn[i // 2] if i % 2 else _probs(g, B, HEADS, T, T) for i in range(2 * S_LAYERS)]
        t_xattn = [xattn[i // 2] if i % 2 else _probs(g, B, HEADS, T, N) for i in range(2 * S_LAYERS)] if cross else []
        teacher[name] = StackStates(t_hidden, t_attn, mask, t_xattn, None)
    return student, teacher


def _replace(states: StackStates, field: str, index: int, value: torch.Tensor) -> StackStates:
    tensors = list(getattr(states, field))
    tensors[index] = value
    return StackStates(**{**states.__dict__, field: tensors})


def test_a_teacher_whose_mapped_states_are_the_students_gives_exactly_zero():
    student, teacher = _stacks(1)
    terms = kd_terms(student, teacher)
    assert len(terms) == 5 and all(v.item() == 0.0 for v in terms.values())


# (stack, list, a mapped teacher index, an unmapped one): hidden states 2i are mapped, attention of layers 2i
# (list index 2i - 1) too; odd states and odd layers are not.
@pytest.mark.parametrize("stack,field,mapped,unmapped", [
    ("vision", "hidden", 0, 1), ("vision", "hidden", 4, 3), ("vision", "attention", 1, 0),
    ("cross", "hidden", 2, 3), ("cross", "attention", 3, 2), ("cross", "cross_attention", 1, 2)])
def test_a_mapped_teacher_state_moved_shows_an_unmapped_one_does_not(stack, field, mapped, unmapped):
    student, teacher = _stacks(2)
    term, states = f"{stack}_{field}", teacher[stack]
    moved = _replace(states, field, mapped, getattr(states, field)[mapped] + 0.01)
    assert kd_terms(student, {**teacher, stack: moved})[term].item() > 0
    other = _replace(states, field, unmapped, torch.rand_like(getattr(states, field)[unmapped]))
    assert kd_terms(student, {**teacher, stack: other})[term].item() == 0.0


def test_padded_positions_do_not_count():
    student, teacher = _stacks(3)
    base = kd_terms(student, teacher)
    s = student["cross"]
    hidden = [h.clone() for h in s.hidden]
    hidden[1][1, 3:] += 5.0  # padded tokens of batch row 1
    attn = [a.clone() for a in s.attention]
    attn[0][1, :, 3:, :] += 5.0  # padded query rows
    attn[1][1, :, :, 4] += 5.0  # a padded key column
    xattn = [a.clone() for a in s.cross_attention]
    xattn[0][1, :, 4:, :] += 5.0  # padded queries of the cross-attention
    moved = kd_terms({**student, "cross": StackStates(hidden, attn, s.mask, xattn)}, teacher)
    for name in ("cross_hidden", "cross_attention", "cross_cross_attention"):
        assert torch.equal(moved[name], base[name]) and base[name] == 0
    # and a valid one does count
    hidden[1][1, 2] += 5.0
    assert kd_terms({**student, "cross": StackStates(hidden, attn, s.mask, xattn)}, teacher)["cross_hidden"] > 0
    # logits: a masked row does not count either
    mask = _t([[1, 0]])
    s_logits, t_logits = _t([[[0, 1, 2], [5, 5, 5]]]), _t([[[2, 1, 0], [0, 0, 0]]])
    moved_logits = s_logits.clone()
    moved_logits[0, 1] = _t([-9, 9, 0])
    assert torch.equal(logit_kl(moved_logits, t_logits, mask), logit_kl(s_logits, t_logits, mask))


def test_gradients_reach_the_student_only():
    student, teacher = _stacks(4)
    s_hidden = [h.clone().requires_grad_() for h in student["vision"].hidden]
    t_leaves = [h.clone().requires_grad_() for h in teacher["vision"].hidden]
    t_hidden = [h + 1.0 for h in t_leaves]  # off the student's states, so that the loss is not at its minimum
    s_logits, t_logits = torch.zeros(2, 3, requires_grad=True), torch.randn(2, 3, requires_grad=True)
    s = StackStates(s_hidden, student["vision"].attention)
    t = StackStates(t_hidden, teacher["vision"].attention)
    kd_total(kd_terms({"vision": s}, {"vision": t}, {"vqa": s_logits}, {"vqa": t_logits})).backward()
    assert s_hidden[1].grad.abs().sum() > 0 and s_logits.grad.abs().sum() > 0
    assert all(h.grad is None for h in t_leaves) and t_logits.grad is None


def test_mismatched_inputs_are_refused():
    student, teacher = _stacks(5)
    with pytest.raises(InputError, match="student's stacks"):
        kd_terms(student, {"vision": teacher["vision"]})
    v = student["vision"]
    with pytest.raises(InputError, match="hidden states for 2 layers"):
        hidden_mse(StackStates(v.hidden[:2], v.attention), teacher["vision"])
    with pytest.raises(InputError, match=r"hidden state 1 <-> 2: the student's \(2, 5, 3\)"):
        hidden_mse(_replace(v, "hidden", 1, torch.zeros(B, T, 3)), teacher["vision"])
    with pytest.raises(ConfigError, match=r"teacher of 4 layers is not twice \(or another whole multiple of\) a student of 3"):
        attention_mse(StackStates([*v.hidden, v.hidden[-1]], [*v.attention, v.attention[-1]]), teacher["vision"])
