"""Per host step and per task: python_ref's host code on the build's graph outputs against the reference's
integer decisions, and the build end to end (detections paired by IoU and label, never by index)."""

from __future__ import annotations

import torch

from minivlm.converters.tolerances import Tolerance
from minivlm.python_ref.pipeline import Detection
from minivlm.python_ref.postprocess import box_iou

from .checks import Check, judged
from .reference import ImageRun


def match_detections(ref: list[Detection], got: list[Detection], min_iou: float) -> list[tuple[int, int, float]]:
    """Pairs (i_ref, j_got, IoU) of the same label with IoU >= min_iou, greedily by IoU (never by index)."""
    if not ref or not got:
        return []
    a = torch.tensor([d.box for d in ref], dtype=torch.float64)
    b = torch.tensor([d.box for d in got], dtype=torch.float64)
    iou = box_iou(a, b)
    # A box clipped to a zero-area sliver at the image edge overlaps nothing (IoU 0), yet the reference and the
    # build both find it (the demo model does, on photo_rocket): two empty boxes are paired by position instead.
    empty = (_area(a) == 0)[:, None] & (_area(b) == 0)[None, :]
    same_place = (a[:, None] - b[None]).abs().amax(dim=-1) <= 1e-3
    iou = torch.where(empty, same_place.double(), iou)
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


def _area(boxes: torch.Tensor) -> torch.Tensor:
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def _detections_json(found: list[Detection]) -> list[dict]:
    return [{"label": d.label, "score": round(d.score, 6), "box": [round(v, 2) for v in d.box]} for d in found]


def host_and_task_checks(runs: list[tuple[ImageRun, ImageRun]], tol: Tolerance) -> tuple[list[Check], list[dict]]:
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
        swapped = same_proposals(ref, got, tol.proposal_max_shift.value, score_bound(tol))
        flags = {
            "proposals": swapped is not None,
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
            "proposals_swapped": swapped,
        })
    mean = lambda xs: sum(xs) / len(xs) if xs else 0.0  # noqa: E731
    checks = [
        judged("step", step, "identical", same[step] / n, tol.same_proposals if step == "proposals" else tol.host_exact,
                _first(first, step), unit="%")
        for step in ("proposals", "region_selection", "question_packing")
    ]
    checks += [
        judged("task", "detections", "matched", matched / total if total else 1.0, tol.detections,
                _first(first, "detections"), unit="%"),
        judged("task", "detections", "max score diff", max(score_diffs, default=0.0), tol.score_max_diff),
        judged("task", "detections", "mean score diff", mean(score_diffs), tol.score_mean_diff),
        judged("task", "tags", "identical", same["tags"] / n, tol.tags, _first(first, "tags"), unit="%"),
        judged("task", "captions", "identical", same["captions"] / n, tol.captions, _first(first, "captions"), unit="%"),
        judged("task", "answers", "identical", answers_same / answers_total if answers_total else 1.0, tol.answers,
                _first(first, "answers"), unit="%"),
        judged("task", "match", "max prob diff", max(match_diffs, default=0.0), tol.score_max_diff),
        judged("task", "match", "mean prob diff", mean(match_diffs), tol.score_mean_diff),
    ]
    return checks, per_image


def score_bound(tol: Tolerance) -> float:
    """How far a build's objectness may be from the reference's, relative to its peak: the row's per-graph
    max-abs bound (fp32), else no bound (the proposals step is judged only in fp32)."""
    return tol.graph_max_abs.value if tol.graph_max_abs is not None else float("inf")


def same_proposals(ref: ImageRun, got: ImageRun, max_shift: float, max_rel_score: float) -> int | None:
    """The same RPN proposals up to near-ties: the build's proposals are what the reference's own proposal step
    chooses from the reference's boxes (its deltas) with scores within the graph bound of the reference's.
    Returns how many anchors differ from the reference's (swapped as near-ties), or None when they differ else.

    The witness scores are the build's objectness clipped to the reference's +- `max_rel_score` x its peak. With
    an untrained model's near-equal scores, rounding reorders anchors at a top-k cut or in NMS (and what a swapped
    NMS winner suppresses next), so tens of anchors differ while every detection agrees; the witness, chosen by
    the reference's code on the reference's boxes, must then keep exactly the build's anchors in the build's
    order, and every build box must be within `max_shift` px of the witness's. A build whose scores leave the
    bound, whose boxes move, or whose host step differs yields other anchors or boxes and fails.
    """
    assert ref.choose_proposals is not None, "a reference run records its proposal step"
    cap = max_rel_score * float(ref.objectness.abs().max())
    witness = torch.minimum(torch.maximum(got.objectness, ref.objectness - cap), ref.objectness + cap)
    boxes, valid, anchors = ref.choose_proposals(witness, ref.deltas)
    if not (torch.equal(valid, got.valid) and torch.equal(anchors, got.anchors)):
        return None
    if float((boxes - got.proposals).abs().max()) > max_shift:
        return None
    return len(set(ref.anchors[ref.valid].tolist()) ^ set(got.anchors[got.valid].tolist()))


def _first(first: dict[str, str], key: str) -> str:
    return f"first: {first[key]}" if key in first else ""

