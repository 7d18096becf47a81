"""The parity report: every check of one build, as a table with its tolerances and verdict, and as JSON
written into the build (`parity_report.json`)."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

from minivlm.converters.atomic import FolderNotWritable, atomic_file
from minivlm.converters.fp16_range import RangeReport
from minivlm.converters.tolerances import Tolerance
from minivlm.errors import ArtifactError

from .checks import Check
from .statistics import ErrorStats
from .weight_audit import AuditResult

REPORT_FILE = "parity_report.json"


@dataclass
class ParityReport:
    """Every check of one build against the reference, as a table (`table()`) and as JSON (`as_json()`)."""

    build: Path
    manifest: dict
    reference_source: str
    images: list[str]
    tolerance: Tolerance
    checks: list[Check]
    graphs: dict[str, dict[str, ErrorStats]]
    per_image: list[dict]
    not_checked: list[str]
    seconds: float
    fp16_range: RangeReport | None = None
    platform: str = sys.platform
    weight_audit: AuditResult | None = None
    layers: dict[str, dict] | None = None  # Core AI: graph -> its layer table (`layers.layer_checks`)

    @property
    def target(self) -> str:
        return self.manifest["target"]

    @property
    def precision(self) -> str:
        return self.manifest["precision"]

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if c.status == "FAIL"]

    @property
    def passed(self) -> bool:
        return not self.failures

    def check(self, kind: str, name: str, metric: str) -> Check:
        """The row of one check (KeyError if the report has none)."""
        for c in self.checks:
            if (c.kind, c.name, c.metric) == (kind, name, metric):
                return c
        raise KeyError(f"no check {kind} {name} {metric}")

    def worst_graph(self) -> tuple[str, str, ErrorStats] | None:
        """(graph, output, stats) with the lowest PSNR over every output of every graph."""
        every = [(g, o, s) for g, outs in self.graphs.items() for o, s in outs.items() if s.numel]
        return min(every, key=lambda gos: gos[2].psnr_db, default=None)

    def headline(self) -> str:
        """One line: the build, the worst graph output and the task agreement."""
        m = self.manifest
        what = f"{m['target']} {m.get('delegate') or m.get('compute_units') or ''} {m['precision']}".replace("  ", " ")
        worst = self.worst_graph()
        parts = [what]
        if worst:
            g, o, s = worst
            parts.append(f"worst graph output {g}.{o}: PSNR {s.psnr_db:.1f} dB, max abs {s.max_abs:.3g} "
                         f"({s.relative_max_abs:.2g} of peak)")
        for metric in ("detections", "tags", "captions", "answers"):
            try:
                c = self.check("task", metric, "identical" if metric != "detections" else "matched")
            except KeyError:
                continue
            parts.append(f"{metric} {100 * c.value:.1f} %")
        return "; ".join(parts)

    def table(self) -> str:
        m = self.manifest
        rows = [("kind", "name", "metric", "value", "tolerance", "limit", "pass", "worst")]
        for c in self.checks:
            rows.append((c.kind, c.name, c.metric, c.value_text(), c.limit_text(), c.limit.name if c.limit else "",
                         c.status, c.where))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines = ["  ".join(v.ljust(w) if i not in (3, 4) else v.rjust(w) for i, (v, w) in enumerate(zip(r, widths))).rstrip()
                 for r in rows]
        lines.insert(1, "-" * max(len(line) for line in lines))
        photos = sum(n.startswith("photo_") for n in self.images)
        head = (f"parity of {self.build} ({m['target']}, {m.get('delegate') or m.get('compute_units')}, {m['precision']}) "
                f"against {self.reference_source}\non {len(self.images)} real images ({photos} scikit-image photos, "
                f"{len(self.images) - photos} demo scenes) in {self.seconds:.1f} s")
        used = {c.limit.name: c.limit for c in self.checks if c.limit is not None}
        if any(c.kind == "task" and c.name == "detections" for c in self.checks):  # the pairing rules behind them
            pairing = (self.tolerance.proposal_max_shift, self.tolerance.detection_match_iou)
            used |= {lim.name: lim for lim in pairing}
        legend = [f"tolerances ({m['target']} x {m['precision']}, minivlm/converters/tolerances.py):"]
        legend += [f"  {name} = {limit.value:g}: {limit.reason}" for name, limit in used.items()]
        tail = [f"not checked here: {n}" for n in self.not_checked]
        if self.fp16_range is not None and self.fp16_range.warnings:
            masked = [w for w in self.fp16_range.warnings if w.at_mask_level]
            others = [w for w in self.fp16_range.warnings if not w.at_mask_level]
            if masked:
                tail.append(f"fp16 range: {len(masked)} tensors at the additive attention mask's level (|x| ~ 1e4, exact in "
                            f"fp16, {masked[0].headroom:.1f}x headroom by design); all in {REPORT_FILE}")
            tail += [f"fp16 range warning: {w.describe()}" for w in others[:10]]
            if len(others) > 10:
                tail.append(f"fp16 range: {len(others) - 10} more warnings in {REPORT_FILE}")
        verdict = self.verdict()
        return "\n".join([head, "", *lines, "", *legend, *tail, verdict])

    def verdict(self) -> str:
        if self.passed:
            return f"PASSED: {len([c for c in self.checks if c.status == 'PASS'])} checks within tolerance"
        parts = []
        for c in self.failures:
            stats = ""
            if c.kind == "graph" and c.name in self.graphs:
                s = self.graphs[c.name].get(c.where.split(" ")[0]) if c.where else None
                if s is not None:
                    stats = (f" [max abs {s.max_abs:.3g}, mean abs {s.mean_abs:.3g}, PSNR {s.psnr_db:.1f} dB, "
                             f"SQNR {s.sqnr_db:.1f} dB, cosine {s.min_cosine:.4f}]")
            parts.append(f"{c.kind} {c.name} {c.metric} = {c.value_text()}, expected {c.limit_text()}"
                         f"{' at ' + c.where if c.where else ''}{stats}")
        return f"FAILED: {len(self.failures)} of {len([c for c in self.checks if c.status != '-'])} checks:\n  " + "\n  ".join(parts)

    def as_json(self) -> dict:
        m = self.manifest
        return {
            "build": str(self.build), "model": m["model"]["name"], "preset": m["model"]["preset"],
            "target": m["target"], "delegate": m.get("delegate"), "precision": m["precision"],
            "compute_units": m.get("compute_units"), "platform": self.platform, "reference": self.reference_source,
            "images": self.images, "passed": self.passed, "seconds": round(self.seconds, 2),
            "tolerances": self.tolerance.as_json(),
            "checks": [c.as_json() for c in self.checks],
            "graphs": {g: {o: s.as_json() for o, s in outs.items()} for g, outs in self.graphs.items()},
            "per_image": self.per_image,
            "fp16_range": self.fp16_range.summary() | {"tensors": self.fp16_range.table()} if self.fp16_range else None,
            "not_checked": self.not_checked,
            "weight_audit": self.weight_audit.as_json() if self.weight_audit else None,
            "layers": self.layers,
        }


def write_report(report: ParityReport, folder: Path | None = None) -> Path:
    """Write `parity_report.json` into the build folder (or `folder`), atomically, with the mode a new file gets
    under the process umask. ArtifactError in one line if the folder takes no new file."""
    folder = Path(folder or report.build)
    path = folder / REPORT_FILE
    try:
        with atomic_file(path, "w", encoding="utf-8") as f:
            json.dump(report.as_json(), f, indent=1, ensure_ascii=False)
            f.write("\n")
    except FolderNotWritable as err:
        raise ArtifactError(f"cannot write {REPORT_FILE} into {folder}: {err.strerror or type(err).__name__}; "
                            f"the table above is the whole report") from None
    return path
