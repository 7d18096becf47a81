"""One `weights.ptd` per ExecuTorch build (converters/executorch_weights.py): equal tensors stored once, every
name kept, and two graphs whose private weights have equal names never reading each other's tensor."""

from pathlib import Path

import pytest
import torch
from torch import nn

from minivlm.converters.executorch import convert_graph, pack
from minivlm.converters.executorch_weights import WEIGHTS_FILE, merge, read_data, write_data
from minivlm.converters.specs import GraphSpec, TensorSpec
from minivlm.converters.targets import resolve_options
from minivlm.errors import ConversionError


def _payload(entries: dict[str, bytes]):
    from executorch.exir._serialize.data_serializer import DataEntry, DataPayload

    buffers = list(entries.values())
    return DataPayload(buffers=buffers, named_data={k: DataEntry(i, 16, None) for i, k in enumerate(entries)})


def _named_bytes(payload) -> dict[str, bytes]:
    return {k: bytes(payload.buffers[e.buffer_index]) for k, e in payload.named_data.items()}


def test_merge_stores_equal_tensors_once_and_keeps_every_name(tmp_path):
    shared, a_only, b_only = b"\x01" * 64, b"\x02" * 64, b"\x03" * 32
    merged = merge({"a": _payload({"a.embedding": shared, "a.head": a_only}),
                    "b": _payload({"b.embedding": shared, "b.head": b_only, "a.head": a_only})})
    assert len(merged.buffers) == 3  # `shared` once, under both names
    assert _named_bytes(merged) == {"a.embedding": shared, "a.head": a_only, "b.embedding": shared, "b.head": b_only}
    write_data(merged, tmp_path / WEIGHTS_FILE)
    assert _named_bytes(read_data(tmp_path / WEIGHTS_FILE)) == _named_bytes(merged)  # through the file format


def test_merge_refuses_one_name_for_two_tensors():
    with pytest.raises(ConversionError, match=r"graphs a and b both name a constant 'inner\.weight' but hold different"):
        merge({"a": _payload({"inner.weight": b"\x01" * 8}), "b": _payload({"inner.weight": b"\x02" * 8})})


class _Toy(nn.Module):
    """A graph whose constants are named as in any other `_Toy`: an embedding lookup (left outside XNNPACK,
    named by its path) and a linear layer (delegated) under the same attribute names."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.inner = nn.Sequential(nn.Embedding(40, 8), nn.Linear(8, 5))

    def forward(self, ids):
        return (self.inner(ids),)


def _spec(name: str, module: nn.Module) -> GraphSpec:
    ids = torch.tensor([[3, 1, 4, 1, 5]])
    out = module(ids)[0]
    return GraphSpec(name, module.eval(), (TensorSpec("ids", (1, 5), "int64"),),
                     (TensorSpec("out", tuple(out.shape), "float32"),), (ids,), ((ids,),))


@pytest.mark.build
@pytest.mark.parametrize("delegate", ["xnnpack", "portable"])
def test_two_graphs_with_equal_weight_names_keep_their_own_weights(tmp_path: Path, delegate):
    """Without the graph's name in every constant's name, graph b would read graph a's embedding from the shared
    file (or the merge would refuse); with it, each graph gives its own eager output."""
    from executorch.runtime import Runtime

    options = resolve_options("executorch", "fp32", delegate)
    graphs = {name: _Toy(seed) for name, seed in (("a", 0), ("b", 1))}
    builds = [convert_graph(_spec(name, m), options, tmp_path, lambda step: None) for name, m in graphs.items()]
    pack(builds, options, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.pte", "b.pte", WEIGHTS_FILE]
    ids = torch.tensor([[3, 1, 4, 1, 5]])
    for name, module in graphs.items():
        method = Runtime.get().load_program(tmp_path / f"{name}.pte", data_path=tmp_path / WEIGHTS_FILE).load_method("forward")
        got = method.execute([ids])[0]
        want = module(ids)[0].detach()
        # one process, one CPU, fp32 kernels vs eager: last-bit differences only
        assert torch.allclose(got, want, atol=1e-5), f"graph {name} does not compute with its own weights"
        # the delegate's constants too are in the weights file, not in the program
        assert module.inner[1].weight.detach().numpy().tobytes() not in (tmp_path / f"{name}.pte").read_bytes()
    keys = set(read_data(tmp_path / WEIGHTS_FILE).named_data)
    assert {"a.inner.0.weight", "b.inner.0.weight"} <= keys  # the lookups, named by graph
