"""The public eager API on an untrained tiny model: shapes, types and input checks (not accuracy)."""

import warnings

import numpy as np
import pytest
import torch
from PIL import ExifTags, Image

import minivlm
import minivlm.python_ref.pipeline as reference_pipeline
from minivlm.errors import ConfigError, InputError, WeightsError
from minivlm.images import PRESHRINK_RATIO
from minivlm.loading import bundled_weights
from minivlm.python_ref.fusion import AttentionKind
from minivlm.python_ref.generate import beam_search, greedy
from minivlm.python_ref.scenes import generate_scene

needs_demo = pytest.mark.skipif(bundled_weights("minivlm-demo") is None, reason="demo weights not bundled")


@pytest.fixture(scope="module")
def pipe():
    return minivlm.load("minivlm-tiny", random_init=True)


@pytest.fixture(scope="module")
def demo():
    return minivlm.load("minivlm-demo")


def test_four_tasks_return_well_formed_results(pipe):
    img = np.random.default_rng(0).integers(0, 256, (96, 160, 3), dtype=np.uint8)
    detections = pipe.detect(img)
    assert len(detections) <= pipe.config.tee.roi_head.max_regions
    scores = [d.score for d in detections]
    assert scores == sorted(scores, reverse=True)
    for d in detections:
        x1, y1, x2, y2 = d.box
        assert 0 <= x1 <= x2 <= 160 and 0 <= y1 <= y2 <= 96
        assert d.label in pipe.vocab.classes[1:] and d.attribute in pipe.vocab.attributes
    # The caption is python_ref's greedy / beam decode of this image's regions, at most max_caption_tokens long.
    tok, graphs = pipe.pipeline.tokenizer, pipe.pipeline.graphs.caption
    inputs = pipe.pipeline.pack(pipe.regions(img), "", require_text=False)
    for num_beams, decoded in ((1, greedy(graphs, tok, inputs)), (2, beam_search(graphs, tok, inputs, 2))):
        assert len(decoded.token_ids) <= pipe.config.fusion.max_caption_tokens
        assert pipe.caption(img, num_beams=num_beams) == tok.decode(list(decoded.token_ids))
    # Answer and match are the fusion model's own heads on the packed question/text: the argmax answer, and the
    # softmax's index 1 (the same modules in this process, so equal bit for bit).
    fusion, question, text = pipe.pipeline.model.fusion, "how many shapes are there?", "a red circle"
    with torch.no_grad():
        hidden = {t: fusion.encode(*pipe.pipeline.pack(pipe.regions(img), t).as_tuple(), AttentionKind.FULL)
                  for t in (question, text)}
        answer = pipe.vocab.answers[int(fusion.vqa_logits(hidden[question])[0].argmax())]
        match = float(torch.softmax(fusion.match_logits(hidden[text]), dim=-1)[0, 1])
    assert pipe.answer(img, question) == answer
    assert pipe.match(img, text) == match


def test_any_image_size_and_mode_is_accepted(pipe, tmp_path):
    """Every size and mode gives detections inside the image; grayscale is its gray level in all three channels,
    and a palette file (no transparency) is its RGB expansion."""
    for mode, shape in [("L", (50, 70)), ("RGBA", (300, 20, 4)), ("RGB", (1, 1, 3))]:
        arr = np.random.default_rng(1).integers(0, 256, shape, dtype=np.uint8)
        img = Image.fromarray(arr, mode=mode) if mode != "RGB" else arr
        found = pipe.detect(img)
        for d in found:
            x1, y1, x2, y2 = d.box
            assert 0 <= x1 <= x2 <= shape[1] and 0 <= y1 <= y2 <= shape[0], (mode, d)
        if mode == "L":
            assert found == pipe.detect(np.repeat(arr[:, :, None], 3, axis=2))
    path = tmp_path / "pal.png"
    colours = np.random.default_rng(2).integers(0, 256, (30, 40, 3), dtype=np.uint8)
    Image.fromarray(colours).convert("P").save(path)
    with Image.open(path) as palette:
        expanded = np.asarray(palette.convert("RGB"))
    assert pipe.detect(str(path)) == pipe.detect(expanded) and pipe.caption(str(path)) == pipe.caption(expanded)


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda p, img: p.answer(img, ""), InputError, "question is ''"),
        (lambda p, img: p.answer(img, "why " * 40), InputError, r"text is \d+ tokens"),
        (lambda p, img: p.match(img, 42), InputError, "text is 42"),
        (lambda p, img: p.caption(img, num_beams=0), InputError, "num_beams is 0"),
        (lambda p, img: p.detect(np.zeros((4, 4, 3), np.int32)), InputError, "dtype int32"),
        (lambda p, img: p.detect("/nonexistent/x.png"), InputError, "does not exist"),
    ],
)
def test_bad_input_raises_one_line_sdk_errors(pipe, call, error, message):
    img = np.zeros((32, 32, 3), np.uint8)
    with pytest.raises(error, match=message) as err:
        call(pipe, img)
    assert "\n" not in str(err.value)


def test_load_errors_name_the_value(tmp_path):
    with pytest.raises(ConfigError, match="unknown model preset 'nope'"):
        minivlm.load("nope")
    with pytest.raises(ConfigError, match="no weights ship for 'minivlm-paper'"):
        minivlm.load("minivlm-paper")
    with pytest.raises(WeightsError, match="does not exist"):
        minivlm.load(str(tmp_path / "missing.safetensors"))
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 20)
    with pytest.raises(WeightsError):
        minivlm.load(str(bad))


def test_a_large_image_reaches_preprocess_small(pipe, monkeypatch):
    """The float copy preprocessing makes is bounded by the model input, not by the user's image."""
    seen = []

    def recording(image, *args, **kwargs):
        seen.append(image.shape)
        return preprocess(image, *args, **kwargs)

    preprocess = reference_pipeline.preprocess
    monkeypatch.setattr(reference_pipeline, "preprocess", recording)
    size = pipe.config.tee.image_size
    big = np.random.default_rng(2).integers(0, 256, (9 * size + 5, 5 * size, 3), dtype=np.uint8)
    for d in pipe.detect(big):
        x1, y1, x2, y2 = d.box
        assert 0 <= x1 <= x2 <= big.shape[1] and 0 <= y1 <= y2 <= big.shape[0]  # boxes in the original's pixels
    at_ratio = big[: PRESHRINK_RATIO * size, : PRESHRINK_RATIO * size]
    pipe.detect(at_ratio)
    assert max(seen[0][:2]) <= PRESHRINK_RATIO * size
    assert seen[1] == at_ratio.shape  # at most the ratio: untouched, so python_ref's result is exact


def _iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


# Pre-shrinking averages f x f boxes where the plain letterbox resize point-samples (no antialiasing), so results
# are close, not equal: on 36 demo scenes enlarged 4.3-10x, the same captions on 34, confident detections
# (score >= 0.9) matched by label with IoU >= 0.89 and a mean input difference under 2 of 255 levels.
PRESHRINK_MIN_IOU = 0.85


@needs_demo
def test_a_preshrunk_image_gives_the_unshrunk_result(demo):
    scene = generate_scene(11, 3)
    big = np.asarray(Image.fromarray(scene.image).resize((1537, 1500), Image.Resampling.BILINEAR))  # f = 3, partial edge
    assert max(big.shape) > PRESHRINK_RATIO * demo.config.tee.image_size
    plain = demo.pipeline.regions(big)  # python_ref on the full image: no pre-shrink
    shrunk = demo.regions(big)
    confident = lambda found: sorted((d for d in demo.pipeline.detections_of(found) if d.score >= 0.9),  # noqa: E731
                                     key=lambda d: d.label)
    assert [d.label for d in confident(plain)] == [d.label for d in confident(shrunk)] == sorted(scene.labels)
    for a, b in zip(confident(plain), confident(shrunk)):
        assert _iou(a.box, b.box) >= PRESHRINK_MIN_IOU, (a, b)
    assert demo.pipeline.caption_of(shrunk) == demo.pipeline.caption_of(plain) == scene.caption


@needs_demo
def test_exif_orientation_is_applied_before_detection(demo, tmp_path):
    upright = generate_scene(4244, 0).image[:, :200]
    path = tmp_path / "rotated.png"
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6  # "rotate 90 degrees clockwise to display"
    Image.fromarray(upright).transpose(Image.Transpose.ROTATE_90).save(path, exif=exif)  # stored a quarter-turn back
    assert demo.detect(str(path)) == demo.detect(upright)
    with Image.open(path) as opened:
        assert demo.caption(opened) == demo.caption(upright)


@needs_demo
def test_nothing_detected_warns_on_caption_answer_and_match(demo):
    blank = np.full((256, 256, 3), 255, np.uint8)
    assert demo.detect(blank) == []
    for call in (lambda: demo.caption(blank), lambda: demo.answer(blank, "how many shapes are there?"),
                 lambda: demo.match(blank, "a red circle")):
        with pytest.warns(minivlm.NoDetectionsWarning, match="no object detected in the image") as caught:
            call()
        assert caught[0].filename == __file__  # points at the caller's line
    with warnings.catch_warnings():
        warnings.simplefilter("error", minivlm.NoDetectionsWarning)
        demo.caption(generate_scene(4244, 0).image)  # objects found: no warning
