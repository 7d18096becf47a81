"""Host post-processing: NMS, proposal selection, region selection, geometry.

Expected values in the hand-built cases are worked out in the comments, not produced by the code under test.
"""

import math

import pytest
import torch

from minivlm.python_ref.errors import ConfigError

from minivlm.errors import InputError
from minivlm.python_ref.config import RoIHeadConfig, RPNConfig
from minivlm.python_ref.losses import match
from minivlm.python_ref.postprocess import (Regions, batched_nms, box_iou, nms, proposal_anchors, region_geometry,
                                            region_tokens, select_proposals, select_regions)


def _naive_iou(a, b) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else float("nan")


def _naive_nms(boxes: list, scores: list, thr: float) -> list[int]:
    """The definition: visit by (score desc, index asc); keep a box unless a kept box overlaps it > thr."""
    keep = []
    for i in sorted(range(len(boxes)), key=lambda i: (-scores[i], i)):
        if all(not _naive_iou(boxes[i], boxes[j]) > thr for j in keep):
            keep.append(i)
    return keep


def _random_boxes(gen: torch.Generator, n: int, size: float = 100.0) -> torch.Tensor:
    xy = torch.rand(n, 2, generator=gen) * size
    wh = torch.rand(n, 2, generator=gen) * size / 3 + 1
    return torch.cat([xy, xy + wh], dim=1)


# --- box IoU --------------------------------------------------------------------------------------------


def _torchvision_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """torchvision `box_iou` (ops/boxes.py), which gives 0/0 = NaN for two empty boxes."""
    area_a, area_b = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1]), (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    wh = (torch.minimum(a[:, None, 2:], b[None, :, 2:]) - torch.maximum(a[:, None, :2], b[None, :, :2])).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    return inter / (area_a[:, None] + area_b[None, :] - inter)


def test_box_iou_by_hand():
    a = torch.tensor([[0, 0, 10, 10], [0, 0, 10, 12]], dtype=torch.float64)
    b = torch.tensor([[5, 0, 15, 10], [20, 20, 30, 30], [0, 0, 10, 10]], dtype=torch.float64)
    # Row 0: 50 / 150; nothing; identical. Row 1: 50 / (120 + 100 - 50); nothing; 100 / 120.
    want = torch.tensor([[1 / 3, 0.0, 1.0], [50 / 170, 0.0, 100 / 120]], dtype=torch.float64)
    got = box_iou(a, b)
    assert got.dtype == torch.float64 and got.shape == (2, 3)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-15)
    assert box_iou(torch.zeros(0, 4), b).shape == (0, 3)


def test_box_iou_of_empty_boxes_is_zero_not_nan():
    sliver = torch.tensor([[0.0, 427.0, 213.8, 427.0]])  # zero height: clipped at the image's bottom edge
    point = torch.tensor([[5.0, 5.0, 5.0, 5.0]])
    inverted = torch.tensor([[10.0, 10.0, 5.0, 5.0]])  # x2 < x1, y2 < y1: positive "area", no extent
    box = torch.tensor([[0.0, 400.0, 250.0, 450.0]])
    assert _torchvision_iou(sliver, sliver).isnan().all()  # what python_ref returned before
    for a, b in ((sliver, sliver), (point, point), (sliver, box), (box, sliver), (inverted, inverted), (inverted, box)):
        iou = box_iou(a, b)
        assert not iou.isnan().any() and (iou == 0).all(), (a, b, iou)


def test_box_iou_equals_torchvision_where_the_union_is_not_empty_and_anchor_matching_is_unchanged():
    gen = torch.Generator().manual_seed(11)
    anchors, truths = _random_boxes(gen, 300), _random_boxes(gen, 6)
    assert torch.equal(box_iou(truths, anchors), _torchvision_iou(truths, anchors))  # bit for bit
    # The anchor and proposal matching of the detector losses (python_ref/losses.py) on the same boxes.
    for high, low, keep_best in ((0.7, 0.3, True), (0.5, 0.5, False)):
        assert torch.equal(match(box_iou(truths, anchors), high, low, keep_best),
                           match(_torchvision_iou(truths, anchors), high, low, keep_best))
    # An empty truth no longer claims an empty candidate (NaN was the maximum) but matches nothing.
    empty = torch.tensor([[5.0, 5.0, 5.0, 9.0]])
    assert match(_torchvision_iou(empty, empty), 0.5, 0.5, False).tolist() == [0]
    assert match(box_iou(empty, empty), 0.5, 0.5, False).tolist() == [-1]


# --- NMS ------------------------------------------------------------------------------------------------


def test_nms_by_hand():
    boxes = torch.tensor([[0, 0, 10, 10], [1, 0, 11, 10], [20, 20, 30, 30]], dtype=torch.float32)
    scores = torch.tensor([0.9, 0.8, 0.7])
    # IoU(0, 1) = 90 / 110 = 0.82 > 0.5: box 1 goes; box 2 touches nothing.
    assert nms(boxes, scores, 0.5).tolist() == [0, 2]
    assert nms(boxes, scores, 0.85).tolist() == [0, 1, 2]
    assert nms(boxes, torch.tensor([0.1, 0.8, 0.7]), 0.5).tolist() == [1, 2]


def test_nms_suppressed_boxes_do_not_suppress():
    # A-B IoU 50/150 = 1/3 > 0.3 drops B; B-C would also be 1/3 but B is gone and A-C is 0, so C stays.
    boxes = torch.tensor([[0, 0, 10, 10], [5, 0, 15, 10], [10, 0, 20, 10]], dtype=torch.float32)
    assert nms(boxes, torch.tensor([0.9, 0.8, 0.7]), 0.3).tolist() == [0, 2]


def test_nms_ties_and_threshold_equality():
    same = torch.tensor([[0, 0, 4, 4]] * 3, dtype=torch.float32)
    assert nms(same, torch.tensor([0.5, 0.5, 0.5]), 0.5).tolist() == [0]  # equal scores: lowest index wins
    assert nms(same, torch.tensor([0.5, 0.6, 0.6]), 0.5).tolist() == [1]
    # IoU exactly 0.5 (inter 2, union 4) is not "above" the threshold: both kept, in score order.
    half = torch.tensor([[0, 0, 4, 1], [1, 0, 3, 1]], dtype=torch.float32)
    assert nms(half, torch.tensor([0.2, 0.3]), 0.5).tolist() == [1, 0]


def test_nms_empty_and_degenerate():
    assert nms(torch.zeros(0, 4), torch.zeros(0), 0.5).tolist() == []
    empty_boxes = torch.zeros(2, 4)  # IoU 0/0 is NaN: never suppresses, as torchvision
    assert nms(empty_boxes, torch.tensor([0.1, 0.2]), 0.5).tolist() == [1, 0]
    assert nms(empty_boxes, torch.tensor([0.1, 0.2]), 0.5).dtype == torch.int64


@pytest.mark.parametrize("seed,thr", [(0, 0.5), (1, 0.7), (2, 0.3), (3, 0.0)])
def test_nms_matches_the_definition(seed, thr):
    gen = torch.Generator().manual_seed(seed)
    boxes = _random_boxes(gen, 120)
    scores = torch.randint(0, 20, (120,), generator=gen).float() / 20  # many ties
    assert nms(boxes, scores, thr).tolist() == _naive_nms(boxes.tolist(), scores.tolist(), thr)


def test_batched_nms_is_nms_per_group():
    gen = torch.Generator().manual_seed(5)
    boxes = _random_boxes(gen, 150, 60.0)
    scores = torch.rand(150, generator=gen)
    groups = torch.randint(0, 4, (150,), generator=gen)
    keep = batched_nms(boxes, scores, groups, 0.5)
    want = []
    for g in range(4):
        idx = [i for i in range(150) if groups[i] == g]
        want += [idx[k] for k in _naive_nms(boxes[idx].tolist(), scores[idx].tolist(), 0.5)]
    assert sorted(keep.tolist()) == sorted(want)
    assert (scores[keep][1:] <= scores[keep][:-1]).all()
    # Property: no kept pair of one group overlaps above the threshold.
    iou = box_iou(boxes[keep], boxes[keep])
    same = groups[keep][:, None] == groups[keep][None, :]
    assert not ((iou > 0.5) & same & ~torch.eye(len(keep), dtype=torch.bool)).any()


def test_batched_nms_keeps_identical_boxes_of_different_groups():
    boxes = torch.tensor([[0, 0, 10, 10]] * 3, dtype=torch.float32)
    keep = batched_nms(boxes, torch.tensor([0.3, 0.9, 0.5]), torch.tensor([1, 2, 1]), 0.5)
    assert keep.tolist() == [1, 2]


# --- proposals ------------------------------------------------------------------------------------------


def _proposal_case():
    # Level 0: three anchors, level 1: two. Zero deltas, so boxes are the anchors, clipped to the 64x64 input.
    anchors = torch.tensor([
        [0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60],  # level 0
        [-10, -10, 20, 20], [30, 30, 30.5, 40],  # level 1: first is clipped, second is 0.5 px wide
    ], dtype=torch.float32)
    objectness = torch.tensor([1.0, 3.0, 2.0, 2.5, 5.0])
    return objectness, torch.zeros(5, 4), anchors, (3, 2)


def test_select_proposals_by_hand():
    cfg = RPNConfig(pre_nms_top_n=2, nms_threshold=0.5, post_nms_top_n=4, min_box_size=1.0)
    boxes, valid = select_proposals(*_proposal_case(), cfg, image_size=64)
    # Level 0 keeps its top 2 (3.0, 2.0): anchor 0 never competes. Level 1: the 0.5 px box is dropped,
    # the other is clipped to [0, 0, 20, 20]. Levels are not suppressed against each other. By score:
    # 3.0, 2.5, 2.0, then one padding row.
    want = torch.tensor([[1, 1, 11, 11], [0, 0, 20, 20], [50, 50, 60, 60], [0, 0, 0, 0]], dtype=torch.float32)
    assert torch.equal(boxes, want)
    assert valid.tolist() == [True, True, True, False]
    assert boxes.dtype == torch.float32 and valid.dtype == torch.bool


def test_proposal_anchors_by_hand():
    cfg = RPNConfig(pre_nms_top_n=2, nms_threshold=0.5, post_nms_top_n=4, min_box_size=1.0)
    # the rows of test_select_proposals_by_hand: anchor 1 (3.0), anchor 3 (2.5, clipped), anchor 2 (2.0), padding
    assert proposal_anchors(*_proposal_case(), cfg, image_size=64).tolist() == [1, 3, 2, -1]


def test_select_proposals_nms_and_truncation():
    objectness, deltas, anchors, sizes = _proposal_case()
    cfg = RPNConfig(pre_nms_top_n=3, nms_threshold=0.5, post_nms_top_n=2, min_box_size=0.0)
    boxes, valid = select_proposals(objectness, deltas, anchors, sizes, cfg, image_size=64)
    # Level 0: anchors 0 and 1 overlap 81/119 = 0.68 > 0.5, 1 (3.0) beats 0 (1.0). Level 1 keeps both.
    # Over all: 5.0 (the thin box), 3.0 -> the best two.
    assert torch.equal(boxes, torch.tensor([[30, 30, 30.5, 40], [1, 1, 11, 11]]))
    assert valid.all()


def test_select_proposals_decodes_and_breaks_ties_by_level():
    anchors = torch.tensor([[10, 10, 20, 20], [40, 40, 50, 50]], dtype=torch.float32)
    deltas = torch.tensor([[0.0, 0.0, 0.0, 0.0], [0.5, 0.0, math.log(2), 0.0]])
    cfg = RPNConfig(post_nms_top_n=3)
    boxes, valid = select_proposals(torch.tensor([1.0, 1.0]), deltas, anchors, (1, 1), cfg, image_size=64)
    # Second: centre x 45 + 0.5*10 = 50, width 20 -> [40, 40, 60, 50]. Equal scores: level 0 first.
    assert torch.equal(boxes, torch.tensor([[10, 10, 20, 20], [40, 40, 60, 50], [0, 0, 0, 0]], dtype=torch.float32))
    assert valid.tolist() == [True, True, False]


def test_select_proposals_properties_on_random_input():
    gen = torch.Generator().manual_seed(7)
    sizes = (300, 80, 20)
    anchors = _random_boxes(gen, 400, 120.0)
    cfg = RPNConfig(pre_nms_top_n=50, nms_threshold=0.6, post_nms_top_n=128)
    boxes, valid = select_proposals(torch.randn(400, generator=gen), torch.randn(400, 4, generator=gen) * 0.2,
                                    anchors, sizes, cfg, image_size=128)
    assert boxes.shape == (128, 4) and valid.shape == (128,)
    k = int(valid.sum())
    assert 0 < k <= 150 and valid[:k].all() and not valid[k:].any()  # valid rows first, then padding
    assert (boxes[k:] == 0).all()
    assert (boxes[:k] >= 0).all() and (boxes[:k] <= 128).all()


def test_select_proposals_rejects_mismatched_shapes():
    objectness, deltas, anchors, _ = _proposal_case()
    with pytest.raises(InputError, match="level sizes"):
        select_proposals(objectness, deltas, anchors, (3, 3), RPNConfig(), image_size=64)


# --- regions --------------------------------------------------------------------------------------------


def _region_case():
    proposals = torch.tensor([[0, 0, 10, 10], [1, 0, 11, 10], [20, 20, 30, 30], [0, 0, 5, 5]], dtype=torch.float32)
    valid = torch.tensor([True, True, True, False])
    probs = torch.tensor([[0.1, 0.6, 0.3], [0.2, 0.7, 0.1], [0.96, 0.02, 0.02], [0.0001, 0.9899, 0.01]])
    features = torch.arange(4 * 3, dtype=torch.float32).reshape(4, 3)
    attributes = torch.arange(4 * 2, dtype=torch.float32).reshape(4, 2)
    return proposals, valid, probs.log(), torch.zeros(4, 12), attributes, features


def test_select_regions_by_hand():
    cfg = RoIHeadConfig(num_classes=3, score_threshold=0.05, nms_threshold=0.5, max_regions=50)
    regions = select_regions(*_region_case(), cfg, image_size=64)
    # Candidates >= 0.05 on valid proposals: (p0, c1) .6, (p0, c2) .3, (p1, c1) .7, (p1, c2) .1; p2 is all
    # below threshold, p3 is padding. IoU(p0, p1) = 0.82: class 1 keeps p1 (.7), class 2 keeps p0 (.3).
    assert regions.labels.tolist() == [1, 2]
    assert regions.proposal_indices.tolist() == [1, 0]
    assert torch.allclose(regions.scores, torch.tensor([0.7, 0.3]))
    assert torch.equal(regions.boxes, torch.tensor([[1, 0, 11, 10], [0, 0, 10, 10]], dtype=torch.float32))
    assert torch.equal(regions.features, torch.tensor([[3.0, 4.0, 5.0], [0.0, 1.0, 2.0]]))
    assert torch.equal(regions.attribute_logits, torch.tensor([[2.0, 3.0], [0.0, 1.0]]))
    assert regions.labels.dtype == torch.int64 and len(regions) == 2


def test_select_regions_threshold_and_cap():
    case = _region_case()
    cfg = RoIHeadConfig(num_classes=3, score_threshold=0.5, nms_threshold=0.9, max_regions=1)
    regions = select_regions(*case, cfg, image_size=64)
    # >= 0.5: (p0, c1) .6 and (p1, c1) .7; NMS 0.9 keeps both (IoU 0.82); the cap keeps the best one.
    assert regions.proposal_indices.tolist() == [1] and regions.labels.tolist() == [1]


def test_select_regions_decodes_class_specific_and_clips():
    proposals = torch.tensor([[50, 50, 60, 60]], dtype=torch.float32)
    deltas = torch.zeros(1, 12)
    deltas[0, 8:12] = torch.tensor([10.0, 0.0, 5 * math.log(2), 0.0])  # class 2: centre +10 px, width x2
    logits = torch.tensor([[0.0, 0.0, 5.0]])
    cfg = RoIHeadConfig(num_classes=3, score_threshold=0.5, box_coder_weights=(10, 10, 5, 5))
    regions = select_regions(proposals, torch.tensor([True]), logits, deltas, torch.zeros(1, 2), torch.zeros(1, 3),
                             cfg, image_size=64)
    # Centre (65, 55), width 20, height 10 -> [55, 50, 75, 60], clipped at 64.
    assert regions.labels.tolist() == [2]
    assert torch.allclose(regions.boxes, torch.tensor([[55.0, 50.0, 64.0, 60.0]]))


def test_select_regions_left_to_right_keeps_the_best_set_and_orders_by_centre():
    case = _region_case()
    by_score = select_regions(*case, RoIHeadConfig(num_classes=3, score_threshold=0.05, max_regions=50), image_size=64)
    by_x = select_regions(*case, RoIHeadConfig(num_classes=3, score_threshold=0.05, max_regions=50,
                                               region_order="left_to_right"), image_size=64)
    # By hand (see test_select_regions_by_hand): (p1, c1, x-centre 6.0) and (p0, c2, x-centre 5.0).
    assert by_score.proposal_indices.tolist() == [1, 0]
    assert by_x.proposal_indices.tolist() == [0, 1] and by_x.labels.tolist() == [2, 1]
    capped = select_regions(*case, RoIHeadConfig(num_classes=3, score_threshold=0.05, max_regions=1,
                                                 region_order="left_to_right"), image_size=64)
    assert capped.proposal_indices.tolist() == [1]  # the cap still keeps the best score, not the leftmost
    with pytest.raises(ConfigError, match="region_order is 'top_down'"):
        RoIHeadConfig(region_order="top_down")


def test_select_regions_properties_on_random_input():
    gen = torch.Generator().manual_seed(11)
    r, c = 60, 6
    proposals = _random_boxes(gen, r, 100.0)
    valid = torch.arange(r) < 50
    cfg = RoIHeadConfig(num_classes=c, score_threshold=0.1, nms_threshold=0.4, max_regions=20)
    feats = torch.randn(r, 8, generator=gen)
    regions = select_regions(proposals, valid, torch.randn(r, c, generator=gen) * 2,
                             torch.randn(r, c * 4, generator=gen), torch.randn(r, 3, generator=gen), feats, cfg, 128)
    k = len(regions)
    assert 0 < k <= 20
    assert (regions.scores[1:] <= regions.scores[:-1]).all() and (regions.scores >= 0.1).all()
    assert (regions.labels >= 1).all() and (regions.labels < c).all()
    assert (regions.proposal_indices < 50).all()
    assert torch.equal(regions.features, feats[regions.proposal_indices])
    iou = box_iou(regions.boxes, regions.boxes)
    same = regions.labels[:, None] == regions.labels[None, :]
    assert not ((iou > 0.4) & same & ~torch.eye(k, dtype=torch.bool)).any()


def test_select_regions_with_nothing_above_threshold():
    proposals, valid, logits, deltas, attrs, feats = _region_case()
    cfg = RoIHeadConfig(num_classes=3, score_threshold=0.999)
    regions = select_regions(proposals, valid, logits, deltas, attrs, feats, cfg, 64)
    assert len(regions) == 0 and regions.features.shape == (0, 3) and regions.boxes.shape == (0, 4)


# --- geometry -------------------------------------------------------------------------------------------


def test_region_geometry_and_tokens_by_hand():
    boxes = torch.tensor([[10.0, 20.0, 30.0, 60.0]])
    assert torch.allclose(region_geometry(boxes, 100, 200), torch.tensor([[0.1, 0.1, 0.3, 0.3, 0.2, 0.2]]))
    regions = Regions(boxes=boxes, labels=torch.tensor([1]), scores=torch.tensor([0.9]),
                      features=torch.tensor([[7.0, 8.0]]), attribute_logits=torch.zeros(1, 2),
                      proposal_indices=torch.tensor([0]))
    assert torch.allclose(region_tokens(regions, 100, 200), torch.tensor([[7.0, 8.0, 0.1, 0.1, 0.3, 0.3, 0.2, 0.2]]))
