"""Per-layer rows of `minivlm parity` for Core AI builds: each function of the asset against the program it was
converted from, node by node, on one real recorded call, naming the first layer that leaves its bound.

The reference side is the graph as the converter exported it (`minivlm.converters.coreai.export` of
`prepared(module, precision, inputs)`: the same torch.export nodes, so node names pair), run by torch's FX interpreter in
float32 with the weights the asset stores (int8 ones widened as the asset does), so a layer's PSNR
measures the lowering alone, while the graph rows measure the precision's whole error.
The call is the graph's export call of the first parity image (the batched step: that call and the next ones,
stacked). `coreai_layers.CoreAILayers` does the pairing and the comparison.
"""

from __future__ import annotations

from minivlm.converters.specs import stack_calls
from minivlm.converters.tolerances import LIMITS

from .checks import Check
from .reference import ReferenceRun


def _call(ref: ReferenceRun, graph: str, index: int, batch: int, names: tuple[str, ...]):
    calls = [(f"{run.name} call {k}", inputs) for run in ref.runs for k, (inputs, _) in enumerate(run.calls.get(graph, []))]
    index = index if index < len(calls) else 0
    if batch == 1:
        return calls[index][1], calls[index][0]
    group = [calls[(index + k) % len(calls)] for k in range(batch)]
    return stack_calls([g[1] for g in group], names), f"{group[0][0]} and the next {batch - 1} calls stacked"


def layer_checks(folder, manifest: dict, ref: ReferenceRun) -> tuple[list[Check], dict[str, dict]]:
    """One row per graph (its worst layer's PSNR, PASS unless a layer is below the precision's bound, `where`
    naming the first such layer) and each graph's full layer table for the JSON report."""
    from minivlm.build_checks import inside, manifest_family
    from minivlm.converters.coreai import export, prepared

    from .coreai_layers import CoreAILayers

    family, precision = manifest_family(manifest), manifest["precision"]
    limit = LIMITS["LAYER_MIN_PSNR_DB"]
    modules = ref.reference.pipeline.graphs.modules()
    checks, tables = [], {}
    assets = {entry["file"] for entry in manifest["graphs"].values()}
    for asset in sorted(assets):
        with CoreAILayers(inside(folder, asset)) as layers:
            for name, entry in manifest["graphs"].items():
                if entry["file"] != asset:
                    continue
                graph, batch = family.batched.get(name, (name, 1))
                module = modules[graph]
                inputs, where = _call(ref, graph, family.export_call.get(graph, 0), batch, module.input_names)
                program = export(prepared(module, precision, tuple(inputs)), tuple(inputs))
                report = layers.compare(entry["function"], program, inputs, module.input_names, min_psnr_db=limit.value)
                first = report.first_divergent
                detail = (f"first below: {first.node} ({first.op}, module {first.module or '<root>'}) at "
                          f"{first.psnr_db:.1f} dB" if first else
                          f"{report.compared} layers, {len(report.not_observable)} fused away")
                checks.append(Check("layer", name, "worst layer PSNR", report.worst_psnr_db, limit,
                                    "PASS" if first is None else "FAIL", f"{detail}; {where}", unit="dB"))
                tables[name] = report.as_json()
    return checks, tables


__all__ = ["layer_checks"]
