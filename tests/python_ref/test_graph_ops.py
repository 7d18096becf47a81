"""graph_ops: the arithmetic spellings equal the comparisons and argmax they replace."""

import torch

from minivlm.python_ref.graph_ops import constant, first_max_one_hot, step


def test_step_is_greater_or_equal_zero_exactly():
    x = torch.tensor([-3.0, -1.0, -0.5, -1e-30, -0.0, 0.0, 1e-30, 0.5, 1.0, 7.25, 1e30, -1e30])
    assert torch.equal(step(x), (x >= 0).float())
    a, b = torch.randn(1000), torch.randn(1000)
    b[:100] = a[:100]  # equal pairs: a >= b holds
    assert torch.equal(step(a - b), (a >= b).float())


def test_first_max_one_hot_is_argmax_with_ties_to_the_first():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randint(-3, 4, (400, 9), generator=gen).float()  # many ties
    want = torch.nn.functional.one_hot(logits.argmax(dim=1), 9).float()
    assert torch.equal(first_max_one_hot(logits), want)
    want = torch.nn.functional.one_hot(logits[:, 1:].argmax(dim=1) + 1, 9).float()
    got = first_max_one_hot(logits, skip_first=True)
    assert torch.equal(got, want)
    assert got[:, 0].sum() == 0


def test_constant_takes_dtype_and_device():
    like = torch.zeros(2, dtype=torch.float64)
    c = constant([1.0, 2.5], like)
    assert c.dtype == torch.float64 and c.tolist() == [1.0, 2.5]
