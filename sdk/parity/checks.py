"""The report's rows (`Check`) and the per-graph checks: each graph of a build on the reference's recorded inputs,
each Core ML spec's I/O against the manifest, and the fp16 range of every tensor."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from minivlm.converters.fp16_range import RangeReport, measure
from minivlm.converters.specs import stack_calls
from minivlm.converters.tolerances import LIMITS, Limit, Tolerance
from minivlm.errors import ParityError

from .reference import ReferenceRun
from .statistics import ErrorStats, json_number


@dataclass
class Check:
    """One row of the report. `limit` None: reported, not judged. `status` PASS, FAIL, WARN or '-'."""

    kind: str  # graph | step | task | build
    name: str
    metric: str
    value: float | str
    limit: Limit | None = None
    status: str = "-"
    where: str = ""  # the worst output, call or image
    unit: str = ""  # "%" renders a share as a percentage, "dB" a ratio
    expected: str = ""  # what a structural check (no numeric limit) requires

    def value_text(self) -> str:
        if isinstance(self.value, str):
            return self.value
        if self.unit == "%":
            return f"{100 * self.value:.1f} %"
        if self.unit == "dB":
            return f"{self.value:.1f} dB" if math.isfinite(self.value) else f"{self.value} dB"
        if self.metric == "cosine":
            return f"{self.value:.6f}"
        return f"{self.value:.3g}"

    def limit_text(self) -> str:
        if self.limit is None:
            return self.expected or "-"
        if self.unit == "%":
            return f"{'<=' if self.limit.bound == 'max' else '>='} {100 * self.limit.value:g} %"
        return self.limit.describe() + (" dB" if self.unit == "dB" else "")

    def as_json(self) -> dict:
        return {"kind": self.kind, "name": self.name, "metric": self.metric,
                "value": json_number(self.value) if isinstance(self.value, float) else self.value,
                "limit": self.limit.as_json() if self.limit else None, "expected": self.expected or None,
                "status": self.status, "where": self.where}


def structural(kind: str, name: str, metric: str, ok: bool, expected: str, where: str) -> Check:
    """A check with no numeric tolerance: the thing is exactly as expected, or the check fails."""
    return Check(kind, name, metric, "yes" if ok else "no", None, "PASS" if ok else "FAIL", "" if ok else where,
                 expected=expected)


def judged(kind: str, name: str, metric: str, value: float, limit: Limit | None, where: str = "", unit: str = "") -> Check:
    status = "-" if limit is None else ("PASS" if limit.holds(value) else "FAIL")
    if isinstance(value, float) and math.isnan(value) and limit is not None:
        status = "FAIL"
    return Check(kind, name, metric, value, limit, status, where, unit)


def graph_checks(build_graphs: dict[str, Callable], ref: ReferenceRun, manifest: dict, tol: Tolerance,
                 batched: dict[str, tuple[str, int]] | None = None,
                 ) -> tuple[list[Check], dict[str, dict[str, ErrorStats]]]:
    """Each graph of the build on the reference's recorded inputs, every output compared over every call. A
    batched graph (`batched`: name -> (graph it runs, batch), its runner in `build_graphs`) runs on those calls
    stacked `batch` at a time, against the reference module on the same stack."""
    checks: list[Check] = []
    stats: dict[str, dict[str, ErrorStats]] = {}
    modules = ref.reference.pipeline.graphs.modules()
    calls = {name: [(f"{run.name} call {k}", call) for run in ref.runs for k, call in enumerate(run.calls.get(name, []))]
             for name in modules}
    for name, (graph, batch) in (batched or {}).items():
        calls[name] = _stacked_calls(modules[graph], calls[graph], batch)
    for name, module in [*modules.items(), *((b, modules[g]) for b, (g, _) in (batched or {}).items())]:
        out_names, in_names = module.output_names, module.input_names
        entry = manifest["graphs"][name]
        listed_in, listed_out = tuple(i["name"] for i in entry["inputs"]), tuple(o["name"] for o in entry["outputs"])
        same_io = listed_in == in_names and listed_out == out_names
        checks.append(structural("graph", name, "manifest I/O order", same_io, "= reference",
                                  f"manifest {list(listed_in)} -> {list(listed_out)}, "
                                  f"reference {list(in_names)} -> {list(out_names)}"))
        per_output = {o: ErrorStats() for o in out_names}
        for where, (inputs, want) in calls[name]:
            got = build_graphs[name](*inputs)
            if len(got) != len(want):
                raise ParityError(f"{name} returned {len(got)} outputs on {where}, the reference {len(want)}")
            for o, w, g in zip(out_names, want, got):
                per_output[o].add(w, g, where)
        stats[name] = per_output
        checks += _graph_rows(name, per_output, tol)
    return checks, stats


def _stacked_calls(module, calls: list, batch: int) -> list:
    """`calls` (where, (inputs, outputs)) of one graph in groups of `batch`, each group's inputs stacked along their
    batch axes (the last group wraps around to the first calls), with the reference module's outputs on them."""
    stacked = []
    for start in range(0, len(calls), batch):
        group = [calls[(start + i) % len(calls)] for i in range(batch)]
        inputs = stack_calls([call[1][0] for call in group], module.input_names)
        with torch.no_grad():
            outputs = tuple(module(*inputs))
        stacked.append((f"{group[0][0]} and the next {batch - 1} calls stacked", (inputs, outputs)))
    return stacked


def _graph_rows(name: str, per_output: dict[str, ErrorStats], tol: Tolerance) -> list[Check]:
    """One row per metric: the worst output of the graph, named."""
    outs = [(o, s) for o, s in per_output.items() if s.calls]
    rows = []
    broken = [(o, s) for o, s in outs if s.shape_mismatch]
    if broken:
        o, s = broken[0]
        rows.append(structural("graph", name, "output shapes", False, "= reference", f"{o}: {s.shape_mismatch}"))
        outs = [(o, s) for o, s in outs if not s.shape_mismatch]
    if not outs:
        return rows

    def worst(key: Callable[[ErrorStats], float], largest: bool) -> tuple[str, ErrorStats]:
        return (max if largest else min)(outs, key=lambda os: key(os[1]))

    o, s = worst(lambda s: s.max_abs, True)
    rows.append(judged("graph", name, "max abs", s.max_abs, None, f"{o} ({s.worst_call})"))
    o, s = worst(lambda s: s.relative_max_abs, True)
    rows.append(judged("graph", name, "max abs / peak", s.relative_max_abs, tol.graph_max_abs, f"{o} ({s.worst_call})"))
    o, s = worst(lambda s: s.mean_abs, True)
    rows.append(judged("graph", name, "mean abs", s.mean_abs, None, o))
    o, s = worst(lambda s: s.psnr_db, False)
    rows.append(judged("graph", name, "PSNR", s.psnr_db, tol.graph_min_psnr_db, o, unit="dB"))
    o, s = worst(lambda s: s.sqnr_db, False)
    rows.append(judged("graph", name, "SQNR", s.sqnr_db, None, o, unit="dB"))
    o, s = worst(lambda s: s.min_cosine, False)
    rows.append(judged("graph", name, "cosine", s.min_cosine, tol.graph_min_cosine, o))
    return rows


def coreml_spec_checks(build: Path, manifest: dict) -> list[Check]:
    """Each graph's function in the build's `.mlpackage`: its saved inputs and outputs (names, order, shapes,
    dtypes) against the manifest (a build that disagrees is already refused by `verify_build`; the rows show in
    the report what was checked)."""
    from minivlm.build_checks import coreml_function_io

    checks = []
    for name, entry in manifest["graphs"].items():  # the family's graphs, then its batched ones
        saved = coreml_function_io(build / entry["file"], entry["function"])
        have = (saved["inputs"], saved["outputs"])
        want = tuple([(e["runtime_name"], tuple(e["shape"]), e["runtime_dtype"]) for e in entry[io]] for io in ("inputs", "outputs"))
        checks.append(structural("graph", name, "Core ML spec I/O", have == want, "= manifest",
                                  f"function {entry['function']}: spec {have[0]} -> {have[1]}; manifest {want[0]} -> {want[1]}"))
    return checks


def range_checks(ref: ReferenceRun, manifest: dict) -> tuple[list[Check], RangeReport]:
    """Max |value| of every tensor of the reference graphs on these images, against the fp16 maximum (recorded
    by the reference run, or now on its recorded graph inputs)."""
    report = ref.fp16_range
    modules = ref.reference.pipeline.graphs.modules()
    if report is None:
        report = measure([(name, module, [i["name"] for i in manifest["graphs"][name]["inputs"]],
                           [ins for run in ref.runs for ins, _ in run.calls.get(name, [])])
                          for name, module in modules.items()], len(ref.images))
    checks = []
    for name in modules:
        mine = [t for t in report.tensors if t.graph == name]  # largest first
        masked = any(t.at_mask_level for t in mine)
        t = next((t for t in mine if not t.at_mask_level), None)
        if t is None:
            continue
        status = "FAIL" if t.overflows else ("WARN" if t.near else "PASS")
        note = "; the attention mask sits at |x| = 1e4 by design" if masked else ""
        checks.append(Check("graph", name, "fp16 headroom", t.headroom, LIMITS["FP16_RANGE_MARGIN"], status,
                            f"{t.tensor} |x| = {t.max_abs:.4g}{note}"))
    return checks, report

