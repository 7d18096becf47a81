"""A build's batched graph: `batched_spec` stacks distinct real calls at the graph's batch, and a runner steps a
batch of any size through it in full calls plus one padded call, row for row what single calls give."""

import pytest
import torch

from minivlm.converters.specs import GraphSpec, TensorSpec, batched_spec, stack_calls
from minivlm.runtime import _Graph


def _entry(batch: int) -> dict:
    tensor = lambda name, shape: {"name": name, "shape": shape, "batch_axis": 1 if name in ("cache_keys", "new_keys") else 0}  # noqa: E731
    return {"inputs": [tensor("token_ids", [batch, 2]), tensor("cache_keys", [3, batch, 4])],
            "outputs": [tensor("mask_logits", [batch, 6]), tensor("new_keys", [3, batch, 1])]}


def _math(tokens: torch.Tensor, keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Row-wise: each row's outputs depend on that row only (as every graph's do)."""
    logits = tokens.float().sum(dim=1, keepdim=True) * torch.arange(6.0) + keys.sum(dim=(0, 2))[:, None]
    return logits, keys[:, :, :1] * 2


class _Fake(_Graph):
    def __init__(self, batch: int) -> None:
        super().__init__("caption_step", _entry(batch))
        self.batch, self.calls = batch, 0

    def _run(self, tensors):
        assert tensors[0].shape[0] == self.batch and tensors[1].shape[1] == self.batch
        self.calls += 1
        return _math(*tensors)


@pytest.mark.parametrize("rows, calls", [(2, 1), (5, 1), (7, 2), (10, 2), (11, 3)])
def test_any_batch_runs_through_the_batched_graph_row_for_row(rows, calls):
    single, batched = _Fake(1), _Fake(5)
    single.batched = batched
    tokens, keys = torch.randint(0, 50, (rows, 2)), torch.randn(3, rows, 4)
    got = single(tokens, keys)
    want = _math(tokens, keys)
    assert [g.shape for g in got] == [w.shape for w in want]
    assert all(torch.allclose(g, w) for g, w in zip(got, want))
    assert (single.calls, batched.calls) == (0, calls)


def test_without_a_batched_graph_a_batch_is_single_example_calls():
    single = _Fake(1)
    tokens, keys = torch.randint(0, 50, (3, 2)), torch.randn(3, 3, 4)
    got = single(tokens, keys)
    assert single.calls == 3 and all(torch.allclose(g, w) for g, w in zip(got, _math(tokens, keys)))


def test_batched_spec_stacks_distinct_real_calls_along_each_batch_axis():
    calls = tuple((torch.full((1, 2), i), torch.full((3, 1, 4), float(i))) for i in range(7))
    base = GraphSpec("caption_step", torch.nn.Identity(), (TensorSpec("token_ids", (1, 2), "int64"),
                     TensorSpec("cache_keys", (3, 1, 4), "float32")), (TensorSpec("mask_logits", (1, 6), "float32"),),
                     calls[1], calls)
    spec = batched_spec("caption_step_beam", base, 5, first=1)
    assert [s.shape for s in spec.inputs] == [(5, 2), (3, 5, 4)] and spec.outputs[0].shape == (5, 6)
    assert spec.example_inputs[0][:, 0].tolist() == [1, 2, 3, 4, 5]
    assert spec.example_inputs[1][0, :, 0].tolist() == [1, 2, 3, 4, 5]
    # every call lands in some group; groups wrap around to the first calls
    assert [g[0][:, 0].tolist() for g in spec.calibration] == [[1, 2, 3, 4, 5], [6, 0, 1, 2, 3]]
    assert stack_calls(list(calls[:2]), ("token_ids", "cache_keys"))[1].shape == (3, 2, 4)
