"""`minivlm.load` and the `minivlm` / `minivlm-convert` commands with EfficientVLM models: presets and weights
files load into the EfficientVLM public API, its tasks run from the command line, and what it cannot do (detect,
beam search, eval, a preset without shipped weights) is a one-line error with exit code 2."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

import minivlm
from minivlm.checkpoints import save_weights
from minivlm.cli import app, convert_app
from minivlm.efficientvlm_pipeline import EfficientVLMReference
from minivlm.errors import ConfigError, InputError, WeightsError

runner = CliRunner()


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    path = tmp_path_factory.mktemp("images") / "scene.png"
    from minivlm.python_ref.scenes import generate_scene

    Image.fromarray(np.array(generate_scene(20_000, 5).image)).save(path)
    return path


def _one_line_error(args, app_=app) -> str:
    result = runner.invoke(app_, [str(a) for a in args])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


def test_a_weights_file_loads_into_the_efficientvlm_api(tiny_efficientvlm_file, image):
    loaded = minivlm.load(tiny_efficientvlm_file)
    assert isinstance(loaded, EfficientVLMReference) and loaded.source == str(tiny_efficientvlm_file)
    assert loaded.config.name == "efficientvlm-tiny" and len(loaded.vocab.answers) == loaded.config.num_answers
    torch.manual_seed(0)  # the seed the file was made with: the same weights again
    fresh = minivlm.load("efficientvlm-tiny", random_init=True)
    assert isinstance(fresh, EfficientVLMReference) and fresh.source == "random init (seed 0)"
    assert fresh.vocab.answers[0] == "answer_0"
    assert loaded.caption(image) == fresh.caption(image)
    assert loaded.answer(image, "how many shapes are there?") == fresh.answer(image, "how many shapes are there?")
    assert loaded.match(image, "a red circle") == fresh.match(image, "a red circle")
    ranked = loaded.rank_texts(image, ["a red circle", "two squares"])
    assert sorted(t for t, _ in ranked) == ["a red circle", "two squares"] and ranked[0][1] >= ranked[1][1]


@pytest.mark.parametrize("preset", ["efficientvlm-teacher", "efficientvlm-paper", "efficientvlm-demo-tiny"])
def test_presets_without_weights_say_so_in_one_line(preset):
    with pytest.raises(ConfigError, match=f"no weights ship for '{preset}'; pass random_init=True"):
        minivlm.load(preset)
    assert f"no weights ship for '{preset}'" in _one_line_error(["caption", "IMG", "--model", preset])


def test_what_an_efficientvlm_model_cannot_do_is_one_line(tiny_efficientvlm_file, image):
    model = str(tiny_efficientvlm_file)
    assert "efficientvlm-tiny has no detector" in _one_line_error(["detect", image, "--model", model])
    assert "captions greedily only" in _one_line_error(["caption", image, "--model", model, "--beams", "2"])
    with pytest.raises(InputError, match="question is ''"):
        minivlm.load(model).answer(image, "")


def test_caption_ask_and_match_commands(tiny_efficientvlm_file, image):
    loaded = minivlm.load(tiny_efficientvlm_file)
    model = str(tiny_efficientvlm_file)
    result = runner.invoke(app, ["caption", str(image), "--model", model])
    assert result.exit_code == 0 and result.stdout == loaded.caption(image) + "\n", result.output
    result = runner.invoke(app, ["ask", str(image), "what color is the circle?", "--model", model])
    assert result.exit_code == 0 and result.stdout == loaded.answer(image, "what color is the circle?") + "\n"
    result = runner.invoke(app, ["match", str(image), "a red circle", "--model", model])
    assert result.exit_code == 0 and result.stdout == f"{loaded.match(image, 'a red circle'):.4f}\n"


def test_a_file_whose_weights_are_another_family_is_refused(tmp_path, tiny_efficientvlm_file):
    torch.manual_seed(0)
    minivlm_tiny = minivlm.load("minivlm-tiny", random_init=True)
    path = tmp_path / "mixed.safetensors"
    save_weights(minivlm_tiny.pipeline.model, path, {"preset": "efficientvlm-tiny",
                                                     "vocabularies": json.dumps({"answers": ["a"] * 7})})
    with pytest.raises(WeightsError, match="mixed.safetensors does not match EfficientVLM: "):
        minivlm.load(path)
    answers = tmp_path / "answers.safetensors"
    model = minivlm.load(tiny_efficientvlm_file).pipeline.model
    save_weights(model, answers, {"preset": "efficientvlm-tiny", "vocabularies": json.dumps({"answers": ["yes", "no"]})})
    with pytest.raises(ConfigError, match="answers vocabulary has 2 entries, the model predicts 7"):
        minivlm.load(answers)


@pytest.mark.build
def test_convert_then_parity_then_the_build_from_the_command_line(tiny_efficientvlm_file, image, tmp_path):
    """The README's main job for an EfficientVLM weights file: minivlm-convert, then minivlm parity on the build
    (which finds its reference from the source the manifest records), then the build behind the public API."""
    out = tmp_path / "build"
    result = runner.invoke(convert_app, ["--target", "executorch", "--model", str(tiny_efficientvlm_file),
                                         "--out", str(out), "--jobs", "1"])
    assert result.exit_code == 0, result.output
    assert "vision.pte" in result.output and "caption_step.pte" in result.output
    result = runner.invoke(app, ["parity", str(out), "--scenes", "2"])
    assert result.exit_code == 0, result.output
    assert "graph  vision" in result.output and "task   captions" in result.output and "PASSED" in result.output
    assert "FP32_MAX_ABS = 0.0001" in result.output
    artifact = minivlm.load_artifact(out)
    assert artifact.caption(image) == minivlm.load(tiny_efficientvlm_file).caption(image)
