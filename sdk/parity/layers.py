"""Per-layer rows of `minivlm parity` for the builds whose runtime exposes intermediate values (Core AI; Core ML
off macOS, in the SDK's executor): each function against the program it was converted from, node by node, on
one real recorded call, naming the first layer that leaves its bound (`LAYER_LIMITS`).

The reference side is the graph as the converter exported it (Core AI: `minivlm.converters.coreai.export` of
`prepared(module, precision, inputs)`, float32 with the weights the asset stores, int8 ones widened as the
asset does, so a layer's PSNR measures the lowering alone; Core ML: `minivlm.converters.coreml.export`, float32,
so an fp16 layer also carries float16's rounding up to it), run by torch's FX interpreter; the graph rows
measure the precision's whole error.
The call is the graph's export call of the first parity image (the batched step: that call and the next ones,
stacked). `coreai_layers.CoreAILayers` and `coreml_layers.compare` do the pairing and the comparison.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator

from minivlm.converters.specs import stack_calls
from minivlm.converters.tolerances import LAYER_LIMITS, LIMITS

from .checks import Check
from .reference import ReferenceRun


def _call(ref: ReferenceRun, graph: str, index: int, batch: int, names: tuple[str, ...]):
    calls = [(f"{run.name} call {k}", inputs) for run in ref.runs for k, (inputs, _) in enumerate(run.calls.get(graph, []))]
    index = index if index < len(calls) else 0
    if batch == 1:
        return calls[index][1], calls[index][0]
    group = [calls[(index + k) % len(calls)] for k in range(batch)]
    return stack_calls([g[1] for g in group], names), f"{group[0][0]} and the next {batch - 1} calls stacked"


def _reference_program(target: str, module, precision: str, inputs: tuple):
    """The program a function of the build was converted from (so node names pair)."""
    if target == "coreai":
        from minivlm.converters.coreai import export, prepared

        return export(prepared(module, precision, inputs), inputs)
    from minivlm.converters.coreml import export

    return export(module, inputs)


@contextlib.contextmanager
def _comparer(target: str, path) -> Iterator[Callable]:
    """`compare(function, program, inputs, input_names, min_psnr_db=...) -> LayerReport` for one graph file."""
    if target == "coreai":
        from .coreai_layers import CoreAILayers

        with CoreAILayers(path) as layers:
            yield layers.compare
    else:
        from minivlm.coreml_executor import MILProgram

        from . import coreml_layers

        yield functools.partial(coreml_layers.compare, MILProgram.load(path))


def layer_checks(folder, manifest: dict, ref: ReferenceRun) -> tuple[list[Check], dict[str, dict]]:
    """One row per graph (its worst layer's PSNR, PASS unless a layer is below the precision's bound, `where`
    naming the first such layer) and each graph's full layer table for the JSON report."""
    from minivlm.build_checks import inside, manifest_family

    family, target, precision = manifest_family(manifest), manifest["target"], manifest["precision"]
    limit = LIMITS[LAYER_LIMITS[target, precision]]
    modules = ref.reference.pipeline.graphs.modules()
    checks, tables = [], {}
    files = {entry["file"] for entry in manifest["graphs"].values()}
    for file in sorted(files):
        with _comparer(target, inside(folder, file)) as compare:
            for name, entry in manifest["graphs"].items():
                if entry["file"] != file:
                    continue
                graph, batch = family.batched.get(name, (name, 1))
                module = modules[graph]
                inputs, where = _call(ref, graph, family.export_call.get(graph, 0), batch, module.input_names)
                program = _reference_program(target, module, precision, tuple(inputs))
                report = compare(entry["function"], program, inputs, module.input_names, min_psnr_db=limit.value)
                first = report.first_divergent
                detail = (f"first below: {first.node} ({first.op}, module {first.module or '<root>'}) at "
                          f"{first.psnr_db:.1f} dB" if first else
                          f"{report.compared} layers, {len(report.not_observable)} fused away")
                checks.append(Check("layer", name, "worst layer PSNR", report.worst_psnr_db, limit,
                                    "PASS" if first is None else "FAIL", f"{detail}; {where}", unit="dB"))
                tables[name] = report.as_json()
    return checks, tables


__all__ = ["layer_checks"]
