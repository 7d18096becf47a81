"""The weight audit of `minivlm parity`: every constant a build stores, traced to the reference tensor it came
from and compared, which also counts the copies of each.

Readers: `stored_constants.py` (TFLite), `executorch_constants.py` (ExecuTorch: `.pte` constant buffers,
named data, XNNPACK delegate data, an external `weights.ptd`) and `coreai_constants.py` (Core AI: the asset's
inline and resource constants, int8 weights with their blockwise scales); the reference side:
`reference_constants.py`.

Matching. A stored constant matches a reference tensor of the same element count when, for some permutation
of the reference's axes (XNNPACK and TFLite keep convolutions OHWI, depthwise 1HWC; reshapes are free), every
value agrees:
- fp32: exactly, for a parameter or buffer; within `DERIVED_ULPS` float32 ulps of each value for a constant the
  converter derives (a BatchNorm folded into its convolution: the converter multiplies in its own order), or
  one times a scalar the reference derives (`_scaled_match`);
- fp16: equal to the fp16 rounding of the reference (a derived constant: within one fp16 ulp);
- int8: dequantized with the build's own scale, within half a step of its channel (+ `HALF_STEP_SLACK`), and
  the scale must be the one the reference implies (symmetric: max |w| of the channel / 127, `SCALE_RTOL`; a
  scale stored in float16 within one fp16 ulp of it, as a derived fp16 constant), with zero point 0;
  a bad scale fails even when the values still round back.
Rules. A floating or integer constant of `SMALL` elements or more that matches nothing fails the audit
(a tampered weight, a weight merged with another); smaller ones (shape operands, scalars the converter
folded from several constants) and tensors of all zeros or all ones (broadcast helpers) are counted as
untraced, with their bytes, and pass (a weight zeroed in a build still fails: its reference tensor is missing;
only an all-zero or all-one reference tensor may be absent). Integer and boolean constants equal their
reference's values exactly (a boolean mask may come from a float one). A reference parameter the
graphs read that no stored constant (nor a derived one made from it) covers fails the audit if it has `SMALL`
elements or more. More stored copies of a value than reference tensors with that value are duplicates: a
failure when the build keeps one weights file (the manifest's `weights_file`, or every graph in one file),
reported only (WARN) while graphs are separate files, each of which must hold its own weights.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .reference_constants import RefTensor
from .stored_constants import StoredConstant

AUDITED_TARGETS = ("tflite", "executorch", "coreai")
# ExecuTorch delegates whose payloads the reader understands (`portable`: no delegate, the program's own constants).
AUDITED_EXECUTORCH_DELEGATES = ("xnnpack", "portable")
SMALL = 64  # elements; below this an untraced constant is counted, not failed
DERIVED_ULPS = 16  # float32 ulps a converter's own arithmetic may move a derived constant
SCALED_ULPS = 64  # float32 ulps for a weight times a derived scalar (`_scaled_match`)
SCALE_RTOL = 1e-5
# steps beyond the half step: the quantizer rounds w / scale computed in float32 (about 1e-5 step at |q| = 127)
HALF_STEP_SLACK = 2.0 ** -10  # relative: a stored float32 scale against max|w|/127 computed here
INT8_QMAX = 127


@dataclass
class Match:
    """The outcome for one stored constant: `refs` every reference tensor it equals (more than one only when
    several hold the same values), else the nearest one and how far."""

    stored: StoredConstant
    refs: list[str] = field(default_factory=list)
    max_error: float = 0.0  # against the matched (or nearest) reference, in its units
    nearest: str = ""
    bad_values: int = 0
    scale_error: float = 0.0  # relative, int8 only

    @property
    def matched(self) -> bool:
        return bool(self.refs)


@dataclass
class AuditResult:
    """The weight audit of one build (see the module doc)."""

    checked: int = 0
    bytes: int = 0
    matched: int = 0
    matched_bytes: int = 0
    unmatched: list[Match] = field(default_factory=list)
    untraced: list[StoredConstant] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    duplicates_fail: bool = False
    missing: list[str] = field(default_factory=list)
    covered: set[str] = field(default_factory=set)  # reference parameters some matched constant comes from
    worst_error: float = 0.0
    worst_where: str = ""

    @property
    def untraced_bytes(self) -> int:
        return sum(s.nbytes for s in self.untraced)

    @property
    def passed(self) -> bool:
        return not self.unmatched and not self.missing and not (self.duplicates and self.duplicates_fail)

    def reason(self) -> str:
        """One line: why the audit failed ('' if it passed)."""
        if self.unmatched:
            m = self.unmatched[0]
            more = f" (and {len(self.unmatched) - 1} more)" if len(self.unmatched) > 1 else ""
            near = (f"; nearest {m.nearest}: {m.bad_values} of {m.stored.values.size} values differ, max error "
                    f"{m.max_error:.3g}" + (f", scale off by {m.scale_error:.2g}" if m.scale_error else "")) if m.nearest else ""
            return f"{m.stored.label()} matches no reference tensor{near}{more}"
        if self.missing:
            return f"reference weight {self.missing[0]} is in no stored constant ({len(self.missing)} missing)"
        if self.duplicates and self.duplicates_fail:
            return f"stored more than once: {self.duplicates[0]} ({len(self.duplicates)} duplicated)"
        return ""

    def as_json(self) -> dict:
        return {"constants": self.checked, "bytes": self.bytes, "matched": self.matched, "matched_bytes": self.matched_bytes,
                "unmatched": [{"constant": m.stored.label(), "nearest": m.nearest, "bad_values": m.bad_values,
                               "max_error": m.max_error, "scale_error": m.scale_error} for m in self.unmatched],
                "untraced": len(self.untraced), "untraced_bytes": self.untraced_bytes,
                "duplicates": self.duplicates, "duplicates_fail": self.duplicates_fail, "missing": self.missing,
                "worst_error": self.worst_error, "worst_where": self.worst_where, "passed": self.passed,
                "reason": self.reason()}


def audit(stored: list[StoredConstant], refs: dict[str, RefTensor], *, one_weights_file: bool) -> AuditResult:
    """Match every stored constant against the reference tensors and judge the build (module doc)."""
    by_size: dict[int, list[RefTensor]] = {}
    for r in refs.values():
        by_size.setdefault(r.values.size, []).append(r)
    scalars = np.array(sorted({float(r.values.reshape(-1)[0]) for r in refs.values()
                               if r.derived and r.values.size == 1 and r.values.dtype.kind == "f"}))
    result = AuditResult(duplicates_fail=one_weights_file)
    matches = []
    for s in stored:
        result.checked += 1
        result.bytes += s.nbytes
        m = match(s, by_size.get(s.values.size, []))
        if not m.matched and s.floating:
            m = _scaled_match(s, by_size.get(s.values.size, []), scalars) or m
        matches.append(m)
        if m.matched:
            result.matched += 1
            result.matched_bytes += s.nbytes
            if m.max_error > result.worst_error:
                result.worst_error, result.worst_where = m.max_error, f"{s.label()} = {m.refs[0]}"
        elif s.values.size < SMALL or _is_fill(s):
            result.untraced.append(s)
        else:
            result.unmatched.append(m)
    result.unmatched.sort(key=lambda m: -m.stored.nbytes)
    copies: dict[frozenset, list[Match]] = {}
    for m in matches:
        if m.matched and m.stored.values.size >= SMALL:
            copies.setdefault(frozenset(m.refs), []).append(m)
    for names, ms in copies.items():
        if len(ms) > len(names):
            result.duplicates.append(f"{sorted(names)[0]} x{len(ms)} ({', '.join(m.stored.where for m in ms)})")
    covered = result.covered = set().union(*(refs[n].sources for m in matches for n in m.refs)) if matches else set()
    # An all-zero or all-one reference tensor (an untrained bias or LayerNorm scale) may be dropped by a
    # converter (an add of zero, a multiply by one): nothing needs storing.
    result.missing = sorted(r.name for r in refs.values() if not r.derived and r.graphs and r.name not in covered
                            and r.values.size >= SMALL and not _is_fill_values(r.values))
    return result


def match(s: StoredConstant, candidates: list[RefTensor]) -> Match:
    """The reference tensors among `candidates` that `s` equals under the module doc's rules (the nearest one
    when none does)."""
    found = _match(s, [r for r in candidates if _may_match(s, r)])
    if not found.matched and candidates:
        found = _match(s, candidates)  # no match: compare with every candidate to name the nearest
    return found


def _match(s: StoredConstant, candidates: list[RefTensor]) -> Match:
    found, best = Match(s), None
    for r in sorted(candidates, key=lambda r: r.derived):
        if found.refs and r.derived and not _all_derived(found, candidates):
            break  # a parameter matched exactly: derived copies of it are not other sources
        result = _compare(s, r)
        if result is None:
            continue
        ok, err, bad, scale_err = result
        if ok:
            found.refs.append(r.name)
            found.max_error = max(found.max_error, err)
        elif best is None or bad < best[1]:
            best = (r.name, bad, err, scale_err)
    if not found.refs and best is not None:
        found.nearest, found.bad_values, found.max_error, found.scale_error = best
    return found


def _may_match(s: StoredConstant, r: RefTensor) -> bool:
    """A necessary condition, cheap and layout-free: the sums of the values agree within what the tolerances
    allow (saves comparing every layout of every same-sized tensor)."""
    if not s.floating:
        return True
    if r.values.dtype.kind != "f":
        return False
    if r.values.dtype.kind == "f" and not hasattr(r, "_sums"):
        r._sums = (float(np.sum(r.values, dtype=np.float64)), float(np.sum(np.abs(r.values), dtype=np.float64)))
    total, magnitude = r._sums
    allowed = magnitude * (1e-3 if s.dtype == "float16" else 1e-5)
    if s.quantized:
        allowed += s.values.size * float(np.max(s.scale)) * (0.5 + HALF_STEP_SLACK)
    if not hasattr(s, "_sum"):
        s._sum = float(np.sum(s.values, dtype=np.float64))
    return abs(s._sum - total) <= allowed + 1e-30


def _scaled_match(s: StoredConstant, candidates: list[RefTensor], scalars: np.ndarray) -> Match | None:
    """`s` = c * a reference tensor, c one of the reference's derived scalars (a converter folds the BiFPN's
    non-negative fusion weight into the convolution before it: max pooling and nearest upsampling commute with
    it), judged as a derived constant with `SCALED_ULPS` (two products rounded in another order)."""
    if not scalars.size:
        return None
    got = s.values.reshape(-1).astype(np.float64)
    near = 1e-2 if s.quantized else 1e-5  # how well least squares recovers c through int8 rounding
    for r in candidates:
        if r.values.dtype.kind != "f":
            continue
        for perm in _layouts(r.values.ndim):
            want = np.transpose(r.values, perm).reshape(-1).astype(np.float64)
            norm = float(want @ want)
            if norm == 0:
                continue
            c = float(got @ want) / norm
            k = int(np.argmin(np.abs(scalars - c)))
            if abs(scalars[k] - c) > near * abs(c):
                continue
            ok, err, _, _ = _judge(s, (want * scalars[k]).astype(np.float32), True, SCALED_ULPS)
            if ok:
                return Match(s, [r.name], err)
    return None


def _all_derived(found: Match, candidates: list[RefTensor]) -> bool:
    names = {r.name: r for r in candidates}
    return all(names[n].derived for n in found.refs)


def _compare(s: StoredConstant, r: RefTensor) -> tuple[bool, float, int, float] | None:
    """(equal?, max error, values out of tolerance, relative scale error) over the best layout; None when the
    kinds differ (floating against integer)."""
    ref = r.values
    if s.floating and ref.dtype.kind != "f":
        return None  # an integer or boolean constant may come from a float mask (tril(ones) > 0), not the reverse
    best = None
    for perm in _layouts(ref.ndim):
        want = np.transpose(ref, perm).reshape(-1)
        ok, err, bad, scale_err = _judge(s, want, r.derived)
        if best is None or (ok, -bad) > (best[0], -best[2]):
            best = (ok, err, bad, scale_err)
        if ok:
            break
    return best


def _layouts(ndim: int):
    if ndim <= 1:
        return [tuple(range(ndim))]
    if ndim <= 4:
        return list(itertools.permutations(range(ndim)))
    return [tuple(range(ndim)), tuple(reversed(range(ndim)))]


def _judge(s: StoredConstant, want: np.ndarray, derived: bool, ulps: int = 0) -> tuple[bool, float, int, float]:
    if not s.floating:
        got = s.values.reshape(-1).astype(np.float64)  # integers and booleans: exactly equal values
        bad = int(np.count_nonzero(got != want.astype(np.float64)))
        return bad == 0, float(np.max(np.abs(got - want), initial=0)), bad, 0.0
    want64 = want.astype(np.float64)
    slack = (ulps or DERIVED_ULPS) * np.spacing(np.abs(want).astype(np.float32)).astype(np.float64) if derived else 0.0
    scale_err = 0.0
    if s.quantized:
        shaped = want64.reshape(s.q.shape)
        step = np.broadcast_to(_per_channel(s.scale, s.axis, s.q.ndim), s.q.shape).reshape(-1)
        tol = step * (0.5 + HALF_STEP_SLACK) + slack
        if s.axis is not None and s.scale.size > 1:
            amax = np.max(np.abs(shaped), axis=tuple(a for a in range(s.q.ndim) if a != s.axis))
        else:
            amax = np.array([np.max(np.abs(shaped))])
        implied = np.where(amax > 0, amax / INT8_QMAX, s.scale)
        if s.check_scale:
            off = np.abs(s.scale - implied)
            if s.scale_dtype == "float16":  # stored in float16: a derived fp16 value, within one fp16 ulp
                off = np.where(off <= np.spacing(implied.astype(np.float16)).astype(np.float64), 0.0, off)
            scale_err = float(np.max(off / np.maximum(implied, 1e-30)))
        if np.any(s.zero_point != 0):
            scale_err = max(scale_err, 1.0)
    elif s.dtype == "float16":
        want64 = want.astype(np.float16).astype(np.float64)
        tol = np.spacing(np.abs(want).astype(np.float16)).astype(np.float64) if derived else 0.0
    else:
        tol = slack
    err = np.abs(s.values.reshape(-1).astype(np.float64) - want64)
    bad = int(np.count_nonzero(err > tol))
    return bad == 0 and scale_err <= SCALE_RTOL, float(err.max(initial=0.0)), bad, scale_err


def _per_channel(scale: np.ndarray, axis: int | None, ndim: int) -> np.ndarray:
    if axis is None or scale.size == 1:
        return scale.reshape(())
    view = [1] * ndim
    view[axis] = -1
    return scale.reshape(view)


def _is_fill(s: StoredConstant) -> bool:
    """A tensor of zeros or ones (TFLite lowers a broadcast as a multiply by ones): it carries no weight."""
    return not s.quantized and _is_fill_values(s.values)


def _is_fill_values(values: np.ndarray) -> bool:
    flat = values.reshape(-1)
    return bool(flat.size) and float(flat[0]) in (0.0, 1.0) and bool(np.all(flat == flat[0]))


def one_weights_file(manifest: dict) -> bool:
    """True when the build keeps one copy of the weights by layout: a shared `weights_file`, or one graph file."""
    return bool(manifest.get("weights_file")) or len({e["file"] for e in manifest["graphs"].values()}) == 1


def not_audited(manifest: dict) -> str | None:
    """Why the build cannot be audited here (a `not checked` line of the parity report), or None."""
    if manifest["target"] not in AUDITED_TARGETS:
        return f"{manifest['target']} builds have no constant reader yet (weight_audit.py)"
    delegate = manifest.get("delegate")
    if manifest["target"] == "executorch" and delegate not in AUDITED_EXECUTORCH_DELEGATES:
        return (f"the executorch {delegate} delegate keeps its weights inside its own payloads, which the audit's "
                "reader does not open (executorch_constants.py)")
    return None


def read_constants(folder: Path, manifest: dict) -> list[StoredConstant]:
    """Every stored constant of the build in `folder`, by its target's reader."""
    from minivlm.errors import ArtifactError

    if manifest["target"] == "tflite":
        from .stored_constants import tflite_constants

        return tflite_constants(folder, {g: (e["file"], e.get("signature")) for g, e in manifest["graphs"].items()})
    if manifest["target"] == "executorch":
        from .executorch_constants import executorch_constants

        return executorch_constants(folder, manifest)
    if manifest["target"] == "coreai":
        from .coreai_constants import coreai_constants

        return coreai_constants(folder, manifest)
    raise ArtifactError(f"the weight audit reads {', '.join(AUDITED_TARGETS)} builds, not {manifest['target']}")


def audit_build(folder: Path, manifest: dict, model, graphs: dict) -> AuditResult:
    """The weight audit of the build in `folder` against the eager `model` and its export `graphs` (name ->
    module, the family's `graphs(model)`)."""
    from minivlm.build_checks import manifest_family

    from .reference_constants import reference_tensors

    # A batched graph is its graph's module, exported at its batch (its derived constants may differ in shape).
    graphs = dict(graphs) | {name: graphs[graph] for name, (graph, _) in manifest_family(manifest).batched.items()
                             if name in manifest["graphs"]}
    batch = {}
    for name, entry in manifest["graphs"].items():
        first = entry["inputs"][0]
        batch[name] = int(first["shape"][first["batch_axis"]]) if first.get("batch_axis") is not None else 1
    refs = reference_tensors(model, graphs, batch)
    return audit(read_constants(folder, manifest), refs, one_weights_file=one_weights_file(manifest))


def audit_check(result: AuditResult):
    """The audit's one row of the parity report: PASS, FAIL with the reason, or WARN for duplicates that the
    build's per-graph layout implies."""
    from .checks import Check

    value = (f"{result.matched}/{result.checked} matched ({_size(result.matched_bytes)}/{_size(result.bytes)}), "
             f"{len(result.untraced)} untraced ({_size(result.untraced_bytes)}), {len(result.duplicates)} dup, "
             f"worst {result.worst_error:.2g}")
    status = "FAIL" if not result.passed else ("WARN" if result.duplicates else "PASS")
    where = result.reason() or (f"one file per graph: {result.duplicates[0].split(' (')[0]}, ..."
                                if result.duplicates else "")
    return Check("build", "weights", "audit", value, None, status, where, expected="= reference, 1 copy")


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n} B"
