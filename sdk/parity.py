"""Parity: a build run by its real runtime next to python_ref, per graph, per host step and per task
(docs/ARCHITECTURE.md §8).

On real inputs only (scikit-image photos and demo scenes the model never trained or calibrated on):
1. the reference runs every task on each image with its six graphs recorded (inputs and outputs of each call);
2. per graph, the build's runner gets exactly the reference's recorded inputs, and each output is compared over
   all calls: max abs error (and as a share of the output's peak |ref|), mean abs error, PSNR (peak = max
   |ref|), SQNR and the worst call's cosine;
3. per host step, python_ref's host code on the build's own graph outputs must keep the same integer decisions
   (proposals, region labels and proposal indices, packed token ids) as on the reference's;
4. per task, the build end to end: detections IoU-matched with the same label (never index by index), the
   same tags, caption tokens and answers, close detection scores and match probabilities.
Each bound is a named constant of `minivlm.converters.tolerances`, per target × precision, printed with its
reason in every report. Before comparing, the reference must reproduce the goldens stored in the build: a build
made from other weights is a ParityError, not a list of failures.

Core ML (and ExecuTorch's Core ML delegate) runs only on macOS. Elsewhere the report checks what can be
checked — the files against their sha256, each `.mlpackage` spec's inputs and outputs against the manifest,
and the fp16 range of every tensor on these images — and lists the execution checks as waiting for macOS.
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch

from minivlm.converters.atomic import FolderNotWritable, atomic_file
from minivlm.converters.fp16_range import RangeRecorder, RangeReport, measure
from minivlm.converters.manifest import needs_macos
from minivlm.converters.recorder import Call, recorded
from minivlm.converters.samples import PHOTO_TEXT, SCENE_STREAM
from minivlm.converters.tolerances import LIMITS, Limit, Tolerance, tolerance
from minivlm.errors import ArtifactError, ParityError
from minivlm.loading import ReferencePipeline
from minivlm.python_ref.generate import greedy
from minivlm.python_ref.pipeline import GRAPH_NAMES, Detection, Pipeline
from minivlm.python_ref.postprocess import box_iou, select_proposals
from minivlm.python_ref.scenes import COUNT_QUESTION, caption_for, generate_scene

REPORT_FILE = "parity_report.json"

# Photos: people, food, an animal, a landscape-format object; none resembles a demo scene. The sweep adds every
# other photo scikit-image ships inside its wheel (camera is grayscale, replicated to RGB; logo's alpha dropped).
DEFAULT_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")
ALL_PHOTOS = (*DEFAULT_PHOTOS, "immunohistochemistry", "hubble_deep_field", "retina", "colorwheel", "logo", "camera")
PHOTO_QUESTIONS = (COUNT_QUESTION, "what color is the circle?", "is there a red square?")
# Scenes of the goldens' stream from index 100 on: goldens use 0-1 and int8 calibration 2-13, training stream 1.
PARITY_SCENE_START = 100
DEFAULT_SCENES = 24
SWEEP_SCENES = 200


@dataclass(frozen=True)
class ParityImage:
    """One real input and what the tasks ask about it."""

    name: str
    source: str
    image: np.ndarray  # uint8 (H, W, 3)
    questions: tuple[str, ...]
    texts: tuple[str, ...]


def _photo(name: str) -> ParityImage:
    try:
        from skimage import data  # dev dependency; these photos ship inside the wheel (no download)
    except ImportError:
        raise ParityError("parity on real photos needs scikit-image (pip install scikit-image)") from None
    pixels = np.asarray(getattr(data, name)())
    if pixels.ndim == 2:
        pixels = np.repeat(pixels[..., None], 3, axis=2)
    return ParityImage(f"photo_{name}", f"skimage.data.{name}()", np.ascontiguousarray(pixels[..., :3], dtype=np.uint8),
                       PHOTO_QUESTIONS, (PHOTO_TEXT,))


def _scene(index: int) -> ParityImage:
    scene, other = generate_scene(SCENE_STREAM, index), generate_scene(SCENE_STREAM, index + 1)
    # The leftmost object (short enough for every preset's text length), and usually a mismatch from the next scene.
    texts = (caption_for(scene.boxes[:1], scene.labels[:1]), caption_for(other.boxes[:1], other.labels[:1]))
    return ParityImage(f"scene_{SCENE_STREAM}_{index}", f"python_ref.scenes.generate_scene({SCENE_STREAM}, {index})",
                       np.asarray(scene.image), tuple(q for q, _ in scene.qa), texts)


def parity_images(scenes: int = DEFAULT_SCENES, photos: Iterable[str] = DEFAULT_PHOTOS) -> list[ParityImage]:
    """Photos first, then `scenes` demo scenes no build trained or calibrated on."""
    if scenes < 0:
        raise ParityError(f"scenes is {scenes}, expected 0 or more")
    return [*(_photo(p) for p in photos), *(_scene(PARITY_SCENE_START + i) for i in range(scenes))]


@dataclass
class ImageRun:
    """What one pipeline did on one image: every task's result and the host steps' integer decisions."""

    name: str
    detections: list[Detection]
    tags: tuple[str, ...]
    proposals: torch.Tensor  # (K, 4) kept RPN proposals (host step "proposals")
    valid: torch.Tensor  # (K,) bool
    labels: tuple[int, ...]  # host step "region_selection"
    proposal_indices: tuple[int, ...]
    packed: tuple[tuple[torch.Tensor, ...], ...]  # host step "question_packing", one per question
    caption: tuple[int, ...]
    caption_text: str
    answers: tuple[str, ...]
    match: tuple[float, ...]
    calls: dict[str, list[Call]] = field(repr=False, default_factory=dict)


@torch.no_grad()
def run_image(pipeline: Pipeline, sample: ParityImage, ranges: RangeRecorder | None = None) -> ImageRun:
    """Every task on one image through `pipeline` (reference or build), with its graph calls recorded (and, for
    the eager reference, the range of every tensor into `ranges`)."""
    calls: dict[str, list[Call]] = {}
    measured = None if ranges is None else (lambda name, graph, args: ranges(name, graph, graph.input_names, args))
    traced = recorded(pipeline, calls, measured)
    tee = pipeline.cfg.tee
    found = traced.regions(sample.image)
    (_,), stage1 = calls["tee_stage1"][0]
    proposals, valid = select_proposals(stage1[-2][0], stage1[-1][0], pipeline.anchors, pipeline.level_sizes, tee.rpn,
                                        tee.image_size)
    caption = greedy(traced.graphs.caption, traced.tokenizer, traced.pack(found, "", require_text=False))
    return ImageRun(
        sample.name, traced.detections_of(found), found.tags, proposals, valid,
        tuple(found.regions.labels.tolist()), tuple(found.regions.proposal_indices.tolist()),
        tuple(traced.pack(found, q).as_tuple() for q in sample.questions),
        tuple(caption.token_ids), traced.tokenizer.decode(list(caption.token_ids)),
        tuple(traced.answer_of(found, q) for q in sample.questions),
        tuple(traced.match_of(found, t) for t in sample.texts), calls,
    )


@dataclass
class ReferenceRun:
    """The reference on a set of images, computed once and compared with any number of builds of its model."""

    reference: ReferencePipeline
    images: list[ParityImage]
    runs: list[ImageRun]
    seconds: float
    fp16_range: RangeReport | None = None  # every tensor's max |value| on these images, if recorded


def run_reference(reference: ReferencePipeline, images: list[ParityImage] | None = None,
                  progress: Callable[[Iterable], Iterable] = lambda it: it, *, fp16_range: bool = False) -> ReferenceRun:
    """Run the reference on `images` (default `parity_images()`), recording every graph call, and with
    `fp16_range` the range of every tensor (what a build computing in fp16 is checked against)."""
    images = parity_images() if images is None else images
    if not images:
        raise ParityError("parity needs at least one image")
    t0 = time.perf_counter()
    ranges = RangeRecorder() if fp16_range else None
    runs = [run_image(reference.pipeline, s, ranges) for s in progress(images)]
    report = ranges.report(len(images)) if ranges is not None else None
    return ReferenceRun(reference, images, runs, time.perf_counter() - t0, report)


# --- error statistics -----------------------------------------------------------------------------------------


@dataclass
class ErrorStats:
    """Error of one graph output over every call (executorch's error_statistics, accumulated)."""

    calls: int = 0
    numel: int = 0
    max_abs: float = 0.0
    sum_abs: float = 0.0
    sum_sq_err: float = 0.0
    sum_sq_ref: float = 0.0
    peak: float = 0.0  # max |ref|
    min_cosine: float = 1.0
    worst_call: str = ""  # where the largest error was
    shape_mismatch: str = ""

    def add(self, ref: torch.Tensor, got: torch.Tensor, where: str) -> None:
        self.calls += 1
        if tuple(ref.shape) != tuple(got.shape):
            self.shape_mismatch = self.shape_mismatch or f"{where}: shape {tuple(got.shape)}, the reference's {tuple(ref.shape)}"
            return
        r, g = ref.detach().to(torch.float64).flatten(), got.detach().to(torch.float64).flatten()
        err = g - r
        finite = bool(torch.isfinite(g).all())
        biggest = (float(err.abs().max()) if r.numel() else 0.0) if finite else math.inf
        if biggest > self.max_abs or not self.worst_call:
            self.max_abs, self.worst_call = biggest, where
        self.numel += r.numel()
        self.sum_abs += float(err.abs().sum()) if finite else math.inf
        self.sum_sq_err += float((err * err).sum()) if finite else math.inf
        self.sum_sq_ref += float((r * r).sum())
        self.peak = max(self.peak, float(r.abs().max()) if r.numel() else 0.0)
        self.min_cosine = min(self.min_cosine, _cosine(r, g) if finite else -1.0)

    @property
    def relative_max_abs(self) -> float:
        """max |build - ref| / max |ref|: the error on the output's own scale."""
        return self.max_abs / self.peak if self.peak > 0 else (0.0 if self.max_abs == 0 else math.inf)

    @property
    def mean_abs(self) -> float:
        return self.sum_abs / self.numel if self.numel else 0.0

    @property
    def psnr_db(self) -> float:
        mse = self.sum_sq_err / self.numel if self.numel else 0.0
        if mse == 0:
            return math.inf
        return 10 * math.log10(self.peak ** 2 / mse) if self.peak > 0 and math.isfinite(mse) else -math.inf

    @property
    def sqnr_db(self) -> float:
        if self.sum_sq_err == 0:
            return math.inf
        finite = math.isfinite(self.sum_sq_err)
        return 10 * math.log10(self.sum_sq_ref / self.sum_sq_err) if self.sum_sq_ref > 0 and finite else -math.inf

    def as_json(self) -> dict:
        return {"calls": self.calls, "max_abs": _num(self.max_abs), "max_abs_over_peak": _num(self.relative_max_abs),
                "mean_abs": _num(self.mean_abs), "psnr_db": _num(self.psnr_db), "sqnr_db": _num(self.sqnr_db),
                "min_cosine": _num(self.min_cosine), "peak": _num(self.peak), "worst_call": self.worst_call,
                "shape_mismatch": self.shape_mismatch or None}


def _cosine(r: torch.Tensor, g: torch.Tensor) -> float:
    nr, ng = float(r.norm()), float(g.norm())
    if nr == 0 or ng == 0:
        return 1.0 if nr == ng else 0.0
    return float(r @ g) / (nr * ng)


def _num(x: float) -> float | str:
    """JSON has no inf/nan: they become strings."""
    return x if math.isfinite(x) else str(x)


# --- the report -----------------------------------------------------------------------------------------------


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
                "value": _num(self.value) if isinstance(self.value, float) else self.value,
                "limit": self.limit.as_json() if self.limit else None, "expected": self.expected or None,
                "status": self.status, "where": self.where}


def _structural(kind: str, name: str, metric: str, ok: bool, expected: str, where: str) -> Check:
    """A check with no numeric tolerance: the thing is exactly as expected, or the check fails."""
    return Check(kind, name, metric, "yes" if ok else "no", None, "PASS" if ok else "FAIL", "" if ok else where,
                 expected=expected)


def _judged(kind: str, name: str, metric: str, value: float, limit: Limit | None, where: str = "", unit: str = "") -> Check:
    status = "-" if limit is None else ("PASS" if limit.holds(value) else "FAIL")
    if isinstance(value, float) and math.isnan(value) and limit is not None:
        status = "FAIL"
    return Check(kind, name, metric, value, limit, status, where, unit)


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
        if any(c.kind == "task" for c in self.checks):  # the pairing rules behind the step and detection rows
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


# --- the checks -----------------------------------------------------------------------------------------------


def _load_golden(build: Path, golden_dir: str, entry: dict) -> torch.Tensor:
    from minivlm.build_checks import inside

    dtype = np.dtype("bool") if entry["dtype"] == "bool" else np.dtype(entry["dtype"]).newbyteorder("<")
    data = inside(build, f"{golden_dir}/{entry['file']}").read_bytes()
    return torch.from_numpy(np.frombuffer(data, dtype=dtype).reshape(entry["shape"]).copy())


def _golden_calls(build: Path, golden_dir: str) -> list[tuple[str, str, list[torch.Tensor], dict[str, torch.Tensor]]]:
    """(image, graph, inputs, outputs by name) of every graph call stored in the build's goldens; ArtifactError
    for an index that is not what minivlm-convert writes."""
    from minivlm.build_checks import first_line

    index_path = build / golden_dir / "index.json"
    try:
        index = json.loads(index_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ParityError(f"{index_path} is unreadable ({type(err).__name__}); the build has no usable goldens") from None
    try:
        calls = []
        for image, case in index["cases"].items():
            for graph, graph_calls in case["graphs"].items():
                if graph not in GRAPH_NAMES:
                    raise KeyError(graph)
                for call in graph_calls:
                    calls.append((image, graph, [_load_golden(build, golden_dir, e) for e in call["inputs"].values()],
                                  {name: _load_golden(build, golden_dir, e) for name, e in call["outputs"].items()}))
    except (KeyError, TypeError, ValueError, AttributeError, OSError) as err:
        raise ArtifactError(f"{index_path} is malformed ({type(err).__name__}: {first_line(err)}); rebuild with "
                            f"minivlm-convert") from None
    return calls


@torch.no_grad()
def check_goldens(build: Path, manifest: dict, reference: ReferencePipeline, source: str) -> int:
    """ParityError unless the reference's graphs reproduce the build's stored goldens (within fp32 tolerance):
    otherwise the build was made from other weights, and comparing it with this reference means nothing.
    Returns the number of graph calls checked."""
    limit = LIMITS["FP32_MAX_ABS"]
    modules = reference.pipeline.graphs.modules()
    checked = 0
    for image, graph, inputs, stored in _golden_calls(build, manifest.get("golden_dir", "golden")):
        outputs = modules[graph](*inputs)
        for (name, want), got in zip(stored.items(), outputs, strict=True):
            stats = ErrorStats()
            stats.add(want, got, image)
            if stats.shape_mismatch or not limit.holds(stats.relative_max_abs):
                raise ParityError(
                    f"the reference ({source}) is not the model this build was made from: its {graph} output "
                    f"{name} on {image} differs from the build's goldens by {stats.relative_max_abs:.3g} of its "
                    f"peak (expected {limit.describe()}); rebuild, or pass --model with the weights it was built from")
        checked += 1
    return checked


def _graph_checks(build_graphs: dict[str, Callable], ref: ReferenceRun, manifest: dict, tol: Tolerance,
                  ) -> tuple[list[Check], dict[str, dict[str, ErrorStats]]]:
    """Each graph of the build on the reference's recorded inputs, every output compared over every call."""
    checks: list[Check] = []
    stats: dict[str, dict[str, ErrorStats]] = {}
    modules = ref.reference.pipeline.graphs.modules()
    for name in GRAPH_NAMES:
        module = modules[name]
        out_names, in_names = module.output_names, module.input_names
        entry = manifest["graphs"][name]
        listed_in, listed_out = tuple(i["name"] for i in entry["inputs"]), tuple(o["name"] for o in entry["outputs"])
        same_io = listed_in == in_names and listed_out == out_names
        checks.append(_structural("graph", name, "manifest I/O order", same_io, "= reference",
                                  f"manifest {list(listed_in)} -> {list(listed_out)}, "
                                  f"reference {list(in_names)} -> {list(out_names)}"))
        per_output = {o: ErrorStats() for o in out_names}
        for run in ref.runs:
            for k, (inputs, want) in enumerate(run.calls.get(name, [])):
                got = build_graphs[name](*inputs)
                where = f"{run.name} call {k}"
                if len(got) != len(want):
                    raise ParityError(f"{name} returned {len(got)} outputs on {where}, the reference {len(want)}")
                for o, w, g in zip(out_names, want, got):
                    per_output[o].add(w, g, where)
        stats[name] = per_output
        checks += _graph_rows(name, per_output, tol)
    return checks, stats


def _graph_rows(name: str, per_output: dict[str, ErrorStats], tol: Tolerance) -> list[Check]:
    """One row per metric: the worst output of the graph, named."""
    outs = [(o, s) for o, s in per_output.items() if s.calls]
    rows = []
    broken = [(o, s) for o, s in outs if s.shape_mismatch]
    if broken:
        o, s = broken[0]
        rows.append(_structural("graph", name, "output shapes", False, "= reference", f"{o}: {s.shape_mismatch}"))
        outs = [(o, s) for o, s in outs if not s.shape_mismatch]
    if not outs:
        return rows

    def worst(key: Callable[[ErrorStats], float], largest: bool) -> tuple[str, ErrorStats]:
        return (max if largest else min)(outs, key=lambda os: key(os[1]))

    o, s = worst(lambda s: s.max_abs, True)
    rows.append(_judged("graph", name, "max abs", s.max_abs, None, f"{o} ({s.worst_call})"))
    o, s = worst(lambda s: s.relative_max_abs, True)
    rows.append(_judged("graph", name, "max abs / peak", s.relative_max_abs, tol.graph_max_abs, f"{o} ({s.worst_call})"))
    o, s = worst(lambda s: s.mean_abs, True)
    rows.append(_judged("graph", name, "mean abs", s.mean_abs, None, o))
    o, s = worst(lambda s: s.psnr_db, False)
    rows.append(_judged("graph", name, "PSNR", s.psnr_db, tol.graph_min_psnr_db, o, unit="dB"))
    o, s = worst(lambda s: s.sqnr_db, False)
    rows.append(_judged("graph", name, "SQNR", s.sqnr_db, None, o, unit="dB"))
    o, s = worst(lambda s: s.min_cosine, False)
    rows.append(_judged("graph", name, "cosine", s.min_cosine, tol.graph_min_cosine, o))
    return rows


def match_detections(ref: list[Detection], got: list[Detection], min_iou: float) -> list[tuple[int, int, float]]:
    """Pairs (i_ref, j_got, IoU) of the same label with IoU >= min_iou, greedily by IoU (never by index)."""
    if not ref or not got:
        return []
    a = torch.tensor([d.box for d in ref], dtype=torch.float64)
    b = torch.tensor([d.box for d in got], dtype=torch.float64)
    iou = box_iou(a, b)
    # Two empty boxes (clipped to a zero-area sliver at the image edge) have IoU 0/0: pair them by position.
    same_place = (a[:, None] - b[None]).abs().amax(dim=-1) <= 1e-3
    iou = torch.where(iou.isnan(), same_place.double(), iou)
    same_label = torch.tensor([[r.label == g.label for g in got] for r in ref])
    iou = torch.where(same_label, iou, torch.full_like(iou, -1.0))
    pairs: list[tuple[int, int, float]] = []
    taken_ref, taken_got = set(), set()
    for flat in torch.argsort(iou.flatten(), descending=True, stable=True).tolist():
        i, j = divmod(flat, len(got))
        if float(iou[i, j]) < min_iou:
            break
        if i not in taken_ref and j not in taken_got:
            taken_ref.add(i)
            taken_got.add(j)
            pairs.append((i, j, float(iou[i, j])))
    return pairs


def _detections_json(found: list[Detection]) -> list[dict]:
    return [{"label": d.label, "score": round(d.score, 6), "box": [round(v, 2) for v in d.box]} for d in found]


def _host_and_task_checks(runs: list[tuple[ImageRun, ImageRun]], tol: Tolerance) -> tuple[list[Check], list[dict]]:
    n = len(runs)
    matched = total = 0
    score_diffs: list[float] = []
    match_diffs: list[float] = []
    same = {"proposals": 0, "region_selection": 0, "question_packing": 0, "tags": 0, "captions": 0}
    answers_same = answers_total = 0
    first: dict[str, str] = {}
    per_image = []
    for ref, got in runs:
        pairs = match_detections(ref.detections, got.detections, tol.detection_match_iou.value)
        matched += 2 * len(pairs)
        total += len(ref.detections) + len(got.detections)
        score_diffs += [abs(ref.detections[i].score - got.detections[j].score) for i, j, _ in pairs]
        match_diffs += [abs(a - b) for a, b in zip(ref.match, got.match)]
        flags = {
            "proposals": _same_proposals(ref, got, tol.proposal_max_shift.value),
            "region_selection": ref.labels == got.labels and ref.proposal_indices == got.proposal_indices,
            "question_packing": len(ref.packed) == len(got.packed) and all(
                all(torch.equal(a, b) for a, b in zip(pr, pg) if not a.is_floating_point()) for pr, pg in zip(ref.packed, got.packed)),
            "tags": ref.tags == got.tags,
            "captions": ref.caption == got.caption,
            "detections": len(pairs) == len(ref.detections) == len(got.detections),
        }
        for key, ok in flags.items():
            same[key] = same.get(key, 0) + ok
            if not ok:
                first.setdefault(key, ref.name)
        answer_ok = [a == b for a, b in zip(ref.answers, got.answers)]
        answers_same += sum(answer_ok)
        answers_total += len(answer_ok)
        if not all(answer_ok):
            first.setdefault("answers", ref.name)
        per_image.append({
            "image": ref.name,
            "detections": {"reference": _detections_json(ref.detections), "build": _detections_json(got.detections),
                           "pairs": [[i, j, round(iou, 4)] for i, j, iou in pairs]},
            "tags": {"reference": list(ref.tags), "build": list(got.tags)},
            "caption": {"reference": ref.caption_text, "build": got.caption_text, "identical_tokens": flags["captions"]},
            "answers": {"reference": list(ref.answers), "build": list(got.answers)},
            "match": {"reference": list(ref.match), "build": list(got.match)},
            "host_steps_identical": {k: flags[k] for k in ("proposals", "region_selection", "question_packing")},
        })
    mean = lambda xs: sum(xs) / len(xs) if xs else 0.0  # noqa: E731
    checks = [
        _judged("step", step, "identical", same[step] / n, tol.same_proposals if step == "proposals" else tol.host_exact,
                _first(first, step), unit="%")
        for step in ("proposals", "region_selection", "question_packing")
    ]
    checks += [
        _judged("task", "detections", "matched", matched / total if total else 1.0, tol.detections,
                _first(first, "detections"), unit="%"),
        _judged("task", "detections", "max score diff", max(score_diffs, default=0.0), tol.score_max_diff),
        _judged("task", "detections", "mean score diff", mean(score_diffs), tol.score_mean_diff),
        _judged("task", "tags", "identical", same["tags"] / n, tol.tags, _first(first, "tags"), unit="%"),
        _judged("task", "captions", "identical", same["captions"] / n, tol.captions, _first(first, "captions"), unit="%"),
        _judged("task", "answers", "identical", answers_same / answers_total if answers_total else 1.0, tol.answers,
                _first(first, "answers"), unit="%"),
        _judged("task", "match", "max prob diff", max(match_diffs, default=0.0), tol.score_max_diff),
        _judged("task", "match", "mean prob diff", mean(match_diffs), tol.score_mean_diff),
    ]
    return checks, per_image


def _same_proposals(ref: ImageRun, got: ImageRun, max_shift: float) -> bool:
    """The same RPN proposals kept, in the same order: the valid rows agree and each box is within `max_shift` px."""
    return bool(torch.equal(ref.valid, got.valid)) and float((ref.proposals - got.proposals).abs().max()) <= max_shift


def _first(first: dict[str, str], key: str) -> str:
    return f"first: {first[key]}" if key in first else ""


def _coreml_spec_checks(build: Path, manifest: dict) -> list[Check]:
    """Each `.mlpackage`'s saved inputs and outputs (names, order, shapes, dtypes) against the manifest (a build
    that disagrees is already refused by `verify_build`; the rows show in the report what was checked)."""
    import coremltools as ct

    from minivlm.build_checks import coreml_io

    checks = []
    for name in GRAPH_NAMES:
        entry = manifest["graphs"][name]
        saved = coreml_io(ct.utils.load_spec(str(build / entry["file"])))
        have = (saved["inputs"], saved["outputs"])
        want = tuple([(e["runtime_name"], tuple(e["shape"]), e["runtime_dtype"]) for e in entry[io]] for io in ("inputs", "outputs"))
        checks.append(_structural("graph", name, "Core ML spec I/O", have == want, "= manifest",
                                  f"spec {have[0]} -> {have[1]}; manifest {want[0]} -> {want[1]}"))
    return checks


def _range_checks(ref: ReferenceRun, manifest: dict) -> tuple[list[Check], RangeReport]:
    """Max |value| of every tensor of the reference graphs on these images, against the fp16 maximum (recorded
    by the reference run, or now on its recorded graph inputs)."""
    report = ref.fp16_range
    if report is None:
        modules = ref.reference.pipeline.graphs.modules()
        report = measure([(name, modules[name], [i["name"] for i in manifest["graphs"][name]["inputs"]],
                           [ins for run in ref.runs for ins, _ in run.calls.get(name, [])]) for name in GRAPH_NAMES],
                         len(ref.images))
    checks = []
    for name in GRAPH_NAMES:
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


def _computes_in_fp16(manifest: dict) -> bool:
    return manifest["target"] == "coreml" and manifest["precision"] in ("fp16", "int8")


def check_parity(build: str | Path, ref: ReferenceRun, *, progress: Callable[[Iterable], Iterable] = lambda it: it,
                 platform: str = sys.platform) -> ParityReport:
    """Compare the build in `build` with the reference run `ref` (see the module doc). Raises ArtifactError for
    a folder that is not a valid build, ParityError if the reference is not the model it was built from; a
    build that disagrees is a report with failed checks (`report.passed` False)."""
    from minivlm.build_checks import verify_build
    from minivlm.runtime import load_artifact

    t0 = time.perf_counter()
    folder = Path(build)
    manifest = verify_build(folder)
    tol = _tolerance(folder, manifest)
    source = ref.reference.source
    if manifest["model"]["preset"] != ref.reference.config.name:
        raise ParityError(f"{folder} is a build of {manifest['model']['preset']}, the reference is {ref.reference.config.name}")
    check_goldens(folder, manifest, ref.reference, source)
    checks = [_structural("build", "files", f"sha256 of {len(manifest['files'])} files", True, "= manifest", "")]
    not_checked: list[str] = []
    range_report = None
    if manifest["target"] == "coreml":
        checks += _coreml_spec_checks(folder, manifest)
    if _computes_in_fp16(manifest):
        range_checks, range_report = _range_checks(ref, manifest)
        checks += range_checks
    graphs: dict[str, dict[str, ErrorStats]] = {}
    per_image: list[dict] = []
    if needs_macos(manifest) and platform != "darwin":
        what = "Core ML" if manifest["target"] == "coreml" else "ExecuTorch Core ML delegate"
        not_checked.append(f"running the graphs and the tasks: a {what} build runs only on macOS/iOS; run "
                           f"`minivlm parity {folder}` or `pytest -m macos tests/parity` on a Mac")
    else:
        artifact = load_artifact(folder)
        graph_checks, graphs = _graph_checks(artifact.pipeline.graphs.modules(), ref, manifest, tol)
        pairs = [(r, run_image(artifact.pipeline, s)) for r, s in zip(ref.runs, progress(ref.images))]
        task_checks, per_image = _host_and_task_checks(pairs, tol)
        checks += graph_checks + task_checks
    not_checked.append("native host-step ports (C++/Kotlin/Swift) replay the build's golden/ in their own tests")
    return ParityReport(folder, manifest, source, [s.name for s in ref.images], tol, checks, graphs, per_image,
                        not_checked, time.perf_counter() - t0 + ref.seconds, range_report, platform)


def _tolerance(folder: Path, manifest: dict) -> Tolerance:
    key = (manifest["target"], manifest["precision"])
    try:
        return tolerance(*key)
    except KeyError:
        raise ArtifactError(f"{folder} is a {key[0]} {key[1]} build, for which no parity tolerance exists") from None


def reference_for(manifest: dict, model: str | None = None) -> ReferencePipeline:
    """The reference a build is compared with: `model` if given, else the bundled weights of the build's model
    name, else the weights file the build records as its source."""
    from minivlm.loading import bundled_weights, load
    from minivlm.python_ref.config import PRESETS

    if model is not None:
        return load(model)
    name, source = manifest["model"]["name"], manifest["model"].get("source", "")
    if name in PRESETS and bundled_weights(name) is not None:
        return load(name)
    if source and Path(source).is_file():
        return load(source)
    raise ParityError(f"the build's model {name!r} (source {source!r}) has no weights here to compare with; "
                      f"pass --model with the .safetensors it was built from")


def run_parity(build: str | Path, *, model: str | None = None, scenes: int = DEFAULT_SCENES,
               photos: Iterable[str] = DEFAULT_PHOTOS, write: bool = True,
               progress: Callable[[Iterable], Iterable] = lambda it: it) -> ParityReport:
    """`minivlm parity`: verify the build (manifest, checksums, each graph's I/O against the model and its
    runtime: seconds), then load the reference for it, run it on the parity images, compare, and write
    `parity_report.json` into the build (unless `write` is False). A broken build fails before the reference runs."""
    from minivlm.build_checks import verify_build

    manifest = verify_build(build)
    _tolerance(Path(build), manifest)
    ref = run_reference(reference_for(manifest, model), parity_images(scenes, photos), progress,
                        fp16_range=_computes_in_fp16(manifest))
    report = check_parity(build, ref, progress=progress)
    if write:
        write_report(report)
    return report


__all__ = [
    "ALL_PHOTOS",
    "DEFAULT_PHOTOS",
    "DEFAULT_SCENES",
    "REPORT_FILE",
    "SWEEP_SCENES",
    "Check",
    "ErrorStats",
    "ImageRun",
    "ParityImage",
    "ParityReport",
    "ReferenceRun",
    "check_goldens",
    "check_parity",
    "match_detections",
    "parity_images",
    "reference_for",
    "run_image",
    "run_parity",
    "run_reference",
    "write_report",
]
