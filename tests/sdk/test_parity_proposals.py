"""The parity check of the proposals host step (sdk/parity/tasks.py `same_proposals`): the build's proposals must be
what the reference's proposal step keeps from the reference's boxes with scores within the graph bound of the
reference's, so anchors may trade places only as near-ties (at a top-k cut, or in an NMS decision between two
overlapping boxes). Cases built by hand: eight anchors, disjoint unless a case overlaps two, zero deltas, so each
proposal is its anchor's box and the kept set follows from the scores alone."""

import torch

from minivlm.parity.reference import ImageRun
from minivlm.parity.tasks import same_proposals
from minivlm.python_ref.config import RPNConfig
from minivlm.python_ref.postprocess import proposal_anchors, select_proposals

DISJOINT = torch.tensor([[8 * i, 0, 8 * i + 6, 6] for i in range(8)], dtype=torch.float32)
LEVELS = (6, 2)
CFG = RPNConfig(pre_nms_top_n=3, post_nms_top_n=5)  # level 0 cut at its 3rd score; 3 + 2 = 5 rows, all filled
MAX_SHIFT, MAX_REL = 0.5, 1e-4
TIE = float(torch.tensor(0.3).nextafter(torch.tensor(1.0)))  # 0.3 and the next float32 above it: a near-tie
REF = [0.9, 0.8, 0.3, TIE, 0.1, 0.0, 0.7, 0.6]  # level 0 keeps anchors 0, 1, 3 (its cut between 3 and 2)


def _run(scores, deltas=None, anchors=DISJOINT, cfg=CFG):
    objectness = torch.tensor(scores, dtype=torch.float32)
    deltas = torch.zeros(8, 4) if deltas is None else deltas

    def choose(o, d):
        return (*select_proposals(o, d, anchors, LEVELS, cfg, image_size=64),
                proposal_anchors(o, d, anchors, LEVELS, cfg, image_size=64))

    boxes, valid, kept = choose(objectness, deltas)
    return ImageRun("scene", [], (), boxes, valid, kept, objectness, deltas, (), (), (), (), "", (), (), {}, choose)


def test_two_anchors_tied_at_the_cut_swapped_by_rounding_count_as_the_same_proposals():
    ref = _run(REF)
    got = _run([0.9, 0.8, TIE, 0.3, 0.1, 0.0, 0.7, 0.6])  # the build rounds anchors 2 and 3 the other way
    assert ref.anchors.tolist() == [0, 1, 6, 7, 3] and got.anchors.tolist() == [0, 1, 6, 7, 2]
    assert not torch.equal(ref.proposals, got.proposals)  # box by box they differ (anchor 2's box is not 3's)
    assert same_proposals(ref, got, MAX_SHIFT, MAX_REL) == 2


def test_two_overlapping_anchors_tied_in_nms_swapped_by_rounding_count_as_the_same_proposals():
    anchors = DISJOINT.clone()
    anchors[1] = torch.tensor([0, 0, 6, 6.5])  # over anchor 0 [0, 0, 6, 6]: IoU 36 / 39 = 0.92 > 0.7
    top = float(torch.tensor(0.9).nextafter(torch.tensor(1.0)))
    ref = _run([top, 0.9, 0.3, TIE, 0.1, 0.0, 0.7, 0.6], anchors=anchors)  # NMS keeps 0, drops 1: far above the cut
    got = _run([0.9, top, 0.3, TIE, 0.1, 0.0, 0.7, 0.6], anchors=anchors)  # the build keeps 1, drops 0
    assert 0 in ref.anchors.tolist() and 1 not in ref.anchors.tolist()
    assert 1 in got.anchors.tolist() and 0 not in got.anchors.tolist()
    assert same_proposals(ref, got, MAX_SHIFT, MAX_REL) == 2


def test_kept_anchors_reordered_by_scores_beyond_the_bound_fail():
    ref = _run(REF)
    got = _run([0.8, 0.9, 0.3, TIE, 0.1, 0.0, 0.7, 0.6])  # anchors 0 and 1 trade places: scores moved by 0.1
    assert sorted(got.anchors.tolist()) == sorted(ref.anchors.tolist())
    assert same_proposals(ref, got, MAX_SHIFT, MAX_REL) is None


def test_a_build_whose_nms_differs_fails():
    anchors = DISJOINT.clone()
    anchors[1] = torch.tensor([0, 0, 6, 6.5])  # over anchor 0: IoU 0.92
    ref = _run(REF, anchors=anchors)
    got = _run(REF, anchors=anchors, cfg=RPNConfig(pre_nms_top_n=3, post_nms_top_n=5, nms_threshold=0.95))
    assert 1 in got.anchors.tolist() and 1 not in ref.anchors.tolist()  # same scores, a laxer NMS keeps both
    assert same_proposals(ref, got, MAX_SHIFT, MAX_REL) is None


def test_an_anchor_far_below_the_cut_kept_by_the_build_fails():
    ref = _run(REF)
    got = _run([0.9, 0.8, 0.3, TIE, 0.95, 0.0, 0.7, 0.6])  # anchor 4 (0.1, far below the cut) is kept instead of 3
    assert got.anchors.tolist() == [4, 0, 1, 6, 7]
    assert same_proposals(ref, got, MAX_SHIFT, MAX_REL) is None
    # the same swap with a build whose other scores all moved by a tiny amount: 4 is still far below the cut
    close = _run([s + 1e-6 if i != 4 else 0.95 for i, s in enumerate(REF)])
    assert same_proposals(ref, close, MAX_SHIFT, MAX_REL) is None


def test_a_swap_wider_than_the_graph_bound_allows_fails():
    ref = _run([0.9, 0.8, 0.3, 0.3001, 0.1, 0.0, 0.7, 0.6])  # anchors 2 and 3 are 1e-4 apart: no rounding swaps them
    got = _run([0.9, 0.8, 0.3002, 0.3001, 0.1, 0.0, 0.7, 0.6])  # anchor 2 moved by 2e-4 and is kept instead of 3
    assert sorted(set(ref.anchors.tolist()) ^ set(got.anchors.tolist())) == [2, 3]
    # the witness moves anchor 2 by at most bound x peak (0.9): 9e-5 < 1e-4 with the fp32 bound, so it keeps 3;
    # a bound of 1e-3 (9e-4) would allow the build's scores, and then its proposals
    assert same_proposals(ref, got, MAX_SHIFT, MAX_REL) is None
    assert same_proposals(ref, got, MAX_SHIFT, 1e-3) == 2


def test_a_kept_box_moved_by_more_than_half_a_pixel_fails():
    ref = _run(REF)
    deltas = torch.zeros(8, 4)
    deltas[6, 0] = 1.0 / 6  # anchor 6 (kept by both) moved by one pixel (dx * width)
    assert same_proposals(ref, _run(REF, deltas), MAX_SHIFT, MAX_REL) is None
    deltas[6, 0] = 0.25 / 6  # a quarter pixel: the same proposal
    assert same_proposals(ref, _run(REF, deltas), MAX_SHIFT, MAX_REL) == 0


def test_a_different_number_of_proposals_fails():
    ref, got = _run(REF), _run(REF)
    got.valid[-1], got.anchors[-1] = False, -1  # the build's run kept one proposal fewer
    assert same_proposals(ref, got, MAX_SHIFT, MAX_REL) is None
