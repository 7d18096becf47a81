"""TFLite target through litert-torch: `litert_torch.convert(module, sample_kwargs)` per graph, then one
`model.tflite` with a signature per graph (key = the graph's name) and one copy of every weight.

Each graph converts alone (in worker processes, in parallel) to `<graph>.tflite` and is inspected there: its
signature's names, shapes and dtypes, its ops, the GPU/NNAPI prediction and the XNNPACK delegation measured on
the runtime. `pack` then merges those files (`tflite_merge.py`), checks that every signature of the merged model
has the I/O its graph had alone, and removes them. The interpreter applies a delegate to every subgraph of a
model (tensorflow/lite/core/interpreter.cc `ModifyGraphWithDelegateImpl`), and a signature's subgraph is its
graph's unchanged but for buffer and operator-code indices, so the per-graph inspection describes the merged file.

Precisions, with litert-torch's own quantization recipes (litert_torch/generative/quantize/quant_recipes.py,
applied by ai-edge-quantizer after conversion): `fp32`; `fp16` = float16 weights, float32 compute
(`full_fp16_recipe`); `int8` = dynamic-range quantization, int8 per-channel weights with activations
quantized on the fly (`full_dynamic_recipe`). Each graph is quantized alone; identical quantized weights (the
word embeddings of every fusion graph) still merge, since they are equal bytes. `--delegate xnnpack|gpu|nnapi`
is recorded: the file is the same for all three. XNNPACK delegation is counted on the real runtime; GPU and
NNAPI are predicted from their documented op lists (`tflite_delegates.py`). int64 inputs become int32
(litert-torch's default, `enable_x64=False`). Inputs and outputs are named after the graph's own names; the
runtime still maps them by the names recorded in the manifest, never by position. The backend is imported
inside functions.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from minivlm.python_ref.errors import ConversionError

from .specs import GraphBuild, GraphSpec, runtime_io
from .targets import BuildOptions
from .tflite_delegates import compatibility

MODEL_FILE = "model.tflite"


class _NamedOutputs(nn.Module):
    """Returns the graph's outputs as a dict, so litert-torch names the signature outputs after them."""

    def __init__(self, graph: nn.Module, input_names: tuple[str, ...], output_names: tuple[str, ...]) -> None:
        super().__init__()
        self.inner, self.input_names, self.output_names = graph, input_names, output_names

    def forward(self, **inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        # by name: litert-torch may reorder keyword inputs (it sorts signature inputs)
        outputs = self.inner(*(inputs[name] for name in self.input_names))
        return dict(zip(self.output_names, outputs, strict=True))


# Imported only inside functions; a build checks they exist and its worker processes import them up front.
BACKEND_MODULES = ("litert_torch", "ai_edge_litert.interpreter")


def calibrates(graph: str, options: BuildOptions) -> bool:
    return False  # dynamic range needs no calibration


def steps(options: BuildOptions) -> tuple[str, ...]:
    return ("convert", "write", "inspect")


def manifest_extra(options: BuildOptions, graphs: tuple[str, ...]) -> dict:
    extra = {"runtime": "ai_edge_litert.interpreter.Interpreter, one per build, the signature named after the graph",
             "compatibility_sources": "GPU: documented op list; NNAPI: NNAPI delegate Validate(); XNNPACK: measured"}
    if options.precision == "fp16":
        extra["quantization"] = {"scheme": "litert_torch quant_recipes.full_fp16_recipe (float16 weights, float32 compute)"}
    if options.precision == "int8":
        extra["quantization"] = {"scheme": "litert_torch quant_recipes.full_dynamic_recipe (dynamic range: int8 "
                                           "per-channel weights, activations quantized at run time)"}
    return extra


def _quant_config(precision: str):
    if precision == "fp32":
        return None
    from litert_torch.generative.quantize import quant_recipes

    return quant_recipes.full_fp16_recipe() if precision == "fp16" else quant_recipes.full_dynamic_recipe()


def _xnnpack_delegated(path: Path) -> tuple[int, int, dict[str, int]]:
    """(nodes XNNPACK took, nodes left to TFLite kernels, those left by op name) on this machine's runtime.

    The interpreter lists every original node and appends one DELEGATE node per partition; the nodes a
    partition replaced are those reached walking back from its outputs to its inputs.
    """
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()  # the default XNNPACK delegate partitions the graph here
    ops = interpreter._get_ops_details()
    original = [op for op in ops if op["op_name"] != "DELEGATE"]
    producer = {int(t): op["index"] for op in original for t in op["outputs"]}
    inputs_of = {op["index"]: [int(t) for t in op["inputs"] if t >= 0] for op in original}
    taken: set[int] = set()
    for partition in (op for op in ops if op["op_name"] == "DELEGATE"):
        boundary = {int(t) for t in partition["inputs"]}
        stack = [int(t) for t in partition["outputs"]]
        while stack:
            tensor = stack.pop()
            node = producer.get(tensor)
            if tensor in boundary or node is None or node in taken:
                continue
            taken.add(node)
            stack.extend(inputs_of[node])
    left = _op_counts([op for op in original if op["index"] not in taken])
    return len(taken), len(original) - len(taken), left


def _signature_tensors(interpreter, key: str | None = None) -> tuple[dict, dict]:
    """A signature's inputs and outputs: runtime name -> (shape, numpy dtype name)."""
    runner = interpreter.get_signature_runner(key)
    as_io = lambda details: {n: (tuple(int(x) for x in d["shape"]), d["dtype"].__name__) for n, d in details.items()}  # noqa: E731
    return as_io(runner.get_input_details()), as_io(runner.get_output_details())


def _signature_io(path: Path, spec: GraphSpec) -> tuple[list[dict], list[dict], list[dict]]:
    """Manifest I/O with the signature's names and dtypes, checked against the graph; and the model's ops."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    it = Interpreter(model_path=str(path), experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    ins, outs = _signature_tensors(it)
    if set(ins) != set(spec.input_names) or set(outs) != set(spec.output_names):
        raise ConversionError(f"TFLite {spec.name} signature has inputs {sorted(ins)} and outputs {sorted(outs)}; "
                              f"expected {list(spec.input_names)} and {list(spec.output_names)}")
    for s in (*spec.inputs, *spec.outputs):
        got = (ins.get(s.name) or outs[s.name])[0]
        if got != s.shape:
            raise ConversionError(f"TFLite {spec.name} tensor {s.name} has shape {got}, the graph {s.shape}")
    return (runtime_io(spec.inputs, dtypes=[ins[s.name][1] for s in spec.inputs]),
            runtime_io(spec.outputs, dtypes=[outs[s.name][1] for s in spec.outputs]),
            it._get_ops_details())


def pack(graphs: list[GraphBuild], options: BuildOptions, folder: Path) -> list[GraphBuild]:
    """Merge the graphs' `.tflite` files into MODEL_FILE, one signature per graph (the first graph's subgraph is
    the primary one), check each signature's I/O against what the graph's own file had, and remove those files."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    from .tflite_merge import merge

    merged = merge({g.name: (folder / g.path).read_bytes() for g in graphs})
    path = folder / MODEL_FILE
    path.write_bytes(merged)
    it = Interpreter(model_path=str(path), experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    keys = list(it.get_signature_list())
    if keys != [g.name for g in graphs]:
        raise ConversionError(f"the merged {MODEL_FILE} has signatures {keys}; expected {[g.name for g in graphs]}")
    for g in graphs:
        want = tuple({t["runtime_name"]: (tuple(t["shape"]), t["runtime_dtype"]) for t in io} for io in (g.inputs, g.outputs))
        got = _signature_tensors(it, g.name)
        if got != want:
            raise ConversionError(f"the merged {MODEL_FILE} signature {g.name} has I/O {got}; the graph alone had {want}")
    for g in graphs:
        (folder / g.path).unlink()
    # size_bytes: the file the graph runs from (shared); graph_bytes: what the graph's file alone weighed.
    return [dataclasses.replace(g, path=MODEL_FILE, size_bytes=len(merged),
                                details={"signature": g.name, "graph_bytes": g.size_bytes, **g.details}) for g in graphs]


class _DropDowncastNotice(logging.Filter):
    """litert-torch logs a warning for every int64 input it narrows to int32: here that is intended, and the
    manifest records each input's runtime dtype."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "enable_x64=False downcasts" not in record.getMessage()


@contextlib.contextmanager
def _without_downcast_notice():
    root, notice = logging.getLogger(), _DropDowncastNotice()
    root.addFilter(notice)
    try:
        yield
    finally:
        root.removeFilter(notice)


def convert_graph(spec: GraphSpec, options: BuildOptions, folder: Path, step: Callable[[str], None]) -> GraphBuild:
    """Convert one graph to `<name>.tflite` in `folder` (merged by `pack`), then read it back: names, shapes, ops,
    delegation."""
    import litert_torch

    step("convert")
    module = _NamedOutputs(spec.module, spec.input_names, spec.output_names).eval()
    try:
        with _without_downcast_notice():
            model = litert_torch.convert(module, sample_kwargs=dict(zip(spec.input_names, spec.example_inputs)),
                                         quant_config=_quant_config(options.precision))
    except Exception as err:  # litert-torch raises plain RuntimeError/ValueError from MLIR passes
        raise ConversionError(f"litert-torch could not convert {spec.name}: {type(err).__name__}: {str(err).splitlines()[0]}") from err
    step("write")
    path = folder / f"{spec.name}.tflite"
    model.export(str(path))
    step("inspect")
    inputs, outputs, ops = _signature_io(path, spec)
    report = compatibility(ops)
    delegated, other, left = _xnnpack_delegated(path)
    report["xnnpack"] = {"source": "measured: nodes the ai-edge-litert XNNPACK delegate took on this machine",
                         "supported": delegated, "unsupported": other, "unsupported_ops": left}
    chosen = report[options.delegate]
    return GraphBuild(spec.name, path.name, inputs, outputs, chosen["supported"], chosen["unsupported"],
                      details={"op_counts": _op_counts(ops), "compatibility": report})


def _op_counts(ops: list[dict]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for op in ops:
        counts[op["op_name"]] = counts.get(op["op_name"], 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: -kv[1]))


__all__ = ["BACKEND_MODULES", "MODEL_FILE", "calibrates", "convert_graph", "manifest_extra", "pack", "steps"]
