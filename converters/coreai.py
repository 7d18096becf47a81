"""Core AI target: `torch.export` programs converted by coreai-torch into one `.aimodel` asset, a function per graph.

Each graph is exported and decomposed with coreai-torch's table (`torch.export.export(...).run_decompositions(
coreai_torch.get_decomp_table())`), in worker processes if any, and saved as `<graph>.pt2`. `pack` then stages every
program in one `coreai_torch.TorchConverter` (entry point = the graph's name), converts them together and saves one
`model.aimodel` (`coreai_asset.ASSET`). Constants that several functions hold (the word embeddings of every fusion
graph) are stored once in it: the demo model's asset is its weights' size. The converter keeps each operation's
torch node in the asset's debug locations, which is what `minivlm parity` maps per-layer values with.

Precisions name how weights are stored (`PRECISION_NOTES`, recorded in the manifest); both compute in float32 as
authored (a device's Neural Engine runs float16 whatever the program says). `fp32`; `int8` = every convolution,
linear and embedding weight as int8, symmetric per output channel (scale = max |w| / 127, coreai-torch's
`coreai::constexpr_blockwise_shift_scale`, which the compiler keeps as stored), widened to float32 where it is used;
biases and norms stay float32 (a few kB). There is no fp16, measured with coreai-torch 0.4.3 and coreai-core 1.0.0b3:
- float16 weights widened where used: the compiler folds the widening cast of most weights (every linear layer,
  the 1x1 convolutions) into new float32 constants, so little is saved, and it widens float16 subnormals wrong
  (141 values of the demo's box head near 6e-5 stored as ~2.4e-7; the weight audit caught it);
- float16 compute (the graph cast to float16): the demo's RoI head takes the argmax class inside tee_stage2, and a
  float16 near-tie there changed a region's attribute logits (cosine 0.990 on the worst call, under the fp16 row's
  0.999), and coreai.runtime on Linux runs float16 programs about 100x slower than float32 ones.
Integer inputs run as int32 (Core AI's
integer type). Each convolution's inference BatchNorm is folded into it in float32 first (`fold_batch_norms`), as
the other targets' converters fold it. The compute unit preference is recorded for the device: Core AI on Linux runs on the CPU.

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
from .specs import GraphBuild, GraphSpec, check_functions, runtime_io
from .targets import BuildOptions
from .workers import graph_size

# The OS release whose Core AI runs the asset (coreai's `OSVersion.v27`: iOS 27 / macOS 27).
MINIMUM_OS = "iOS 27 / macOS 27"
PRECISION_NOTES = {
    "fp32": "float32 weights and compute",
    "int8": "int8 convolution, linear and embedding weights, symmetric per output channel (scale = max|w|/127), "
            "dequantized to float32 where used; float32 compute",
}
WEIGHT_LAYERS = (nn.Conv2d, nn.Linear, nn.Embedding)

# Imported only inside functions; a build checks they exist and its worker processes import them up front.
BACKEND_MODULES = ("coreai_torch", "coreai.runtime")


def calibrates(graph: str, options: BuildOptions) -> bool:
    return False  # int8 here quantizes weights only


def steps(options: BuildOptions) -> tuple[str, ...]:
    return ("quantize", "export", "save") if options.precision == "int8" else ("export", "save")


def manifest_extra(options: BuildOptions, graphs: tuple[str, ...]) -> dict:
    extra = {"minimum_os": MINIMUM_OS, "model_type": "Core AI asset, one function per graph",
             "runtime": "coreai.runtime (Linux, CPU) or Core AI on iOS 27 / macOS 27",
             "compute_precision": "float32",
             "precision_meaning": PRECISION_NOTES[options.precision]}
    if options.precision == "int8":
        extra["quantization"] = {"scheme": "coreai::constexpr_blockwise_shift_scale", "mode": "symmetric",
                                 "dtype": "int8", "granularity": "per output channel", "scale": "max|w| / 127",
                                 "layers": [t.__name__ for t in WEIGHT_LAYERS]}
    return extra


# --- precisions -----------------------------------------------------------------------------------------------


class _Int8Weight(nn.Module):
    """A weight stored as int8 with one float32 scale per output channel (row 0 of the weight is channel 0)."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        w = weight.detach().float()
        peak = w.abs().reshape(w.shape[0], -1).amax(dim=1).clamp(min=torch.finfo(torch.float32).tiny)
        scale = (peak / 127).reshape(-1, *([1] * (w.dim() - 1)))
        self.register_buffer("quantized", torch.round(w / scale).clamp(-127, 127).to(torch.int8))
        self.register_buffer("scale", scale)

    def forward(self) -> torch.Tensor:
        return torch.ops.coreai.constexpr_blockwise_shift_scale(self.quantized, self.scale)


def _int8_class(cls: type) -> type:
    """`cls` whose `weight` is computed by its `int8_weight` submodule (a class property wins over nn.Module's
    parameter lookup, so every use of `.weight`, a tied decoder's too, reads the int8 copy)."""
    return type(f"Int8{cls.__name__}", (cls,), {"weight": property(lambda self: self.int8_weight())})


def int8_weights(module: nn.Module) -> nn.Module:
    """A copy of `module` whose convolution, linear and embedding weights are stored as int8 per output channel,
    each widened to float32 where it is used."""
    quiet_import()  # registers torch.ops.coreai
    module = copy.deepcopy(module)
    for layer in list(module.modules()):
        if isinstance(layer, WEIGHT_LAYERS) and isinstance(layer._parameters.get("weight"), nn.Parameter):
            layer.int8_weight = _Int8Weight(layer._parameters.pop("weight"))
            layer.__class__ = _int8_class(type(layer))
    return module.eval()


_BATCH_NORMS = ("_native_batch_norm_legit_no_training", "batch_norm")
_CONVOLUTIONS = ("conv2d", "convolution", "conv1d")


def fold_batch_norms(module: nn.Module, example_inputs: tuple[torch.Tensor, ...]) -> nn.Module:
    """A copy of `module` with every convolution -> inference BatchNorm pair folded into the convolution in float32
    (`torch.nn.utils.fusion.fuse_conv_bn_eval`, the BatchNorm replaced by an identity): the fold the other targets'
    converters make and the weight audit derives. Left to Core AI, the decomposed BatchNorm is folded by its
    compiler in its own order: a bias where beta and mean x scale nearly cancel moved by 64 float32 ulps."""
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
    """The module as the asset stores it at `precision`: BatchNorms folded in float32 (`fold_batch_norms`), then
    in int8 its weights stored as int8."""
    module = fold_batch_norms(module, example_inputs)
    return int8_weights(module) if precision == "int8" else module


def export(module: nn.Module, example_inputs: tuple[torch.Tensor, ...]):
    """The decomposed program coreai-torch converts (also what parity's per-layer check re-creates)."""
    quiet_import()
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
    check_functions(graphs, lambda name: function_io(info, name), f"Core AI {ASSET}", list(info.function_names))
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


__all__ = ["BACKEND_MODULES", "MINIMUM_OS", "PRECISION_NOTES", "WEIGHT_LAYERS", "calibrates", "convert_graph", "export", "fold_batch_norms",
           "int8_weights", "manifest_extra", "pack", "prepared", "steps"]
