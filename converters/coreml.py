"""Core ML target: `coremltools.convert(torch.export program)` per graph, packed into one multifunction ML program.

Each graph converts to its own `<graph>.mlpackage` (in worker processes, if any); `pack` then combines them into
one `model.mlpackage` (`coreml_spec.PACKAGE`) with one function per graph, named after the graph, and removes
them. coremltools' `save_multifunction` stores a constant that several functions hold once (its
`const_deduplication` pass), so the word embeddings that `caption_prefix`, `caption_step`, `vqa` and `match` all
use are stored once. Multifunction ML programs need iOS 18 / macOS 15 (`MINIMUM_DEPLOYMENT_TARGET`); an app for
older systems runs the ExecuTorch build instead.

Precisions: `fp16` (compute and activations in float16, the default of Core ML ML programs), `fp32`, and
`int8` = fp16 compute with int8 per-channel symmetric weights (`coremltools.optimize.coreml.
linear_quantize_weights`). `--compute-units` is recorded in the manifest, and the loaders (`minivlm.runtime`,
the iOS package's `CoreMLRunner`) load with it; which unit runs what is decided on device. fp16 and int8 keep the
operations that depend on a graph module's `float32_inputs` alone in float32 (`_float16_selector`). Core ML
cannot execute on Linux: each function's saved inputs and outputs are checked against the manifest, and
`minivlm.load_artifact` runs the build in the SDK's ML-program executor (`minivlm.coreml_executor`). The backend
is imported inside functions only.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import shutil
from pathlib import Path
from typing import Callable, Iterator

import torch

from minivlm.python_ref.errors import ConversionError

from .coreml_spec import PACKAGE, function_io, function_names
from .specs import GraphBuild, GraphSpec, check_functions, runtime_io
from .targets import BuildOptions
from .workers import graph_size

# Multifunction ML programs (one package, one copy of every weight for all graphs) exist from iOS 18 / macOS 15;
# iOS 18 was released in September 2024.
MINIMUM_DEPLOYMENT_TARGET = "iOS18"
# coremltools maps `bitwise_and` (bool) but not the `__and__` that `a & b` exports as (python_ref's RoIAlign
# masks): rewrite it to the identical ATen op before conversion.
_REWRITES = {"__and__.Tensor": "bitwise_and.Tensor"}
COMPUTE_UNITS = {"all": "ALL", "cpu_and_ne": "CPU_AND_NE", "cpu_and_gpu": "CPU_AND_GPU", "cpu_only": "CPU_ONLY"}

# Imported only inside functions; a build checks they exist and its worker processes import them up front.
BACKEND_MODULES = ("coremltools",)


def calibrates(graph: str, options: BuildOptions) -> bool:
    return False  # int8 here quantizes weights only


def steps(options: BuildOptions) -> tuple[str, ...]:
    return ("export", "convert", "quantize", "save") if options.precision == "int8" else ("export", "convert", "save")


def manifest_extra(options: BuildOptions, graphs: tuple[str, ...]) -> dict:
    extra = {"minimum_deployment_target": MINIMUM_DEPLOYMENT_TARGET, "model_type": "mlprogram (multifunction)",
             "runtime": "Core ML, iOS 18 / macOS 15 or later (off macOS, load_artifact runs it in the SDK's ML-program executor)",
             "compute_precision": "float32" if options.precision == "fp32" else "float16"}
    if options.precision == "int8":
        extra["quantization"] = {"scheme": "coremltools.optimize.coreml.linear_quantize_weights",
                                 "mode": "linear_symmetric", "dtype": "int8", "granularity": "per_channel"}
    return extra


def _aten(name: str):
    op, overload = name.split(".")
    return getattr(getattr(torch.ops.aten, op), overload)


def _count_ops(spec) -> int:
    """MIL operations of the main function, constants excluded."""
    main = spec.mlProgram.functions["main"]
    block = main.block_specializations[main.opset]
    return sum(1 for op in block.operations if op.type != "const")


def _check_io(spec, graph: GraphSpec) -> tuple[list[str], list[str]]:
    """ConversionError unless the saved model's inputs/outputs have the manifest's names, order and shapes."""
    ins = [(f.name, tuple(f.type.multiArrayType.shape)) for f in spec.description.input]
    outs = [(f.name, tuple(f.type.multiArrayType.shape)) for f in spec.description.output]
    want_in = [(s.name, s.shape) for s in graph.inputs]
    want_out = [(s.name, s.shape) for s in graph.outputs]
    if ins != want_in or outs != want_out:
        raise ConversionError(f"Core ML {graph.name} has inputs {ins} and outputs {outs}; the manifest says {want_in} and {want_out}")
    from coremltools.proto.FeatureTypes_pb2 import ArrayFeatureType

    def dtype(f) -> str:  # Core ML takes int32 where torch had int64 (token ids)
        return ArrayFeatureType.ArrayDataType.Name(f.type.multiArrayType.dataType).lower()

    return [dtype(f) for f in spec.description.input], [dtype(f) for f in spec.description.output]


def _float16_selector(float32_inputs: tuple[str, ...]) -> Callable:
    """coremltools' op selector of an fp16 conversion: every operation computes in float16 except those whose
    values derive from `float32_inputs` (a graph module's declared inputs, e.g. box coordinates) and constants
    alone, which stay in float32 and read those inputs unrounded."""
    derived: dict[int, bool] = {}  # id(var) -> whether it derives from float32_inputs and constants alone

    def from_inputs(var) -> bool:
        key = id(var)
        if key not in derived:
            op = var.op
            if op is None:
                derived[key] = var.name in float32_inputs
            elif op.op_type == "const":
                derived[key] = False
            else:
                sources = [v for v in _input_vars(op) if v.op is None or v.op.op_type != "const"]
                derived[key] = bool(sources) and all(from_inputs(v) for v in sources)
        return derived[key]

    def to_float16(op) -> bool:
        return not (float32_inputs and op.outputs and all(from_inputs(v) for v in op.outputs))

    return to_float16


def _input_vars(op) -> list:
    """An operation's input variables (an input may be one variable or a tuple of them)."""
    return [v for value in op.inputs.values() for v in (value if isinstance(value, (list, tuple)) else (value,))]


def export(module: torch.nn.Module, example_inputs: tuple) -> torch.export.ExportedProgram:
    """The program `convert_graph` hands to coremltools: torch.export with `_REWRITES` applied. The ML program's
    variables keep its node names, so per-layer parity (`minivlm.parity.coreml_layers`) pairs against it."""
    rewrites = {_aten(a): _aten(b) for a, b in _REWRITES.items()}
    return torch.export.export(module, example_inputs).run_decompositions(rewrites)


def convert_graph(spec: GraphSpec, options: BuildOptions, folder: Path, step: Callable[[str], None]) -> GraphBuild:
    """Convert one graph to `<name>.mlpackage` in `folder` (an intermediate file `pack` combines) and check its
    saved I/O."""
    import coremltools as ct

    step("export")
    program = export(spec.module, spec.example_inputs)
    step("convert")
    precision = ct.precision.FLOAT32 if options.precision == "fp32" else \
        ct.transform.FP16ComputePrecision(op_selector=_float16_selector(getattr(spec.module, "float32_inputs", ())))
    try:
        model = ct.convert(program, convert_to="mlprogram", compute_precision=precision,
                           compute_units=getattr(ct.ComputeUnit, COMPUTE_UNITS[options.compute_units]),
                           minimum_deployment_target=getattr(ct.target, MINIMUM_DEPLOYMENT_TARGET))
    except Exception as err:  # coremltools raises plain ValueError/NotImplementedError/RuntimeError
        raise ConversionError(f"coremltools could not convert {spec.name}: {type(err).__name__}: {str(err).splitlines()[0]}") from err
    if options.precision == "int8":
        step("quantize")
        from coremltools.optimize.coreml import OpLinearQuantizerConfig, OptimizationConfig, linear_quantize_weights

        config = OptimizationConfig(global_config=OpLinearQuantizerConfig(
            mode="linear_symmetric", dtype="int8", granularity="per_channel"))
        model = linear_quantize_weights(model, config=config)
    step("save")
    # torch.export names outputs after graph nodes ("linear_13"): give them the manifest's names.
    mlspec = model.get_spec()
    for feature, name in zip(list(mlspec.description.output), spec.output_names, strict=True):
        if feature.name != name:
            ct.utils.rename_feature(mlspec, feature.name, name)
    model = ct.models.MLModel(mlspec, weights_dir=model.weights_dir, skip_model_load=True)
    path = folder / f"{spec.name}.mlpackage"
    model.save(str(path))
    saved = ct.utils.load_spec(str(path))
    in_dtypes, out_dtypes = _check_io(saved, spec)
    ops = _count_ops(saved)
    return GraphBuild(spec.name, path.name, runtime_io(spec.inputs, dtypes=in_dtypes),
                      runtime_io(spec.outputs, dtypes=out_dtypes), ops, 0,
                      details={"ops_note": "MIL ops of the graph's function; unit placement is decided on device"})


@contextlib.contextmanager
def _pass_bars_as_configured() -> Iterator[None]:
    """coremltools draws a tqdm bar per MIL pass pipeline. `TQDM_DISABLE`, which the CLI sets to keep them off its
    own bars, is read once when tqdm is imported: in worker processes before that, in this process after it."""
    from coremltools.converters.mil.mil.passes import pass_pipeline

    saved = pass_pipeline.tqdm
    pass_pipeline.tqdm = functools.partial(saved, disable=os.environ.get("TQDM_DISABLE", "") not in ("", "0"))
    try:
        yield
    finally:
        pass_pipeline.tqdm = saved


def pack(graphs: list[GraphBuild], options: BuildOptions, folder: Path) -> list[GraphBuild]:
    """Combine the per-graph packages in `folder` into one multifunction `PACKAGE` (function = graph name, the
    first graph the default function), check every function's saved inputs and outputs against its graph's
    manifest entry, and remove the per-graph packages. Each graph's entry then names `PACKAGE` and its
    `function`; its `size_bytes` is the whole package's, which every graph needs."""
    import coremltools as ct
    from coremltools.models.utils import MultiFunctionDescriptor, save_multifunction

    descriptor = MultiFunctionDescriptor()
    for graph in graphs:
        descriptor.add_function(str(folder / graph.path), src_function_name="main", target_function_name=graph.name)
    descriptor.default_function_name = graphs[0].name
    out = folder / PACKAGE
    try:
        with _pass_bars_as_configured():
            save_multifunction(descriptor, str(out))
    except Exception as err:  # coremltools raises plain ValueError/AssertionError
        raise ConversionError(f"coremltools could not combine the graphs into {PACKAGE}: {type(err).__name__}: "
                              f"{str(err).splitlines()[0] if str(err) else ''}") from err
    saved = ct.utils.load_spec(str(out))
    check_functions(graphs, lambda name: function_io(saved, name), f"Core ML {PACKAGE}", function_names(saved))
    for graph in graphs:
        shutil.rmtree(folder / graph.path)
    size = graph_size(out)
    return [dataclasses.replace(graph, path=PACKAGE, size_bytes=size, details={**graph.details, "function": graph.name})
            for graph in graphs]


__all__ = ["BACKEND_MODULES", "MINIMUM_DEPLOYMENT_TARGET", "calibrates", "convert_graph", "export", "manifest_extra", "pack", "steps"]
