"""Graph specs: each graph to convert with its I/O taken from real inputs, and what a target made of it.

`graph_specs` turns the reference pipeline's traced calls into one `GraphSpec` per graph (the eager module,
named tensor specs, a real example input and every real input seen, for int8 calibration). A target's
`convert_graph` returns a `GraphBuild`, whose `as_json` is the graph's entry in the manifest.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from minivlm.python_ref.families import family_of

from .manifest import batch_axis
from .samples import Trace


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]
    dtype: str  # torch dtype name: float32, int64

    @property
    def batch_axis(self) -> int:
        return batch_axis(self.name)

    def as_json(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype, "batch_axis": self.batch_axis}


def _tensor_spec(name: str, t: torch.Tensor) -> TensorSpec:
    return TensorSpec(name, tuple(t.shape), str(t.dtype).removeprefix("torch."))


@dataclass(frozen=True)
class GraphSpec:
    """One graph to convert: the eager module, its I/O, a real example input and every real input seen."""

    name: str
    module: nn.Module
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    example_inputs: tuple[torch.Tensor, ...]
    calibration: tuple[tuple[torch.Tensor, ...], ...]

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.inputs)

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.outputs)


def graph_specs(pipeline, traces: list[Trace], calibration: list[Trace]) -> list[GraphSpec]:
    """Every graph of the pipeline's family, with example inputs from the first traced image (a photo): the call
    its family's `export_call` names (MiniVLM's `caption_step`: its second, whose cache already holds a token,
    so export never sees only the empty-cache special case), else the first."""
    family = family_of(pipeline.cfg)
    specs = []
    for name, module in pipeline.graphs.modules().items():
        in_names, out_names = module.input_names, module.output_names
        calls = traces[0].calls[name]
        index = family.export_call.get(name, 0)
        example_in, example_out = calls[index] if len(calls) > index else calls[0]
        seen = [ins for tr in calibration for ins, _ in tr.calls[name]]
        shapes = {tuple(tuple(t.shape) for t in ins) for ins in seen}
        assert len(shapes) == 1, f"{name} was called with several input shapes {shapes}: graphs must be static"
        specs.append(GraphSpec(
            name, module.eval(),
            tuple(_tensor_spec(n, t) for n, t in zip(in_names, example_in, strict=True)),
            tuple(_tensor_spec(n, t) for n, t in zip(out_names, example_out, strict=True)),
            example_in, tuple(seen),
        ))
    by_name = {s.name: s for s in specs}
    for name, (graph, batch) in family.batched.items():
        specs.append(batched_spec(name, by_name[graph], batch, family.export_call.get(graph, 0)))
    return specs


def stack_calls(calls: list[tuple[torch.Tensor, ...]], names: tuple[str, ...]) -> tuple[torch.Tensor, ...]:
    """Single-example calls of one graph as one batched call: each input concatenated along its batch axis."""
    return tuple(torch.cat([call[i] for call in calls], dim=batch_axis(n)) for i, n in enumerate(names))


def batched_spec(name: str, base: GraphSpec, batch: int, first: int) -> GraphSpec:
    """`base`'s module exported at `batch`: its example input is `batch` distinct real calls stacked (from the
    exported call on, wrapping around), every calibration input likewise in groups of `batch`."""
    seen = list(base.calibration)
    groups = [[seen[(start + k) % len(seen)] for k in range(batch)] for start in range(first, first + len(seen), batch)]
    stacked = [stack_calls(g, base.input_names) for g in groups]

    def widened(s: TensorSpec) -> TensorSpec:
        shape = list(s.shape)
        shape[s.batch_axis] *= batch
        return TensorSpec(s.name, tuple(shape), s.dtype)

    return GraphSpec(name, base.module, tuple(widened(s) for s in base.inputs), tuple(widened(s) for s in base.outputs),
                     stacked[0], tuple(stacked))


@dataclass
class GraphBuild:
    """What a target made of one graph.

    `path` is relative to the build folder (a file, or a folder for `.mlpackage` and `.aimodel`). `inputs`/`outputs` are
    the graph's TensorSpec JSON plus what the runtime calls and stores each tensor as (`runtime_name`,
    `runtime_dtype`), in the graph's order. `ops` counts delegated vs not, or None where it does not apply.
    """

    name: str
    path: str
    inputs: list[dict]
    outputs: list[dict]
    ops_delegated: int | None = None
    ops_other: int | None = None
    seconds: float = 0.0
    size_bytes: int = 0
    details: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict:
        return {"file": self.path, "inputs": self.inputs, "outputs": self.outputs,
                "ops": {"delegated": self.ops_delegated, "not_delegated": self.ops_other},
                "size_bytes": self.size_bytes, "convert_seconds": round(self.seconds, 2), **self.details}


def runtime_tensors(graph: GraphBuild) -> dict[str, list[tuple[str, tuple[int, ...], str]]]:
    """A graph's inputs and outputs as its runtime names them: (runtime name, shape, runtime dtype) in graph order,
    the form the targets' readers of a saved model return."""
    return {io: [(t["runtime_name"], tuple(t["shape"]), t["runtime_dtype"]) for t in getattr(graph, io)]
            for io in ("inputs", "outputs")}


def check_functions(graphs: list[GraphBuild], read, model: str, functions: list[str]) -> None:
    """ConversionError unless every graph is a function of the saved `model` whose inputs and outputs (`read(name)`:
    runtime_tensors' form, or None for a function it lacks; `functions`: the ones it has) are its manifest entry's."""
    from minivlm.python_ref.errors import ConversionError

    for graph in graphs:
        have = read(graph.name)
        if have is None:
            raise ConversionError(f"{model} has no function {graph.name!r}; it has {functions}")
        if have != runtime_tensors(graph):
            raise ConversionError(f"{model} function {graph.name} has {have}; the manifest says {runtime_tensors(graph)}")


def runtime_io(specs: tuple[TensorSpec, ...], names: list[str] | None = None,
               dtypes: list[str] | None = None) -> list[dict]:
    """Manifest I/O entries: the graph's spec plus the runtime's name and dtype of each tensor."""
    names = names or [s.name for s in specs]
    dtypes = dtypes or [s.dtype for s in specs]
    return [{**s.as_json(), "runtime_name": n, "runtime_dtype": d} for s, n, d in zip(specs, names, dtypes, strict=True)]


__all__ = ["GraphBuild", "GraphSpec", "TensorSpec", "batched_spec", "check_functions", "graph_specs", "runtime_io", "runtime_tensors",
           "stack_calls"]
