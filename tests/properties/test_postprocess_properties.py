"""Properties of python_ref's host steps (postprocess.py, rpn.py) on generated boxes and scores: what greedy NMS,
proposal selection and region selection guarantee whatever the input, checked with hypothesis. Boxes come from
small grids so that equal scores and IoUs exactly at a threshold are common, not rare."""

from __future__ import annotations

import numpy as np
import pytest
import torch

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.extra import numpy as hnp  # noqa: E402

from minivlm.python_ref.config import RoIHeadConfig, RPNConfig  # noqa: E402
from minivlm.python_ref.postprocess import batched_nms, clip_boxes, nms, select_proposals, select_regions  # noqa: E402
from minivlm.python_ref.rpn import BoxCoder  # noqa: E402

THRESHOLDS = st.sampled_from([0.0, 0.25, 0.5, 0.7, 1.0]) | st.floats(0.0, 1.0)


@st.composite
def boxes_and_scores(draw, max_boxes: int = 24):
    """(n, 4) float32 xyxy boxes with x2 >= x1, y2 >= y1 (empty boxes included) and (n,) scores with ties."""
    n = draw(st.integers(0, max_boxes))
    grid = draw(st.sampled_from([1.0, 0.5, 0.1]))
    corners = draw(st.lists(st.tuples(*[st.integers(0, 20)] * 2, *[st.integers(0, 12)] * 2), min_size=n, max_size=n))
    boxes = np.array([[x, y, x + w, y + h] for x, y, w, h in corners], dtype=np.float32).reshape(n, 4) * grid
    scores = draw(st.lists(st.sampled_from([0.1, 0.2, 0.5, 0.9]) | st.floats(-5, 5, width=32), min_size=n, max_size=n))
    return torch.from_numpy(boxes), torch.tensor(scores, dtype=torch.float32).reshape(n)


def _iou(a: np.ndarray, b: np.ndarray) -> np.float32:
    """IoU of two boxes in python_ref's float32 order of operations (NaN for two empty boxes)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        w = np.maximum(np.minimum(a[2], b[2]) - np.maximum(a[0], b[0]), np.float32(0))
        h = np.maximum(np.minimum(a[3], b[3]) - np.maximum(a[1], b[1]), np.float32(0))
        inter = w * h
        return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def _visit_order(scores: torch.Tensor) -> list[int]:
    """Descending score, equal scores by lower index."""
    return sorted(range(len(scores)), key=lambda i: (-float(scores[i]), i))


def _check_greedy(boxes: torch.Tensor, scores: torch.Tensor, keep: list[int], threshold: float) -> None:
    b, t = boxes.numpy(), np.float32(threshold)
    order = _visit_order(scores)
    assert keep == [i for i in order if i in set(keep)], "kept boxes are not in descending score order"
    assert len(set(keep)) == len(keep)
    for x, i in enumerate(keep):
        for j in keep[x + 1:]:
            assert not _iou(b[i], b[j]) > t, f"kept boxes {i} and {j} overlap by {_iou(b[i], b[j])} > {threshold}"
    rank = {i: r for r, i in enumerate(order)}
    for d in set(range(len(b))) - set(keep):
        assert any(rank[k] < rank[d] and _iou(b[k], b[d]) > t for k in keep), \
            f"box {d} was dropped but no kept box ranked before it overlaps it by more than {threshold}"


@given(boxes_and_scores(), THRESHOLDS)
def test_nms_keeps_a_greedy_maximal_set(data, threshold):
    boxes, scores = data
    keep = nms(boxes, scores, threshold).tolist()
    _check_greedy(boxes, scores, keep, threshold)
    assert nms(boxes[keep], scores[keep], threshold).tolist() == list(range(len(keep)))  # idempotent


@given(boxes_and_scores(), THRESHOLDS, st.randoms(use_true_random=False))
def test_nms_follows_the_boxes_when_they_are_permuted(data, threshold, rnd):
    boxes, _ = data
    perm = list(range(len(boxes)))
    rnd.shuffle(perm)
    scores = torch.tensor(perm, dtype=torch.float32) * 0.25  # distinct: with ties the order follows the index
    rnd.shuffle(perm)
    p = torch.tensor(perm, dtype=torch.int64)
    kept = nms(boxes, scores, threshold).tolist()
    assert [perm[i] for i in nms(boxes[p], scores[p], threshold).tolist()] == kept


@given(boxes_and_scores(), st.lists(st.integers(1, 4), min_size=24, max_size=24), THRESHOLDS)
def test_batched_nms_is_one_nms_per_group(data, groups, threshold):
    boxes, scores = data
    g = torch.tensor(groups[: len(scores)], dtype=torch.int64)
    expected = []
    for group in sorted(set(g.tolist())):
        members = torch.nonzero(g == group).flatten()
        expected += members[nms(boxes[members], scores[members], threshold)].tolist()
    expected.sort(key=lambda i: (-float(scores[i]), i))
    assert batched_nms(boxes, scores, g, threshold).tolist() == expected


@given(st.lists(st.floats(-1e3, 1e3, width=32), min_size=4, max_size=4),
       st.lists(st.floats(-2.0, 2.0, width=32), min_size=4, max_size=4),
       st.sampled_from([(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0)]))
def test_box_coder_decode_inverts_encode(corner, deltas, weights):
    x, y = corner[0], corner[1]
    reference = torch.tensor([[x, y, x + 1 + abs(corner[2]), y + 1 + abs(corner[3])]], dtype=torch.float32)
    coder = BoxCoder(weights)
    boxes = coder.decode(torch.tensor([deltas], dtype=torch.float32), reference)
    again = coder.decode(coder.encode(boxes, reference), reference)
    torch.testing.assert_close(again, boxes, rtol=1e-4, atol=1e-3)


@st.composite
def rpn_outputs(draw):
    """A 16x16 input with levels of stride 4 and 8 (one anchor size each, 1-3 ratios) and its stage-1 outputs."""
    ratios = draw(st.lists(st.sampled_from([0.5, 1.0, 2.0]), min_size=1, max_size=3, unique=True))
    cfg = RPNConfig(anchor_sizes=(4.0, 8.0), aspect_ratios=tuple(ratios), pre_nms_top_n=draw(st.integers(1, 20)),
                    nms_threshold=draw(THRESHOLDS), post_nms_top_n=draw(st.integers(1, 30)),
                    min_box_size=draw(st.sampled_from([0.0, 1.0, 3.0])))
    sizes = (16 * len(ratios), 4 * len(ratios))  # (16/4)^2 and (16/8)^2 cells
    n = sum(sizes)
    from minivlm.python_ref.rpn import make_anchors
    anchors, level_sizes = make_anchors(cfg, 16, 2)
    assert level_sizes == sizes
    objectness = torch.from_numpy(draw(hnp.arrays(np.float32, n, elements=st.sampled_from([-1.0, 0.0, 2.0])
                                                  | st.floats(-8, 8, width=32))))
    deltas = torch.from_numpy(draw(hnp.arrays(np.float32, (n, 4), elements=st.floats(-1.5, 1.5, width=32))))
    return cfg, anchors, level_sizes, objectness, deltas


@given(rpn_outputs())
def test_proposals_are_clipped_wide_enough_and_padded_at_the_end(data):
    cfg, anchors, level_sizes, objectness, deltas = data
    proposals, valid = select_proposals(objectness, deltas, anchors, level_sizes, cfg, 16)
    k = int(valid.sum())
    assert proposals.shape == (cfg.post_nms_top_n, 4) and valid.tolist() == [True] * k + [False] * (len(valid) - k)
    assert torch.all(proposals[k:] == 0)
    p = proposals[:k]
    assert torch.all((p >= 0) & (p <= 16))
    assert torch.all(p[:, 2] - p[:, 0] >= cfg.min_box_size) and torch.all(p[:, 3] - p[:, 1] >= cfg.min_box_size)
    assert k <= min(cfg.post_nms_top_n, len(level_sizes) * cfg.pre_nms_top_n)


@st.composite
def stage2_outputs(draw):
    r = draw(st.integers(1, 12))
    c = draw(st.integers(2, 5))
    cfg = RoIHeadConfig(representation_size=3, num_classes=c, num_attributes=2, max_regions=draw(st.integers(1, 8)),
                        score_threshold=draw(st.sampled_from([0.0, 0.05, 0.3, 0.5])), nms_threshold=draw(THRESHOLDS),
                        region_order=draw(st.sampled_from(["score", "left_to_right"])))
    corners = draw(st.lists(st.tuples(st.integers(0, 24), st.integers(0, 24), st.integers(1, 8), st.integers(1, 8)),
                            min_size=r, max_size=r))
    proposals = torch.tensor([[x, y, x + w, y + h] for x, y, w, h in corners], dtype=torch.float32)
    valid = torch.tensor(draw(st.lists(st.booleans(), min_size=r, max_size=r)))
    logits = torch.from_numpy(draw(hnp.arrays(np.float32, (r, c), elements=st.sampled_from([0.0, 1.0])
                                              | st.floats(-4, 4, width=32))))
    deltas = torch.from_numpy(draw(hnp.arrays(np.float32, (r, c * 4), elements=st.floats(-3, 3, width=32))))
    return cfg, proposals, valid, logits, deltas


@given(stage2_outputs())
def test_regions_are_confident_foreground_non_overlapping_and_ordered(data):
    cfg, proposals, valid, logits, deltas = data
    r = len(proposals)
    features = torch.arange(r * 3, dtype=torch.float32).reshape(r, 3)
    out = select_regions(proposals, valid, logits, deltas, torch.zeros(r, 2), features, cfg, 32)
    k = len(out)
    assert k <= cfg.max_regions
    assert torch.all(out.labels >= 1) and torch.all(out.labels < cfg.num_classes)
    assert torch.all(out.scores >= cfg.score_threshold)
    assert all(bool(valid[i]) for i in out.proposal_indices.tolist())
    torch.testing.assert_close(out.features, features[out.proposal_indices])
    probs = torch.softmax(logits, dim=1)
    torch.testing.assert_close(out.scores, probs[out.proposal_indices, out.labels])
    assert torch.all((out.boxes >= 0) & (out.boxes <= 32))
    boxes = out.boxes.numpy()
    for i in range(k):
        for j in range(i + 1, k):
            if out.labels[i] == out.labels[j]:
                assert not _iou(boxes[i], boxes[j]) > np.float32(cfg.nms_threshold)
    if cfg.region_order == "left_to_right":
        centres = (out.boxes[:, 0] + out.boxes[:, 2]) * 0.5
        assert torch.all(centres[1:] >= centres[:-1])
    else:
        assert torch.all(out.scores[1:] <= out.scores[:-1])


@given(st.lists(st.floats(-100, 100, width=32), min_size=4, max_size=40).filter(lambda v: len(v) % 4 == 0),
       st.integers(1, 64))
def test_clip_boxes_is_idempotent_and_inside(values, size):
    boxes = torch.tensor(values, dtype=torch.float32).reshape(-1, 4)
    clipped = clip_boxes(boxes, size, size)
    assert torch.all((clipped >= 0) & (clipped <= size))
    assert torch.equal(clip_boxes(clipped, size, size), clipped)
