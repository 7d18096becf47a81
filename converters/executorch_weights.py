"""ExecuTorch builds keep one copy of every weight: each graph's `.pte` holds its program only, and the build's
one `weights.ptd` (ExecuTorch's flat_tensor format, `executorch/extension/flat_tensor/serialize/`) holds every
graph's constants, each distinct tensor once.

`convert_graph` (`executorch.py`) writes a graph's constants to `<graph>.ptd`; `pack` merges those files into
`WEIGHTS_FILE` and removes them. ExecuTorch finds external constants BY NAME at load time, so two graphs that
name two different tensors alike would silently read one of them: `by_graph` puts the graph's name in front of
every constant's name, and `merge` refuses a name that would stand for two different tensors. XNNPACK names its
delegate's constants by the sha256 of their bytes, which is unique by construction. Tensors are stored once by
content (sha256 of their bytes): the word embeddings every fusion graph reads, and the decoder weight tied to them
(in int8, the lookups' int8 table and XNNPACK's per-channel decoder weight are the same bytes, their scales too:
`executorch_quant._annotate_lookups`).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from torch import nn

from minivlm.python_ref.errors import ConversionError

from .specs import GraphBuild
from .targets import BuildOptions

WEIGHTS_FILE = "weights.ptd"


class _Named(nn.Module):
    """A graph module held under the graph's name, so every constant's name starts with `<graph>.`."""

    def __init__(self, name: str, module: nn.Module) -> None:
        super().__init__()
        self._graph = name
        setattr(self, name, module)

    def forward(self, *inputs):
        return getattr(self, self._graph)(*inputs)


def by_graph(name: str, module: nn.Module) -> nn.Module:
    """`module` with every parameter, buffer and constant named `<name>.<its name>` once exported."""
    return _Named(name, module)


def graph_data_file(name: str) -> str:
    """The intermediate file of graph `name`'s constants, as `ExecutorchProgramManager.write_tensor_data_to_file`
    names it after its tag."""
    return f"{name}.ptd"


def _serializer():
    from executorch.extension.flat_tensor.serialize.serialize import FlatTensorSerializer

    return FlatTensorSerializer()


def read_data(path: Path):
    """The `DataPayload` (buffers, named entries) of a `.ptd` file."""
    from executorch.exir._serialize._cord import Cord

    return _serializer().deserialize(Cord(path.read_bytes()))


def merge(payloads: dict[str, object]):
    """One `DataPayload` holding every named entry of `payloads` (graph name -> payload), each distinct buffer
    once (by sha256). ConversionError if one name would stand for two different tensors (bytes or layout)."""
    from executorch.exir._serialize.data_serializer import DataEntry, DataPayload

    buffers: list[bytes] = []
    index: dict[str, int] = {}  # sha256 -> position in buffers
    named: dict[str, DataEntry] = {}
    owner: dict[str, tuple[str, str]] = {}  # key -> (graph, sha256)
    for graph, payload in payloads.items():
        for key, entry in payload.named_data.items():
            data = bytes(payload.buffers[entry.buffer_index])
            digest = hashlib.sha256(data).hexdigest()
            if key in named:
                first, known = owner[key]
                if known != digest or named[key].tensor_layout != entry.tensor_layout:
                    raise ConversionError(f"graphs {first} and {graph} both name a constant {key!r} but hold different "
                                          f"tensors under it; the shared weights file would alias them")
                continue
            if digest not in index:
                index[digest] = len(buffers)
                buffers.append(data)
            named[key] = DataEntry(buffer_index=index[digest], alignment=entry.alignment, tensor_layout=entry.tensor_layout)
            owner[key] = (graph, digest)
    return DataPayload(buffers=buffers, named_data=named)


def write_data(payload, path: Path) -> None:
    """`payload` serialised as a `.ptd` file (the upstream serializer aligns every segment to 128 bytes)."""
    path.write_bytes(bytes(_serializer().serialize(payload)))


def pack(graphs: list[GraphBuild], options: BuildOptions, folder: Path) -> list[GraphBuild]:
    """Merge every graph's `<graph>.ptd` in `folder` into one `WEIGHTS_FILE` and remove them (converters/build.py
    calls it after every graph converted). A graph without external constants has no file (the Core ML
    delegate keeps its weights inside its own payload)."""
    files = {g.name: folder / graph_data_file(g.name) for g in graphs}
    merged = merge({name: read_data(path) for name, path in files.items() if path.exists()})
    write_data(merged, folder / WEIGHTS_FILE)
    for path in files.values():
        path.unlink(missing_ok=True)
    return graphs


__all__ = ["WEIGHTS_FILE", "by_graph", "graph_data_file", "merge", "pack", "read_data", "write_data"]
