"""The public eager API on an untrained tiny model: shapes, types and input checks (not accuracy)."""

import numpy as np
import pytest
from PIL import Image

import minivlm
from minivlm.errors import ConfigError, InputError, WeightsError


@pytest.fixture(scope="module")
def pipe():
    return minivlm.load("minivlm-tiny", random_init=True)


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
    assert isinstance(pipe.caption(img), str)
    assert isinstance(pipe.caption(img, num_beams=2), str)
    assert pipe.answer(img, "how many shapes are there?") in pipe.vocab.answers
    assert 0.0 <= pipe.match(img, "a red circle") <= 1.0


def test_any_image_size_and_mode_is_accepted(pipe, tmp_path):
    for mode, shape in [("L", (50, 70)), ("RGBA", (300, 20, 4)), ("RGB", (1, 1, 3))]:
        arr = np.random.default_rng(1).integers(0, 256, shape, dtype=np.uint8)
        img = Image.fromarray(arr, mode=mode) if mode != "RGB" else arr
        pipe.detect(img)
    path = tmp_path / "pal.png"
    Image.fromarray(np.zeros((30, 40, 3), np.uint8)).convert("P").save(path)
    pipe.caption(str(path))


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda p, img: p.answer(img, ""), InputError, "question is ''"),
        (lambda p, img: p.answer(img, "why " * 40), InputError, r"text is \d+ tokens"),
        (lambda p, img: p.match(img, 42), InputError, "text is 42"),
        (lambda p, img: p.caption(img, num_beams=0), InputError, "num_beams is 0"),
        (lambda p, img: p.detect(np.zeros((4, 4, 3), np.float32)), InputError, "dtype float32"),
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
