"""Detection mAP, IoU and text metrics on small cases whose values are worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from minivlm.errors import InputError
from minivlm.metrics import (
    accuracy,
    average_precision_at_iou,
    box_iou,
    exact_match_rate,
    per_class_average_precision,
)

A = [0, 0, 10, 10]
B = [20, 20, 30, 30]
NEAR_A = [0, 0, 10, 8]  # IoU with A = 80 / 100 = 0.8
FAR = [100, 100, 110, 110]


def _dets(boxes, labels, scores):
    return (np.array(boxes, dtype=float).reshape(-1, 4), list(labels), np.array(scores, dtype=float))


def _gts(boxes, labels):
    return (np.array(boxes, dtype=float).reshape(-1, 4), list(labels))


# --- IoU ------------------------------------------------------------------------------------------------------


def test_box_iou_values_and_shape():
    a = np.array([A, [0, 0, 2, 2]], dtype=float)
    b = np.array([A, B, [1, 0, 3, 2]], dtype=float)
    iou = box_iou(a, b)
    assert iou.shape == (2, 3)
    assert iou[0, 0] == 1.0 and iou[0, 1] == 0.0
    # [0,0,2,2] vs [1,0,3,2]: intersection 1x2 = 2, union 4 + 4 - 2 = 6.
    assert iou[1, 2] == pytest.approx(1 / 3)
    # [0,0,2,2] inside A: 4 / 100.
    assert iou[1, 0] == pytest.approx(0.04)


def test_box_iou_empty_and_degenerate():
    assert box_iou(np.zeros((0, 4)), np.array([A])).shape == (0, 1)
    assert box_iou([[5, 5, 5, 5]], [[5, 5, 5, 5]])[0, 0] == 0.0  # zero area: no overlap, no division by zero


def test_box_iou_rejects_bad_shapes():
    with pytest.raises(InputError, match="shape"):
        box_iou(np.zeros((2, 3)), np.array([A]))


# --- average precision ----------------------------------------------------------------------------------------


def test_perfect_detector_scores_one():
    gts = [_gts([A, B], ["x", "y"]), _gts([B], ["x"])]
    dets = [_dets([A, B], ["x", "y"], [0.9, 0.8]), _dets([B], ["x"], [0.7])]
    assert average_precision_at_iou(dets, gts) == 1.0


def test_false_positive_ranked_first():
    # Ranked: FP (P=0/1, R=0), TP (P=1/2, R=1). Envelope at R=1 is 1/2, so AP = 1 * 1/2 = 0.5.
    dets = [_dets([FAR, A], ["x", "x"], [0.9, 0.8])]
    assert average_precision_at_iou(dets, [_gts([A], ["x"])]) == pytest.approx(0.5)


def test_false_positive_ranked_last_costs_nothing():
    # Ranked: TP (P=1, R=1), FP (P=1/2, R=1). Recall is complete before the FP: AP = 1.
    dets = [_dets([A, FAR], ["x", "x"], [0.9, 0.8])]
    assert average_precision_at_iou(dets, [_gts([A], ["x"])]) == pytest.approx(1.0)


def test_missed_ground_truth():
    # Two truths, one found: P=1 up to R=1/2, nothing after, so AP = 1/2 * 1 = 0.5.
    dets = [_dets([A], ["x"], [0.9])]
    assert average_precision_at_iou(dets, [_gts([A, B], ["x", "x"])]) == pytest.approx(0.5)


def test_duplicate_detection_is_a_false_positive():
    # Image 0: truth A, detections on A at 0.9 and 0.8 (duplicate). Image 1: truth B, detection on B at 0.7.
    # Ranked: TP (P=1, R=1/2), FP (P=1/2, R=1/2), TP (P=2/3, R=1).
    # Envelope: P=1 on (0, 1/2], P=2/3 on (1/2, 1]: AP = 1/2 * 1 + 1/2 * 2/3 = 5/6.
    dets = [_dets([A, NEAR_A], ["x", "x"], [0.9, 0.8]), _dets([B], ["x"], [0.7])]
    gts = [_gts([A], ["x"]), _gts([B], ["x"])]
    assert average_precision_at_iou(dets, gts) == pytest.approx(5 / 6)


def test_envelope_takes_later_higher_precision():
    # One image, truths A and B. Ranked: TP A (P=1, R=1/2), FP (P=1/2), FP (P=1/3), TP B (P=1/2, R=1).
    # Envelope at R in (1/2, 1] is 1/2: AP = 1/2 * 1 + 1/2 * 1/2 = 0.75.
    dets = [_dets([A, FAR, FAR, B], ["x"] * 4, [0.9, 0.8, 0.7, 0.6])]
    assert average_precision_at_iou(dets, [_gts([A, B], ["x", "x"])]) == pytest.approx(0.75)


def test_ranking_spans_images():
    # Image 0: FP at 0.95. Image 1: TP at 0.9. Ranked over both images: FP then TP, AP = 0.5 as above.
    dets = [_dets([FAR], ["x"], [0.95]), _dets([A], ["x"], [0.9])]
    gts = [_gts([], []), _gts([A], ["x"])]
    assert average_precision_at_iou(dets, gts) == pytest.approx(0.5)


def test_a_match_must_be_in_the_same_image():
    # The detection sits on A, but A is a truth of image 1, not image 0: FP, and image 1's truth is missed.
    dets = [_dets([A], ["x"], [0.9]), _dets([], [], [])]
    gts = [_gts([], []), _gts([A], ["x"])]
    assert average_precision_at_iou(dets, gts) == 0.0


def test_iou_threshold():
    # [0,0,10,4] vs A: IoU 40 / 100 = 0.4 -> FP at 0.5 (AP 0), TP at 0.3 (AP 1).
    dets = [_dets([[0, 0, 10, 4]], ["x"], [0.9])]
    gts = [_gts([A], ["x"])]
    assert average_precision_at_iou(dets, gts, iou_threshold=0.5) == 0.0
    assert average_precision_at_iou(dets, gts, iou_threshold=0.3) == 1.0


def test_greedy_match_takes_the_best_unmatched_truth():
    # Truths g1 = [0,0,10,10], g2 = [2,0,12,10]. d1 = [2,0,12,10] (IoU 1 with g2, 80/120 with g1) ranks first
    # and takes g2; d2 = [1.5,0,11.5,10] overlaps g2 best (95/105) but g2 is taken, so it takes g1
    # (85/115 = 0.74 >= 0.5). Both are true positives: AP = 1 (VOC's rule would make d2 a false positive).
    dets = [_dets([[2, 0, 12, 10], [1.5, 0, 11.5, 10]], ["x", "x"], [0.9, 0.8])]
    gts = [_gts([[0, 0, 10, 10], [2, 0, 12, 10]], ["x", "x"])]
    assert average_precision_at_iou(dets, gts) == 1.0


def test_classes_are_scored_apart_and_averaged():
    # Class x: perfect (1.0). Class y: the y detection sits on the x truth (a wrong class: FP) and the y truth
    # at B is missed (0.0). Class z has detections but no truth: left out. mAP = (1 + 0) / 2.
    dets = [_dets([A, A, FAR], ["x", "y", "z"], [0.9, 0.8, 0.7])]
    gts = [_gts([A, B], ["x", "y"])]
    assert per_class_average_precision(dets, gts) == {"x": 1.0, "y": 0.0}
    assert average_precision_at_iou(dets, gts) == pytest.approx(0.5)


def test_equal_scores_keep_input_order():
    # Tie at 0.5: the FP comes first in input order, so it ranks first: AP = 0.5, as with a lower TP score.
    dets = [_dets([FAR, A], ["x", "x"], [0.5, 0.5])]
    assert average_precision_at_iou(dets, [_gts([A], ["x"])]) == pytest.approx(0.5)


def test_integer_labels_work_too():
    dets = [_dets([A], [3], [0.9])]
    assert average_precision_at_iou(dets, [(np.array([A], dtype=float), np.array([3]))]) == 1.0


def test_average_precision_rejects_bad_input():
    with pytest.raises(InputError, match="images"):
        average_precision_at_iou([_dets([A], ["x"], [0.9])], [])
    with pytest.raises(InputError, match="1 boxes, 2 labels"):
        average_precision_at_iou([_dets([A], ["x", "y"], [0.9])], [_gts([A], ["x"])])
    with pytest.raises(InputError, match="undefined"):
        average_precision_at_iou([_dets([A], ["x"], [0.9])], [_gts([], [])])
    with pytest.raises(InputError, match="iou_threshold"):
        average_precision_at_iou([_dets([A], ["x"], [0.9])], [_gts([A], ["x"])], iou_threshold=0.0)


# --- text metrics ---------------------------------------------------------------------------------------------


def test_exact_match_rate_ignores_case_and_spacing_only():
    predictions = ["a red circle", "A  Red circle ", "a red circles", "two blue squares"]
    references = ["a red circle"] * 3 + ["a blue square"]
    assert exact_match_rate(predictions, references) == 0.5


def test_accuracy_is_exact():
    assert accuracy(["yes", "no", "Yes", "two"], ["yes", "yes", "yes", "two"]) == 0.5
    assert accuracy([1, 2, 3], [1, 2, 0]) == pytest.approx(2 / 3)


def test_text_metrics_reject_bad_input():
    with pytest.raises(InputError, match="2 predictions but 1 references"):
        accuracy(["a", "b"], ["a"])
    with pytest.raises(InputError, match="no predictions"):
        exact_match_rate([], [])
