"""One `weights.ptd` per ExecuTorch build (converters/executorch_weights.py): equal tensors stored once, every
name kept, and two graphs whose private weights have equal names never reading each other's tensor."""

from pathlib import Path

import numpy as np
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


class _TiedStep(nn.Module):
    """A caption step in small: a word-embedding lookup and an output layer tied to its table."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.words = nn.Embedding(300, 16)
        self.decoder = nn.Linear(16, 300)
        self.decoder.weight = self.words.weight

    def forward(self, ids):
        return (self.decoder(torch.tanh(self.words(ids))),)

    def example_inputs(self, batch: int = 1):
        return (torch.zeros(batch, 5, dtype=torch.int64),)


class _Prefix(nn.Module):
    """A graph that only looks the words up (as caption_prefix does), without the tied layer."""

    def __init__(self, words: nn.Embedding) -> None:
        super().__init__()
        self.words = words

    def forward(self, ids):
        return (self.words(ids) * 2,)

    def example_inputs(self, batch: int = 1):
        return (torch.zeros(batch, 5, dtype=torch.int64),)


@pytest.mark.build
def test_int8_lookup_and_tied_decoder_share_one_int8_table(tmp_path: Path):
    """int8: the lookup reads the per-row int8 table that XNNPACK's per-channel decoder weight is, so the weights
    file holds it once (no fp32 table), the lookup computes with it, and the weight audit traces it to the
    embedding with one copy."""
    from minivlm.build_checks import load_executorch
    from minivlm.parity.executorch_constants import executorch_constants
    from minivlm.parity.reference_constants import reference_tensors
    from minivlm.parity.weight_audit import audit

    step = _TiedStep().eval()
    graphs = {"caption_step": step, "caption_prefix": _Prefix(step.words).eval()}
    options = resolve_options("executorch", "int8", "xnnpack")
    builds = [convert_graph(_spec(name, m), options, tmp_path, lambda s: None) for name, m in graphs.items()]
    pack(builds, options, tmp_path)
    for build in builds:  # the lookup runs outside XNNPACK as embedding_byte, as the fp32 lookup did as embedding
        assert build.details["not_delegated_by_op"] == {"quantized_decomposed_embedding_byte_default": 1}

    table = step.words.weight.detach().numpy()
    scale = np.abs(table).max(axis=1) / 127  # symmetric per row, computed here
    data = read_data(tmp_path / WEIGHTS_FILE)
    stored = [np.frombuffer(bytes(b), np.int8).reshape(table.shape) for b in data.buffers if len(bytes(b)) == table.size]
    assert len(stored) == 1, f"{len(stored)} int8 copies of the word table"
    q = stored[0]
    assert np.all(np.abs(q * scale[:, None] - table) <= scale[:, None] * (0.5 + 1e-3))
    blob = (tmp_path / WEIGHTS_FILE).read_bytes()
    assert table.tobytes()[:256] not in blob  # no fp32 table
    for name in graphs:
        assert q.tobytes()[:256] not in (tmp_path / f"{name}.pte").read_bytes()

    ids = torch.tensor([[3, 1, 4, 1, 5]])
    program, _ = load_executorch(tmp_path / "caption_prefix.pte", tmp_path / WEIGHTS_FILE)  # registers the kernels
    got = program.load_method("forward").execute([ids])[0].numpy()
    want = 2 * (q.astype(np.float64) * scale[:, None])[ids.numpy()]
    assert np.allclose(got, want, rtol=1e-5, atol=1e-6), np.abs(got - want).max()

    manifest = {"weights_file": WEIGHTS_FILE, "graphs": {n: {"file": f"{n}.pte"} for n in graphs}}
    result = audit(executorch_constants(tmp_path, manifest), reference_tensors(step, graphs, {}), one_weights_file=True)
    assert result.passed and not result.duplicates, result.reason() or result.duplicates
    words = [s for s in executorch_constants(tmp_path, manifest) if s.q is not None and s.shape == table.shape]
    assert len(words) == 1 and {g for g, _ in words[0].users} == set(graphs)
    # Edited int8 rows (20 values moved by 3 steps): the lookup's table is audited like any stored weight.
    raw = bytearray(blob)
    middle = raw.find(q.tobytes()) + q.size // 2
    values = q.reshape(-1)[q.size // 2:q.size // 2 + 20].astype(np.int16)
    raw[middle:middle + 20] = np.where(values > 0, values - 3, values + 3).astype(np.int8).tobytes()
    (tmp_path / WEIGHTS_FILE).write_bytes(bytes(raw))
    result = audit(executorch_constants(tmp_path, manifest), reference_tensors(step, graphs, {}), one_weights_file=True)
    assert not result.passed and result.unmatched[0].nearest == "words.weight", result.reason()
    assert result.unmatched[0].bad_values == 20 and "caption_prefix/caption_step" in result.reason(), result.reason()
