"""ExecuTorch target: `torch.export` -> `to_edge_transform_and_lower` with a partitioner -> `.pte`.

Delegates: `xnnpack` (XnnpackPartitioner; CPU on every phone), `coreml` (CoreMLPartitioner; exports on
Linux, runs only on Apple platforms) and `portable` (no partitioner: ExecuTorch's portable kernels).
int8 follows the PT2E flow of executorch's XNNPACK docs (`XNNPACKQuantizer`,
`torchao.quantization.pt2e.quantize_pt2e.prepare_pt2e/convert_pt2e`), per-channel symmetric weights;
activations per graph as `INT8_ACTIVATIONS` says. The backend is imported inside functions only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
from torch import nn

from minivlm.python_ref.errors import ConversionError

from .common import GraphBuild, GraphSpec, runtime_io
from .targets import BuildOptions

# Convolutional TEE graphs quantize activations statically (calibrated on photos and scenes: XNNPACK's qs8
# convolutions); transformer graphs dynamically per token (their activation ranges vary with the text, and
# DESIGN §3 measured dynamic int8 MiniLM at 0.038 max error).
INT8_ACTIVATIONS = {"tee_stage1": "static", "tee_stage2": "static", "caption_prefix": "dynamic",
                    "caption_step": "dynamic", "vqa": "dynamic", "match": "dynamic"}

# Imported only inside functions; a build checks they exist and its worker processes import them up front.
BACKEND_MODULES = ("executorch.exir", "executorch.backends.xnnpack.partition.xnnpack_partitioner")


def calibrates(graph: str, options: BuildOptions) -> bool:
    """Static int8 graphs calibrate on the real inputs traced from every calibration image."""
    return options.precision == "int8" and INT8_ACTIVATIONS[graph] == "static"


def steps(options: BuildOptions) -> tuple[str, ...]:
    return ("export", "quantize", "lower", "write") if options.precision == "int8" else ("export", "lower", "write")


def manifest_extra(options: BuildOptions) -> dict:
    extra = {"runtime": "executorch.runtime (Program.load_method('forward'))"}
    if options.precision == "int8":
        extra["quantization"] = {"scheme": "PT2E XNNPACKQuantizer, symmetric, per-channel int8 weights",
                                 "activations": INT8_ACTIVATIONS}
    if options.delegate == "coreml":
        extra["coreml_compute_precision"] = "float32"
    return extra


def _partitioners(options: BuildOptions) -> list:
    if options.delegate == "xnnpack":
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner

        return [XnnpackPartitioner()]
    if options.delegate == "coreml":
        import coremltools as ct
        from executorch.backends.apple.coreml.compiler import CoreMLBackend
        from executorch.backends.apple.coreml.partition import CoreMLPartitioner

        # The Core ML delegate computes in fp16 unless told otherwise; this target's precision is fp32.
        specs = CoreMLBackend.generate_compile_specs(compute_precision=ct.precision.FLOAT32)
        return [CoreMLPartitioner(compile_specs=specs)]
    return []


def _quantized(spec: GraphSpec) -> nn.Module:
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import XNNPACKQuantizer, get_symmetric_quantization_config
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    dynamic = INT8_ACTIVATIONS[spec.name] == "dynamic"
    config = get_symmetric_quantization_config(is_per_channel=True, is_dynamic=dynamic)
    captured = torch.export.export(spec.module, spec.example_inputs).module()
    prepared = prepare_pt2e(captured, XNNPACKQuantizer().set_global(config))
    with torch.no_grad():
        for inputs in spec.calibration if not dynamic else spec.calibration[:1]:
            prepared(*inputs)
    return convert_pt2e(prepared)


def _delegation(edge) -> tuple[int | None, int | None, dict]:
    try:
        from executorch.devtools.backend_debug import get_delegation_info
    except ImportError:
        return None, None, {}
    info = get_delegation_info(edge.exported_program().graph_module)
    # `getitem` nodes only unpack a delegate's output tuple: they are not operators that run outside it.
    kept = {op: b.non_delegated for op, b in info.delegation_by_operator.items() if b.non_delegated and op != "getitem"}
    return info.num_delegated_nodes, sum(kept.values()), {
        "delegated_subgraphs": info.num_delegated_subgraphs,
        "not_delegated_by_op": dict(sorted(kept.items(), key=lambda kv: -kv[1])),
    }


def convert_graph(spec: GraphSpec, options: BuildOptions, folder: Path, step: Callable[[str], None]) -> GraphBuild:
    """Export, (quantize,) lower and serialise one graph to `<name>.pte` in `folder`."""
    from executorch.exir import to_edge_transform_and_lower

    step("export")
    module = spec.module
    try:
        if options.precision == "int8":
            step("quantize")
            module = _quantized(spec)
        program = torch.export.export(module, spec.example_inputs)
        step("lower")
        edge = to_edge_transform_and_lower(program, partitioner=_partitioners(options))
    except Exception as err:  # a backend's own exception types; report it in one line
        raise ConversionError(f"executorch could not build {spec.name}: {type(err).__name__}: {str(err).splitlines()[0]}") from err
    delegated, other, details = _delegation(edge)
    step("write")
    path = folder / f"{spec.name}.pte"
    path.write_bytes(edge.to_executorch().buffer)
    return GraphBuild(spec.name, path.name, runtime_io(spec.inputs), runtime_io(spec.outputs), delegated, other,
                      details=details)


__all__ = ["BACKEND_MODULES", "INT8_ACTIVATIONS", "calibrates", "convert_graph", "manifest_extra", "steps"]
