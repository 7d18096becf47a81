"""The bundled EfficientVLM demo models (the README's table): loadable by name, within the size budget, the
student at most half its teacher outside the vocabulary tables, and both answering scenes they never saw.

The truth comes from the scene grammar (python_ref.scenes), independent of the models. The score bars are
regression guards a few points under what `minivlm eval --n 300` measured (benchmarks/results/
efficientvlm_demo.json), because 40 scenes are a noisy sample; an untrained or broken model is near zero."""

import pytest

import minivlm
from minivlm.evaluate_vlm import evaluate_vlm
from minivlm.loading import bundled_weights
from minivlm.python_ref.efficientvlm.profile import profile_efficientvlm
from minivlm.python_ref.scenes import generate_scene

TEACHER, STUDENT = "efficientvlm-demo-teacher", "efficientvlm-demo-student"
# caption exact match, VQA accuracy, image->text R@1 over the 40 scenes
BARS = {TEACHER: (0.50, 0.90, 0.85), STUDENT: (0.50, 0.90, 0.85)}  # measured on 300: 66 / 97 / 95, 64 / 96 / 96


@pytest.fixture(scope="module", params=[TEACHER, STUDENT])
def model(request):
    return minivlm.load(request.param)


def test_both_ship_within_the_size_budget():
    for preset in (TEACHER, STUDENT):
        path = bundled_weights(preset)
        assert path is not None, f"{preset} is not bundled"
        assert path.stat().st_size <= 25e6, f"{path.name} is {path.stat().st_size / 1e6:.1f} MB"


def test_the_student_is_at_most_half_the_teacher_outside_the_vocabulary():
    ratio = profile_efficientvlm(STUDENT).params_without_vocabulary / profile_efficientvlm(TEACHER).params_without_vocabulary
    assert ratio <= 0.5


def test_loaded_by_name(model):
    assert model.source.endswith(f"{model.config.name}.safetensors")


def test_one_scene_end_to_end(model):
    scene, other = generate_scene(4243, 2), generate_scene(4243, 3)
    count = next(a for q, a in scene.qa if q.startswith("how many"))
    assert model.answer(scene.image, "how many shapes are there?") == count
    assert model.match(scene.image, scene.caption) > model.match(scene.image, other.caption)
    ranked = model.rank_texts(scene.image, [other.caption, scene.caption])
    assert ranked[0][0] == scene.caption


@pytest.mark.model
def test_scores_on_unseen_scenes(model):
    report = evaluate_vlm(model.pipeline, n=40, seed=4242, gallery=40)
    caption, vqa, r1 = BARS[model.config.name]
    assert report.caption_exact_match >= caption, report.table()
    assert report.vqa_accuracy >= vqa, report.table()
    assert report.retrieval_r1 >= r1, report.table()
