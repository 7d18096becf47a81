"""ExecuTorch target: `torch.export` -> `to_edge_transform_and_lower` with a partitioner -> `.pte`, its
constants (the delegate's and the rest) external; `pack` (`executorch_weights.py`) merges every graph's into one
`weights.ptd` for the build.

Delegates: `xnnpack` (XnnpackPartitioner; CPU on every phone), `coreml` (CoreMLPartitioner; exports on
Linux, runs only on Apple platforms) and `portable` (no partitioner: ExecuTorch's portable kernels).
int8 is `executorch_quant.py`. The backend is imported inside functions only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch

from minivlm.python_ref.errors import ConversionError

from .executorch_quant import FP32_PARTS, INT8_ACTIVATIONS, fp32_parts, quantized_module
from .executorch_weights import WEIGHTS_FILE, by_graph, pack
from .specs import GraphBuild, GraphSpec, runtime_io
from .targets import BuildOptions

# Imported only inside functions; a build checks they exist and its worker processes import them up front.
BACKEND_MODULES = ("executorch.exir", "executorch.backends.xnnpack.partition.xnnpack_partitioner")


def calibrates(graph: str, options: BuildOptions) -> bool:
    """Static int8 graphs calibrate on the real inputs traced from every calibration image."""
    return options.precision == "int8" and INT8_ACTIVATIONS[graph] == "static"


def steps(options: BuildOptions) -> tuple[str, ...]:
    return ("export", "quantize", "lower", "write") if options.precision == "int8" else ("export", "lower", "write")


def manifest_extra(options: BuildOptions, graphs: tuple[str, ...]) -> dict:
    """The manifest's executorch entries for a build of `graphs`."""
    extra = {"runtime": "executorch.runtime (Runtime.load_program(pte, data_path=weights_file).load_method('forward'))",
             "weights_file": WEIGHTS_FILE}
    if options.precision == "int8":
        extra["quantization"] = {"scheme": "PT2E XNNPACKQuantizer, symmetric, per-channel int8 weights",
                                 "activations": {g: INT8_ACTIVATIONS[g] for g in graphs},
                                 "fp32": fp32_parts(graphs)}
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
    """Export, (quantize,) lower and serialise one graph to `<name>.pte` in `folder`, its constants to
    `<name>.ptd` (named `<name>.<constant>`, see `executorch_weights.py`), for `pack` to merge."""
    from executorch.exir import ExecutorchBackendConfig, to_edge_transform_and_lower
    from executorch.exir.passes.constant_prop_pass import constant_prop_pass
    from executorch.exir.passes.external_constants_pass import delegate_external_constants_pass_unlifted

    step("export")
    module = spec.module
    quantized = options.precision == "int8" and INT8_ACTIVATIONS[spec.name] != "fp32"
    try:
        if quantized:
            step("quantize")
            module = quantized_module(spec)
        program = torch.export.export(module, spec.example_inputs)
        if not quantized:
            # Fold what depends on weights alone (the BiFPN's normalised fusion weights: relu, sum, divide,
            # select), which XNNPACK would otherwise leave outside: tee_stage1 becomes one XNNPACK partition
            # instead of ten. Not on a quantized graph: folding breaks up the dynamic-quantization patterns
            # XNNPACK matches, leaving choose_qparams / q / dq ops that no runtime kernel implements.
            program = constant_prop_pass(program)
        # Exported again under the graph's name, so that no constant is named alike in two graphs (the folded
        # ones included); the delegate's constants are tagged for the external file on that unlifted graph (a
        # tag on the nested graph module, under the wrapper, does not survive the export: measured).
        named = torch.export.export(by_graph(spec.name, program.module()), spec.example_inputs).module()
        delegate_external_constants_pass_unlifted(named, lambda node: spec.name)
        program = torch.export.export(named, spec.example_inputs)
        step("lower")
        edge = to_edge_transform_and_lower(program, partitioner=_partitioners(options))
    except Exception as err:  # a backend's own exception types; report it in one line
        raise ConversionError(f"executorch could not build {spec.name}: {type(err).__name__}: {str(err).splitlines()[0]}") from err
    delegated, other, details = _delegation(edge)
    step("write")
    path = folder / f"{spec.name}.pte"
    # Every other constant (the embedding lookups, what a delegate left out) goes to the same external file.
    et = edge.to_executorch(ExecutorchBackendConfig(external_constants=lambda node: spec.name))
    path.write_bytes(et.buffer)
    et.write_tensor_data_to_file(str(folder))  # named after the tag: executorch_weights.graph_data_file(name)
    return GraphBuild(spec.name, path.name, runtime_io(spec.inputs), runtime_io(spec.outputs), delegated, other,
                      details=details)


__all__ = ["BACKEND_MODULES", "FP32_PARTS", "INT8_ACTIVATIONS", "calibrates", "convert_graph", "manifest_extra", "pack", "steps"]
