"""Task metrics of the demo: detection mAP@IoU, exact-match rate of captions, answer accuracy (on NumPy arrays).

Detection AP follows Pascal VOC (2010+) and COCO: per class, detections from all images are ranked by score,
each is matched greedily to the highest-IoU still-unmatched ground truth of its class in its image (COCO's
rule; VOC instead gives up when the best-overlapping truth is already taken), and AP is the area under the
all-point interpolated precision-recall curve (the monotone precision envelope). mAP is the mean over the
classes that have ground truth; detections of a class with no ground truth do not enter it.

Boxes are `xyxy` in continuous pixel coordinates (exclusive x2/y2, as `minivlm.python_ref.scenes` writes
them): a box's area is `(x2 - x1) * (y2 - y1)`, without VOC's historical "+1".
"""

from __future__ import annotations

from collections import defaultdict
from typing import Hashable, Sequence

import numpy as np
import torch

from minivlm.errors import InputError
from minivlm.python_ref.postprocess import box_iou as reference_box_iou

Detections = Sequence[tuple[np.ndarray, Sequence[Hashable], np.ndarray]]  # per image: (boxes, labels, scores)
GroundTruths = Sequence[tuple[np.ndarray, Sequence[Hashable]]]  # per image: (boxes, labels)


def _as_boxes(boxes: np.ndarray | Sequence, name: str) -> np.ndarray:
    """(n, 4) float64 view of `boxes`; an empty input becomes (0, 4)."""
    array = np.asarray(boxes, dtype=np.float64)
    if array.size == 0:
        return array.reshape(0, 4)
    if array.ndim != 2 or array.shape[1] != 4:
        raise InputError(f"{name} have shape {array.shape}, expected (n, 4) xyxy")
    return array


def box_iou(a: np.ndarray | Sequence, b: np.ndarray | Sequence) -> np.ndarray:
    """(N, M) float64 intersection-over-union of xyxy boxes `a` (N, 4) and `b` (M, 4); 0 where the union is empty
    (python_ref's `box_iou`, the one definition, on float64 copies of the NumPy inputs)."""
    a, b = _as_boxes(a, "boxes a"), _as_boxes(b, "boxes b")
    # Copies: torch.from_numpy refuses negative strides and warns on read-only arrays (a scene's boxes are).
    return reference_box_iou(*(torch.from_numpy(np.array(x, order="C")) for x in (a, b))).numpy()


def _all_point_ap(is_tp: np.ndarray, num_truths: int) -> float:
    """Area under the precision envelope of a ranked list of hits (VOC 2010+ all-point interpolation)."""
    if is_tp.size == 0:
        return 0.0
    tp = np.cumsum(is_tp)
    recall = np.concatenate(([0.0], tp / num_truths, [1.0]))
    precision = np.concatenate(([0.0], tp / np.arange(1, is_tp.size + 1), [0.0]))
    # Monotone envelope: precision at recall r is the best precision at any recall >= r.
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    steps = np.nonzero(recall[1:] != recall[:-1])[0]
    return float(np.sum((recall[steps + 1] - recall[steps]) * precision[steps + 1]))


def _class_ap(
    ranked: list[tuple[float, int, np.ndarray]], truths: dict[int, np.ndarray], iou_threshold: float
) -> float:
    """AP of one class: `ranked` (score, image, box) best first, `truths` image -> (k, 4) boxes of the class."""
    taken = {image: np.zeros(len(boxes), dtype=bool) for image, boxes in truths.items()}
    is_tp = np.zeros(len(ranked), dtype=bool)
    for rank, (_, image, box) in enumerate(ranked):
        if image not in truths:
            continue
        iou = box_iou(box[None], truths[image])[0]
        iou[taken[image]] = -1.0  # a truth matches at most once: duplicates become false positives
        best = int(np.argmax(iou))
        if iou[best] >= iou_threshold:
            taken[image][best] = True
            is_tp[rank] = True
    return _all_point_ap(is_tp, sum(len(boxes) for boxes in truths.values()))


def per_class_average_precision(
    detections: Detections, ground_truths: GroundTruths, iou_threshold: float = 0.5
) -> dict[Hashable, float]:
    """AP@`iou_threshold` of every class that has ground truth, as {label: AP}.

    detections[i] = (boxes (k, 4), labels (k,), scores (k,)) and ground_truths[i] = (boxes (g, 4), labels (g,))
    describe image i. Equal scores keep input order (image, then position), so results are deterministic.
    """
    if len(detections) != len(ground_truths):
        raise InputError(f"{len(detections)} images of detections but {len(ground_truths)} of ground truth")
    if not 0.0 < iou_threshold <= 1.0:
        raise InputError(f"iou_threshold must be in (0, 1], got {iou_threshold}")
    truths: dict[Hashable, dict[int, list]] = defaultdict(lambda: defaultdict(list))
    for image, (boxes, labels) in enumerate(ground_truths):
        boxes = _as_boxes(boxes, f"ground-truth boxes of image {image}")
        _check_count(boxes, labels, f"ground truth of image {image}")
        for box, label in zip(boxes, labels):
            truths[label][image].append(box)
    found: dict[Hashable, list] = defaultdict(list)
    for image, (boxes, labels, scores) in enumerate(detections):
        boxes = _as_boxes(boxes, f"detected boxes of image {image}")
        scores = np.asarray(scores, dtype=np.float64).reshape(-1)
        _check_count(boxes, labels, f"detections of image {image}", scores)
        for box, label, score in zip(boxes, labels, scores):
            found[label].append((float(score), image, box))
    result = {}
    for label, by_image in truths.items():
        ranked = sorted(found[label], key=lambda d: -d[0])  # stable: ties keep input order
        stacked = {image: np.stack(boxes) for image, boxes in by_image.items()}
        result[label] = _class_ap(ranked, stacked, iou_threshold)
    return result


def _check_count(boxes: np.ndarray, labels: Sequence, what: str, scores: np.ndarray | None = None) -> None:
    """Raise when boxes, labels (and scores) of one image disagree in length."""
    lengths = {len(boxes), len(labels)} | (set() if scores is None else {len(scores)})
    if len(lengths) != 1:
        counts = f"{len(boxes)} boxes, {len(labels)} labels" + ("" if scores is None else f", {len(scores)} scores")
        raise InputError(f"{what}: {counts}")


def average_precision_at_iou(detections: Detections, ground_truths: GroundTruths, iou_threshold: float = 0.5) -> float:
    """Detection mAP@`iou_threshold`: mean AP over the classes with ground truth (see the module docstring)."""
    per_class = per_class_average_precision(detections, ground_truths, iou_threshold)
    if not per_class:
        raise InputError("no ground-truth boxes in any image: mAP is undefined")
    return float(np.mean(list(per_class.values())))


def _check_pairs(predictions: Sequence, references: Sequence) -> None:
    """Raise unless predictions and references are non-empty and equally long."""
    if len(predictions) != len(references):
        raise InputError(f"{len(predictions)} predictions but {len(references)} references")
    if not predictions:
        raise InputError("no predictions to score")


def _normalise(text: str) -> str:
    """Lower case, single spaces: the uncased tokenizer decodes lower case and may space words differently."""
    return " ".join(text.lower().split())


def exact_match_rate(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Fraction of texts (e.g. captions) equal to their reference up to case and whitespace."""
    _check_pairs(predictions, references)
    return sum(_normalise(p) == _normalise(r) for p, r in zip(predictions, references)) / len(predictions)


def accuracy(predictions: Sequence[Hashable], references: Sequence[Hashable]) -> float:
    """Fraction of predictions (e.g. VQA answers or class ids) exactly equal to their reference."""
    _check_pairs(predictions, references)
    return sum(p == r for p, r in zip(predictions, references)) / len(predictions)
