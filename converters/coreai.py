"""Core AI target: `torch.export` programs converted by coreai-torch into one `.aimodel` asset, a function per graph.

Each graph is exported and decomposed with coreai-torch's table (`torch.export.export(...).run_decompositions(
coreai_torch.get_decomp_table())`), in worker processes if any, and saved as `<graph>.pt2`. `pack` then stages every
program in one `coreai_torch.TorchConverter` (entry point = the graph's name), converts them together and saves one
`model.aimodel` (`coreai_asset.ASSET`). Constants that several functions hold (the word embeddings of every fusion
graph) are stored once in it: the demo model's asset is its weights' size. The converter keeps each operation's
torch node in the asset's debug locations, which is what `minivlm parity` maps per-layer values with.

Precisions (`PRECISION_NOTES`, recorded in the manifest): `fp32`; `fp16` = the graph cast to float16, weights and
compute, with float32 inputs and outputs (the cast happens inside the function, as Core ML's fp16 programs do);
`int8` = int8 weights, symmetric per output channel (scale = max |w| / 127, coreai-torch's
`coreai::constexpr_blockwise_shift_scale`), for every convolution, linear layer and embedding table, dequantized
to float16 compute (Core ML int8's meaning). At every precision each convolution's inference BatchNorm is folded
into it in float32 first (`fold_batch_norms`), as the other targets' converters fold it. Integer inputs run as int32 (Core AI's integer type). The compute
unit preference is recorded for the device: Core AI on Linux runs on the CPU and specialises for nothing.

Core AI needs iOS 27 / macOS 27 on a device; here the asset runs through `coreai.runtime` (docs/ARCHITECTURE.md §8).
The backend is imported inside functions only.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import io
from pathlib import Path
from typing import Callable, Iterator

import torch
from torch import nn

from minivlm.python_ref.errors import ConversionError

from .coreai_asset import ASSET, function_io, quiet_import, summary
from .specs import GraphBuild, GraphSpec, runtime_io
from .targets import BuildOptions
from .workers import graph_size

# The OS release whose Core AI runs the asset (coreai's `OSVersion.v27`: iOS 27 / macOS 27).
MINIMUM_OS = "iOS 27 / macOS 27"
PRECISION_NOTES = {
    "fp32": "float32 weights and compute",
    "fp16": "float16 weights and compute; float32 inputs and outputs, cast inside each function",
    "int8": "int8 weights, symmetric per output channel (scale = max|w|/127), dequantized to float16 compute",
}
INT8_LAYERS = (nn.Conv2d, nn.Linear, nn.Embedding)
_INT_DTYPES = (torch.int64, torch.int32)

# Imported only inside functions; a build checks they exist and its worker processes import them up front.
BACKEND_MODULES = ("coreai_torch", "coreai.runtime")


def calibrates(graph: str, options: BuildOptions) -> bool:
    return False  # int8 here quantizes weights only


def steps(options: BuildOptions) -> tuple[str, ...]:
    return ("quantize", "export", "save") if options.precision == "int8" else ("export", "save")


def manifest_extra(options: BuildOptions, graphs: tuple[str, ...]) -> dict:
    extra = {"minimum_os": MINIMUM_OS, "model_type": "Core AI asset, one function per graph",
             "runtime": "coreai.runtime (Linux, CPU) or Core AI on iOS 27 / macOS 27",
             "compute_precision": "float32" if options.precision == "fp32" else "float16",
             "precision_meaning": PRECISION_NOTES[options.precision]}
    if options.precision == "int8":
        extra["quantization"] = {"scheme": "coreai::constexpr_blockwise_shift_scale", "mode": "symmetric",
                                 "dtype": "int8", "granularity": "per output channel", "scale": "max|w| / 127",
                                 "layers": [t.__name__ for t in INT8_LAYERS]}
    return extra


# --- precisions -----------------------------------------------------------------------------------------------


class _Int8Weight(nn.Module):
    """A weight stored as int8 with one float16 scale per output channel (row 0 of the weight is channel 0). The
    weight is rounded against the float16 scale it is stored with, so that every dequantized value is within half
    a step of the weight (rounded against the float32 scale, values moved by up to 127 x the scale's float16
    rounding, 0.06 of a step; the weight audit of `minivlm parity` holds int8 weights to half a step)."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        w = weight.detach().float()
        peak = w.abs().reshape(w.shape[0], -1).amax(dim=1).clamp(min=torch.finfo(torch.float16).tiny)
        scale = (peak / 127).reshape(-1, *([1] * (w.dim() - 1))).to(torch.float16)
        self.register_buffer("quantized", torch.round(w / scale.float()).clamp(-127, 127).to(torch.int8))
        self.register_buffer("scale", scale)

    def forward(self) -> torch.Tensor:
        return torch.ops.coreai.constexpr_blockwise_shift_scale(self.quantized, self.scale)


def _int8_class(cls: type) -> type:
    """`cls` whose `weight` is computed by its `_Int8Weight` submodule (a class property wins over
    nn.Module's parameter lookup, so every use of `.weight`, a tied decoder's too, reads the int8 copy)."""
    return type(f"Int8{cls.__name__}", (cls,), {"weight": property(lambda self: self.int8_weight())})


def quantize_weights(module: nn.Module) -> nn.Module:
    """A copy of `module` whose convolution, linear and embedding weights are int8 per output channel."""
    quiet_import()  # registers torch.ops.coreai
    module = copy.deepcopy(module)
    for layer in list(module.modules()):
        if isinstance(layer, INT8_LAYERS) and isinstance(layer._parameters.get("weight"), nn.Parameter):
            weight = layer._parameters.pop("weight")
            layer.int8_weight = _Int8Weight(weight)
            layer.__class__ = _int8_class(type(layer))
    return module


class _Computed(nn.Module):
    """`graph` run in `dtype`: float inputs cast to it, float outputs cast back to float32."""

    def __init__(self, graph: nn.Module, dtype: torch.dtype) -> None:
        super().__init__()
        self.inner, self.dtype = graph.to(dtype), dtype

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        cast = tuple(x if x.dtype in _INT_DTYPES else x.to(self.dtype) for x in inputs)
        return tuple(y if y.dtype in _INT_DTYPES else y.to(torch.float32) for y in self.inner(*cast))


_BATCH_NORMS = ("_native_batch_norm_legit_no_training", "batch_norm")
_CONVOLUTIONS = ("conv2d", "convolution", "conv1d")


def fold_batch_norms(module: nn.Module, example_inputs: tuple[torch.Tensor, ...]) -> nn.Module:
    """A copy of `module` with every convolution -> inference BatchNorm pair folded into the convolution in float32
    (`torch.nn.utils.fusion.fuse_conv_bn_eval`, the BatchNorm replaced by an identity): the fold the other targets'
    converters make and the weight audit derives. Left to Core AI, the decomposed BatchNorm is folded by its
    compiler in its own order (a bias where beta and mean x scale nearly cancel moves by many float32 ulps) and, in
    a float16 graph, in float16 arithmetic, which loses fp16-subnormal weights (a folded 2.8e-4 stored as 1e-6)."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    with torch.no_grad():
        program = torch.export.export(module, example_inputs)
    pairs = []
    for node in program.graph.nodes:
        conv = node.args[0] if node.op == "call_function" and node.args else None
        if (getattr(node.target, "_opname", "") in _BATCH_NORMS and isinstance(conv, torch.fx.Node)
                and getattr(conv.target, "_opname", "") in _CONVOLUTIONS and len(conv.users) == 1):
            pairs.append(tuple(list(n.meta["nn_module_stack"].values())[-1][0] for n in (conv, node)))
    folded = copy.deepcopy(module)
    for conv_path, bn_path in pairs:
        conv, bn = folded.get_submodule(conv_path), folded.get_submodule(bn_path)
        if not isinstance(conv, nn.modules.conv._ConvNd) or not isinstance(bn, nn.modules.batchnorm._BatchNorm):
            continue  # a functional convolution or normalisation: left to the compiler
        folded.set_submodule(conv_path, fuse_conv_bn_eval(conv.eval(), bn.eval()))
        folded.set_submodule(bn_path, nn.Identity())
    return folded.eval()


def prepared(module: nn.Module, precision: str, example_inputs: tuple[torch.Tensor, ...]) -> nn.Module:
    """The module as the asset computes it at `precision`: BatchNorms folded in float32 (`fold_batch_norms`),
    then cast or quantized."""
    module = fold_batch_norms(module, example_inputs)
    if precision == "fp32":
        return module
    graph = quantize_weights(module) if precision == "int8" else module
    return _Computed(graph, torch.float16).eval()


def export(module: nn.Module, example_inputs: tuple[torch.Tensor, ...]):
    """The decomposed program coreai-torch converts (also what parity's per-layer check re-creates)."""
    import coreai_torch

    return torch.export.export(module, example_inputs).run_decompositions(coreai_torch.get_decomp_table())


# --- conversion -----------------------------------------------------------------------------------------------


def convert_graph(spec: GraphSpec, options: BuildOptions, folder: Path, step: Callable[[str], None]) -> GraphBuild:
    """Export one graph at the build's precision to `<name>.pt2` in `folder` (an intermediate file `pack` converts
    with the others into one asset)."""
    quiet_import()
    if options.precision == "int8":
        step("quantize")
    module = prepared(spec.module, options.precision, spec.example_inputs)
    step("export")
    try:
        program = export(module, spec.example_inputs)
    except Exception as err:  # torch.export raises many types; one line either way
        raise ConversionError(f"torch.export could not export {spec.name} for Core AI: {type(err).__name__}: "
                              f"{str(err).splitlines()[0] if str(err) else ''}") from err
    step("save")
    path = folder / f"{spec.name}.pt2"
    torch.export.save(program, path)
    dtypes = ["int32" if s.dtype in ("int64", "int32") else s.dtype for s in spec.inputs]
    return GraphBuild(spec.name, path.name, runtime_io(spec.inputs, dtypes=dtypes), runtime_io(spec.outputs),
                      details={"function": spec.name})


@contextlib.contextmanager
def _converter_output_hidden() -> Iterator[None]:
    """coreai-torch prints a rich progress display while converting: the build shows its own progress."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        yield


def _io(graph: GraphBuild) -> dict[str, list[tuple[str, tuple[int, ...], str]]]:
    return {io: [(t["runtime_name"], tuple(t["shape"]), t["runtime_dtype"]) for t in getattr(graph, io)]
            for io in ("inputs", "outputs")}


def pack(graphs: list[GraphBuild], options: BuildOptions, folder: Path) -> list[GraphBuild]:
    """Convert every graph's program into one asset, `ASSET` (a function per graph, in the build's graph order),
    check each function's inputs and outputs against its manifest entry, and remove the programs. Each graph's
    entry then names `ASSET` and its `function`; its `size_bytes` is the whole asset's, which every graph needs."""
    quiet_import()
    import coreai_torch

    converter = coreai_torch.TorchConverter()  # debug mode: operations keep their torch node (per-layer parity)
    for graph in graphs:
        program = torch.export.load(folder / graph.path)
        converter.add_exported_program(program, input_names=[t["name"] for t in graph.inputs],
                                       output_names=[t["name"] for t in graph.outputs], entrypoint_name=graph.name)
    out = folder / ASSET
    try:
        with _converter_output_hidden():
            program = converter.to_coreai()
            program.save_asset(out)
    except Exception as err:  # coreai-torch raises RuntimeError/ValueError/NotImplementedError from its lowering
        raise ConversionError(f"coreai-torch could not convert the graphs into {ASSET}: {type(err).__name__}: "
                              f"{str(err).splitlines()[0] if str(err) else ''}") from err
    info = summary(out)
    for graph in graphs:
        have = function_io(info, graph.name)
        if have is None:
            raise ConversionError(f"Core AI {ASSET} has no function {graph.name!r}; it has {list(info.function_names)}")
        if have != _io(graph):
            raise ConversionError(f"Core AI {ASSET} function {graph.name} has {have}; the manifest says {_io(graph)}")
    for graph in graphs:
        (folder / graph.path).unlink()
    size = graph_size(out)
    ops = {graph.name: _op_counts(program, graph.name) for graph in graphs}
    return [dataclasses.replace(graph, path=ASSET, size_bytes=size, ops_delegated=sum(ops[graph.name].values()),
                                ops_other=0, details={**graph.details, "function": graph.name, "op_counts": ops[graph.name]})
            for graph in graphs]


def _op_counts(program, function: str) -> dict[str, int]:
    """Core AI operations of one function by kind, constants left out (all run by Core AI; no fallback exists)."""
    from coreai._compiler.ir import WalkResult

    counts: dict[str, int] = {}

    def visit(op) -> WalkResult:
        name = op.name.removeprefix("coreai.").removeprefix("decomposable.")
        if name not in ("constant", "graph", "output", "return"):
            counts[name] = counts.get(name, 0) + 1
        return WalkResult.ADVANCE

    program._get_graph(function).operation.walk(visit)
    return dict(sorted(counts.items(), key=lambda kv: -kv[1]))


__all__ = ["BACKEND_MODULES", "MINIMUM_OS", "PRECISION_NOTES", "calibrates", "convert_graph", "export",
           "fold_batch_norms", "manifest_extra", "pack", "prepared", "quantize_weights", "steps"]
