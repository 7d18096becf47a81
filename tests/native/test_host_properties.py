"""The native core's host steps against python_ref on generated input (hypothesis), through the C API of the
shared library (ctypes, see conftest.py): tokenizer ids on arbitrary Unicode and bytes, letterbox pixels, anchors,
box decoding, NMS, proposals, region selection, region tokens and input packing. Integer outputs must be
identical; floats agree within the native test suite's tolerances (sdk/native/tests/check.hpp). The JSON and
manifest readers are in test_reader_properties.py."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

hypothesis = pytest.importorskip("hypothesis")
from native_ctypes import MVLM_BAD_INPUT, NativeError  # noqa: E402
from native_ctypes import Letterbox as NativeLetterbox  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.extra import numpy as hnp  # noqa: E402

from minivlm.python_ref.config import FusionConfig, RoIHeadConfig, RPNConfig  # noqa: E402
from minivlm.python_ref.packing import pack_inputs  # noqa: E402
from minivlm.python_ref.postprocess import nms, region_geometry, select_proposals, select_regions  # noqa: E402
from minivlm.python_ref.preprocess import Letterbox, preprocess  # noqa: E402
from minivlm.python_ref.rpn import BoxCoder, make_anchors  # noqa: E402
from minivlm.python_ref.tokenizer import Tokenizer  # noqa: E402

pytestmark = pytest.mark.native
# The native suite's bounds (check.hpp): floats 1e-5; box coordinates 1e-5 of max(1, |value|) (glibc's expf vs
# torch's SLEEF differ by an ulp).
FLOAT_TOL = 1e-5
COORD_REL_TOL = 1e-5
FIXTURE = settings(suppress_health_check=[HealthCheck.function_scoped_fixture])  # native_api is session-scoped
TOK = Tokenizer.default()
UNICODE_TEXT = st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=80)
THRESHOLDS = st.sampled_from([0.0, 0.3, 0.5, 0.7, 1.0]) | st.floats(0.0, 1.0)


def _coords_close(got: np.ndarray, expected: np.ndarray, what: str) -> None:
    bound = COORD_REL_TOL * np.maximum(1.0, np.abs(expected))
    bad = ~(np.abs(got - expected) <= bound) & ~(np.isnan(got) & np.isnan(expected))
    assert not bad.any(), f"{what}: {bad.sum()} of {bad.size} off; max abs {np.nanmax(np.abs(got - expected)):.3g}"


# -- tokenizer ---------------------------------------------------------------------------------------------------

@FIXTURE
@given(UNICODE_TEXT)
def test_tokenizer_ids_match_python_ref(native_api, text):
    assert native_api.tokenize(text.encode("utf-8")) == TOK.encode(text)


@st.composite
def almost_utf8(draw):
    """Random bytes, or UTF-8 text with a stray, truncated or overlong sequence spliced in."""
    if draw(st.booleans()):
        return draw(st.binary(max_size=40))
    text = draw(UNICODE_TEXT).encode("utf-8")
    i = draw(st.integers(0, len(text)))
    bad = draw(st.sampled_from([b"\xff", b"\xc3", b"\xe2\x82", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\x80"]))
    return text[:i] + bad + text[i:]


@FIXTURE
@given(almost_utf8())
def test_tokenizer_rejects_exactly_what_is_not_utf8(native_api, data):
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        with pytest.raises(NativeError) as e:
            native_api.tokenize(data)
        assert e.value.status == MVLM_BAD_INPUT and "UTF-8" in e.value.message
    else:
        assert native_api.tokenize(data) == TOK.encode(text)


@FIXTURE
@given(st.lists(st.integers(0, TOK.vocab_size - 1) | st.sampled_from([0, 100, 101, 102, 103, 1005, 2023]),
                max_size=30))
def test_detokenized_text_matches_python_ref(native_api, ids):
    assert native_api.detokenize(ids) == TOK.decode(ids)


# -- preprocessing -----------------------------------------------------------------------------------------------

@FIXTURE
@given(hnp.arrays(np.uint8, st.tuples(st.integers(1, 64), st.integers(1, 64), st.just(3))), st.integers(1, 96),
       st.sampled_from(["rgb", "rgba", "bgra", "bgr"]), st.integers(0, 5))
def test_letterbox_pixels_match_python_ref(native_api, image, size, pixel_format, padding):
    config = type(native_api.config).from_buffer_copy(native_api.config)
    config.image_size = size
    mean, std = tuple(config.pixel_mean), tuple(config.pixel_std)
    expected, box = preprocess(image, size, mean, std)
    got, native_box = native_api.preprocess(config, image, pixel_format, padding)
    assert (native_box.height, native_box.width, native_box.resized_height, native_box.resized_width) == (
        box.height, box.width, box.resized_height, box.resized_width)
    assert native_box.scale == box.scale
    err = np.abs(got - expected.numpy())
    assert err.max() <= FLOAT_TOL, f"max abs {err.max():.3g} at {np.unravel_index(err.argmax(), err.shape)}"


# -- anchors, decoding, NMS, proposals, regions ------------------------------------------------------------------

@st.composite
def rpn_configs(draw):
    levels = draw(st.integers(1, 3))
    min_level = draw(st.integers(1, 3))
    cells = draw(st.integers(1, 4))
    ratios = tuple(draw(st.lists(st.sampled_from([0.5, 1.0, 2.0, 0.25, 3.0]) | st.floats(0.1, 10.0), min_size=1,
                                 max_size=3, unique=True)))
    sizes = tuple(draw(st.lists(st.sampled_from([4.0, 8.0, 32.0]) | st.floats(1.0, 600.0), min_size=levels,
                                max_size=levels)))
    rpn = RPNConfig(anchor_sizes=sizes, aspect_ratios=ratios, pre_nms_top_n=draw(st.integers(1, 40)),
                    nms_threshold=draw(THRESHOLDS), post_nms_top_n=draw(st.integers(1, 40)),
                    min_box_size=draw(st.sampled_from([0.0, 1.0, 4.0])))
    return rpn, min_level, cells * 2 ** (min_level + levels - 1)


def _native_rpn_config(native_api, rpn: RPNConfig, min_level: int, image_size: int):
    c = type(native_api.config).from_buffer_copy(native_api.config)
    c.image_size, c.min_level, c.num_levels, c.num_ratios = image_size, min_level, len(rpn.anchor_sizes), len(rpn.aspect_ratios)
    c.anchor_sizes[: len(rpn.anchor_sizes)] = rpn.anchor_sizes
    c.aspect_ratios[: len(rpn.aspect_ratios)] = rpn.aspect_ratios
    c.rpn_box_coder_weights[:] = rpn.box_coder_weights
    c.pre_nms_top_n, c.rpn_nms_threshold, c.post_nms_top_n = rpn.pre_nms_top_n, rpn.nms_threshold, rpn.post_nms_top_n
    c.min_box_size = rpn.min_box_size
    return c


@FIXTURE
@given(rpn_configs())
def test_anchors_match_python_ref(native_api, data):
    rpn, min_level, image_size = data
    expected, sizes = make_anchors(rpn, image_size, min_level)
    got, native_sizes = native_api.make_anchors(_native_rpn_config(native_api, rpn, min_level, image_size))
    assert native_sizes == list(sizes)
    _coords_close(got, expected.numpy(), "anchors")


@FIXTURE
@given(hnp.arrays(np.float32, st.tuples(st.integers(0, 16), st.just(4)), elements=st.floats(-5, 5, width=32)),
       hnp.arrays(np.float32, 4, elements=st.floats(-100, 100, width=32)),
       st.sampled_from([(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0), (0.5, 2.0, 3.0, 0.25)]))
def test_box_decoding_matches_python_ref(native_api, deltas, corner, weights):
    n = np.arange(len(deltas), dtype=np.float32)
    references = np.stack([corner[0] + 0 * n, corner[1] + 0 * n, corner[0] + np.abs(corner[2]) + 1 + n,
                           corner[1] + np.abs(corner[3]) + 1 + 0 * n], axis=1).astype(np.float32)
    expected = BoxCoder(weights).decode(torch.from_numpy(deltas), torch.from_numpy(references)).numpy()
    _coords_close(native_api.decode_boxes(deltas, references, weights), expected, "decoded boxes")


@st.composite
def boxes_and_scores(draw, max_boxes: int = 30):
    """Boxes on a grid (ties in IoU), some empty or inverted, and scores with ties and NaNs."""
    n = draw(st.integers(0, max_boxes))
    grid = draw(st.sampled_from([1.0, 0.5, 0.1]))
    boxes = draw(hnp.arrays(np.int32, (n, 4), elements=st.integers(0, 12))).astype(np.float32) * grid
    boxes[:, 2:] += boxes[:, :2] * draw(st.sampled_from([1, 1, 1, -1]))
    scores = draw(hnp.arrays(np.float32, n, elements=st.sampled_from([0.1, 0.5, 0.9]) | st.floats(-5, 5, width=32)
                             | st.just(float("nan"))))
    return boxes, scores


@FIXTURE
@given(boxes_and_scores(), THRESHOLDS)
def test_nms_keeps_the_same_boxes_as_python_ref(native_api, data, threshold):
    boxes, scores = data
    expected = nms(torch.from_numpy(boxes), torch.from_numpy(scores), threshold).tolist()
    assert native_api.nms(boxes, scores, threshold) == expected


@FIXTURE
@given(rpn_configs(), st.data())
def test_proposals_match_python_ref(native_api, data, draw):
    rpn, min_level, image_size = data
    anchors, sizes = make_anchors(rpn, image_size, min_level)
    n = len(anchors)
    objectness = draw.draw(hnp.arrays(np.float32, n, elements=st.sampled_from([-1.0, 0.0, 2.0]) | st.floats(-8, 8, width=32)))
    # dw, dh on a grid where every exp implementation rounds alike: box coordinates are then bit-identical and
    # min_box_size / IoU decisions cannot flip on an ulp.
    deltas = draw.draw(hnp.arrays(np.float32, (n, 4), elements=st.sampled_from(EXACT_EXP_ARGS)))
    expected, valid = select_proposals(torch.from_numpy(objectness), torch.from_numpy(deltas), anchors, sizes, rpn,
                                       image_size)
    config = _native_rpn_config(native_api, rpn, min_level, image_size)
    got, got_valid = native_api.select_proposals(config, objectness, deltas, np.ascontiguousarray(anchors.numpy()))
    assert got_valid.tolist() == valid.tolist()
    assert np.array_equal(got, expected.numpy()), f"max abs {np.abs(got - expected.numpy()).max():.3g}"


def _exact_exp_args() -> list[float]:
    """Small arguments whose float32 exp torch computes (vectorised and scalar) as the correctly rounded value."""
    candidates = [k / 8 for k in range(-24, 25)] + [0.1, -0.3, 0.7, 1.9]
    values = np.array(candidates, dtype=np.float32)
    wide = torch.exp(torch.from_numpy(np.repeat(values, 17))).numpy().reshape(len(values), 17)  # SIMD and tail
    exact = np.array([math.exp(float(v)) for v in values]).astype(np.float32)
    return [float(v) for v, row, e in zip(values, wide, exact) if (row == e).all()]


EXACT_EXP_ARGS = _exact_exp_args()


@st.composite
def stage2_outputs(draw):
    r = draw(st.integers(1, 16))
    c = draw(st.integers(2, 6))
    roi = RoIHeadConfig(representation_size=4, num_classes=c, num_attributes=2, max_regions=draw(st.integers(1, 8)),
                        score_threshold=draw(st.sampled_from([0.0, 0.05, 0.3, 0.5])), nms_threshold=draw(THRESHOLDS),
                        region_order=draw(st.sampled_from(["score", "left_to_right"])),
                        box_coder_weights=draw(st.sampled_from([(10.0, 10.0, 5.0, 5.0), (1.0, 1.0, 1.0, 1.0)])))
    corners = draw(hnp.arrays(np.int32, (r, 4), elements=st.integers(0, 24))).astype(np.float32)
    proposals = np.concatenate([corners[:, :2], corners[:, :2] + 1 + corners[:, 2:] / 3], axis=1).astype(np.float32)
    valid = draw(hnp.arrays(np.bool_, r))
    # Logits 0 and -30: every probability is exactly 1/m (m the count of 0 logits) whatever the summation order,
    # so equal scores tie exactly in both implementations. Other rows get any logits.
    exact = draw(hnp.arrays(np.float32, (r, c), elements=st.sampled_from([0.0, -30.0])))
    free = draw(hnp.arrays(np.float32, (r, c), elements=st.floats(-6, 6, width=32)))
    logits = np.where(draw(hnp.arrays(np.bool_, (r, 1))), free, exact).astype(np.float32)
    deltas = draw(hnp.arrays(np.float32, (r, c * 4), elements=st.sampled_from(EXACT_EXP_ARGS)))
    return roi, proposals, valid, logits, deltas


def _native_roi_config(native_api, roi: RoIHeadConfig, image_size: int):
    c = type(native_api.config).from_buffer_copy(native_api.config)
    c.image_size, c.num_classes, c.max_regions = image_size, roi.num_classes, roi.max_regions
    c.representation_size, c.region_dim = roi.representation_size, roi.representation_size + 6
    c.roi_box_coder_weights[:] = roi.box_coder_weights
    c.score_threshold, c.roi_nms_threshold = roi.score_threshold, roi.nms_threshold
    c.region_order = 0 if roi.region_order == "score" else 1
    return c


def _near_ties(scores: np.ndarray, threshold: float) -> bool:
    """True when two candidate scores, or a score and the threshold, are within a float32 ulp or two: torch's
    vectorised softmax (SLEEF exp, pairwise sums) and the native one may order those differently."""
    s = np.sort(scores[np.isfinite(scores)].astype(np.float64))
    close = np.diff(s)[np.diff(s) > 0] < 4e-7 if len(s) > 1 else np.array([])
    return bool(close.any() or (np.abs(s - threshold) < 4e-7).any())


@FIXTURE
@given(stage2_outputs())
def test_region_selection_matches_python_ref(native_api, data):
    roi, proposals, valid, logits, deltas = data
    r = len(proposals)
    features = np.arange(r * roi.representation_size, dtype=np.float32).reshape(r, -1)
    expected = select_regions(torch.from_numpy(proposals), torch.from_numpy(valid), torch.from_numpy(logits),
                              torch.from_numpy(deltas), torch.zeros(r, 2), torch.from_numpy(features), roi, 32)
    got = native_api.select_regions(_native_roi_config(native_api, roi, 32), proposals, valid, logits, deltas)
    probs = torch.softmax(torch.from_numpy(logits), dim=1)[:, 1:].numpy()
    if _near_ties(probs[valid], roi.score_threshold):
        return  # which of two near-equal scores wins is not defined to the ulp
    assert got["labels"].tolist() == expected.labels.tolist()
    assert got["proposal_indices"].tolist() == expected.proposal_indices.tolist()
    assert np.abs(got["scores"] - expected.scores.numpy()).max(initial=0) <= FLOAT_TOL
    _coords_close(got["boxes"], expected.boxes.numpy(), "region boxes")


@FIXTURE
@given(hnp.arrays(np.float32, st.tuples(st.integers(0, 10), st.just(4)), elements=st.floats(-50, 600, width=32)),
       st.integers(1, 3000), st.integers(1, 3000), st.sampled_from([256, 512, 48]))
def test_region_tokens_match_python_ref(native_api, boxes, height, width, size):
    config = type(native_api.config).from_buffer_copy(native_api.config)
    config.image_size = size
    k, d = len(boxes), config.representation_size
    features = np.random.default_rng(k).standard_normal((12, d)).astype(np.float32)
    indices = np.arange(k, dtype=np.int64)[::-1].copy()
    scale = size / max(height, width)
    box = NativeLetterbox(height, width, scale, 1, 1)
    tokens, image_boxes = native_api.region_tokens(config, {"boxes": boxes, "proposal_indices": indices,
                                                            "labels": np.ones(k, np.int64)}, features, box)
    expected_boxes = Letterbox(height, width, scale, 1, 1).boxes_to_image(torch.from_numpy(boxes.copy()))
    geometry = region_geometry(expected_boxes, width, height).numpy()
    _coords_close(image_boxes, expected_boxes.numpy(), "image boxes")
    assert np.array_equal(tokens[:, :d], features[indices])
    assert np.abs(tokens[:, d:] - geometry).max(initial=0) <= FLOAT_TOL


@FIXTURE
@given(UNICODE_TEXT, st.lists(st.text(alphabet=st.characters(exclude_categories=("Cs",), exclude_characters="\x00"),
                                       max_size=20), max_size=8),
       st.integers(0, 10), st.booleans())
def test_packed_inputs_match_python_ref(native_api, text, tags, regions, require_text):
    c = native_api.config
    cfg = FusionConfig(hidden_size=c.hidden_size, num_layers=c.num_layers, num_heads=c.num_heads,
                       max_position_embeddings=64, region_dim=c.region_dim, max_text_len=c.max_text_len,
                       max_text_tags_len=c.max_text_tags_len, max_regions=c.max_regions)
    tokens = np.random.default_rng(regions).standard_normal((regions, c.region_dim)).astype(np.float32)
    try:
        expected = pack_inputs(TOK, text, tags, torch.from_numpy(tokens), cfg, require_text=require_text)
    except Exception as e:  # InputError: no text, or too long
        with pytest.raises(NativeError) as native:
            native_api.pack_inputs(c, text.encode("utf-8"), [t.encode("utf-8") for t in tags], tokens, require_text)
        assert native.value.status == MVLM_BAD_INPUT, (e, native.value)
        return
    got = native_api.pack_inputs(c, text.encode("utf-8"), [t.encode("utf-8") for t in tags], tokens, require_text)
    for name in ("input_ids", "token_type_ids", "token_mask", "regions", "region_mask"):
        assert np.array_equal(got[name], getattr(expected, name).numpy()), name

