"""Semantic checks of the bundled demo weights on scenes they were never trained on (docs/ARCHITECTURE.md §2).

The truth comes from the scene grammar (python_ref.scenes), which is independent of the model. The thresholds
are regression guards a few points under what `minivlm eval --n 300` measured for these weights (README),
because 40 scenes are a noisy sample; an untrained or broken model scores near zero on all three.
"""

import numpy as np
import pytest
from PIL import Image

import minivlm
from minivlm.evaluate import evaluate
from minivlm.loading import bundled_weights
from minivlm.python_ref.scenes import generate_scene

pytestmark = pytest.mark.skipif(bundled_weights("minivlm-demo") is None, reason="demo weights not bundled")


@pytest.fixture(scope="module")
def demo():
    return minivlm.load()


def test_default_model_is_the_bundled_demo(demo):
    assert demo.config.name == "minivlm-demo"
    assert demo.source.endswith("minivlm-demo.safetensors")


@pytest.mark.model
def test_scores_on_unseen_scenes(demo):
    report = evaluate(demo.pipeline, n=40, seed=4242)
    assert report.detection_map >= 0.95, report.table()
    assert report.caption_exact_match >= 0.50, report.table()
    assert report.vqa_accuracy >= 0.70, report.table()


def test_one_scene_end_to_end(demo):
    scene, other = generate_scene(4243, 0), generate_scene(4243, 1)
    labels = sorted(d.label for d in demo.detect(scene.image))
    assert labels == sorted(scene.labels)
    count = next(a for q, a in scene.qa if q.startswith("how many"))
    assert demo.answer(scene.image, "how many shapes are there?") == count
    assert demo.match(scene.image, scene.caption) > demo.match(scene.image, other.caption)


def test_resized_scene_still_works(demo):
    """A 256x256 scene upscaled to 512x512 (resized back to 256 by the preprocessing): same objects, boxes in
    the 512 frame at twice the scene's."""
    from minivlm.metrics import box_iou

    scene = generate_scene(4243, 1)
    big = np.asarray(Image.fromarray(scene.image).resize((512, 512), Image.BILINEAR))
    found = demo.detect(big)
    assert sorted(d.label for d in found) == sorted(scene.labels)
    iou = box_iou(np.array([d.box for d in found]), np.asarray(scene.boxes) * 2)
    assert (iou.max(axis=1) > 0.8).all(), iou
    assert demo.answer(big, "how many shapes are there?") == next(a for q, a in scene.qa if q.startswith("how many"))
