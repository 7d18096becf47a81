"""`minivlm.load` and the commands' `--model`: weights files a user may hand over by mistake or on purpose,
and question/caption text that is not a non-empty UTF-8 str. Each is refused with one line naming it."""

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

import minivlm
from minivlm.cli import app
from minivlm.errors import InputError, WeightsError
from minivlm.python_ref.config import get_config
from minivlm.python_ref.pipeline import MiniVLM, Vocabularies
from minivlm.checkpoints import save_weights
from minivlm.training import model_metadata

runner = CliRunner()


def _tiny_weights(path, preset="minivlm-tiny", poison=None):
    torch.manual_seed(0)
    cfg = get_config("minivlm-tiny")
    net = MiniVLM(cfg)
    if poison is not None:
        with torch.no_grad():
            poison(net)
    save_weights(net, path, {**model_metadata(cfg, Vocabularies.placeholder(cfg), None), "preset": preset})
    return path


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    path = tmp_path_factory.mktemp("img") / "scene.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 80, 3), dtype=np.uint8)).save(path)
    return str(path)


def _one_line_error(args) -> str:
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


def test_a_trained_tiny_file_loads(tmp_path, image):
    path = _tiny_weights(tmp_path / "tiny.safetensors")
    assert minivlm.load(str(path)).config.name == "minivlm-tiny"
    assert minivlm.load(path).config.name == "minivlm-tiny"  # a Path works as well as a str


def test_nan_weights_are_refused_not_answered(tmp_path, image):
    """They used to load and caption "", answer "one" and match `nan` with exit 0."""
    def poison(net):
        net.fusion.match_head.weight[0, :5] = float("nan")

    path = _tiny_weights(tmp_path / "nan.safetensors", poison=poison)
    with pytest.raises(WeightsError, match=r"holds non-finite weights: fusion\.match_head\.weight has 5 NaN/inf"):
        minivlm.load(str(path))
    line = _one_line_error(["match", image, "a red circle", "--model", str(path)])
    assert "fusion.match_head.weight has 5 NaN/inf values" in line


def _pickle(tmp_path):
    path = tmp_path / "pickle.safetensors"
    torch.save({"w": torch.zeros(3)}, path)
    return path


def _truncated(tmp_path):
    full = _tiny_weights(tmp_path / "full.safetensors")
    path = tmp_path / "truncated.safetensors"
    path.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    return path


def _folder(tmp_path):
    (tmp_path / "dir.safetensors").mkdir()
    return tmp_path / "dir.safetensors"


def _pt(tmp_path):
    torch.save({"w": torch.zeros(3)}, tmp_path / "x.pt")
    return tmp_path / "x.pt"


@pytest.mark.parametrize(
    "make, message",
    [
        (_pickle, "is not a safetensors file: it is a zip archive, as torch.save writes; pickled checkpoints are never loaded"),
        (_folder, "is a directory; --model takes a .safetensors file written by `minivlm train`"),
        (_pt, "x.pt' is neither a model preset nor a weights file: a weights file must be a .safetensors file written "
              "by `minivlm train` (pickled .pt/.bin checkpoints are never loaded); presets: minivlm-demo,"),
        (lambda t: t / "missing.pt", "missing.pt' is neither a model preset nor a weights file"),
        (lambda t: (t / "empty.safetensors").touch() or t / "empty.safetensors",
         "empty.safetensors is not a safetensors file: it is empty (0 bytes)"),
        (_truncated, "is not a safetensors file: it is truncated or damaged: its header describes"),
        (lambda t: _tiny_weights(t / "other.safetensors", preset="minivlm-demo"),
         "other.safetensors does not match MiniVLM: "),
        (lambda t: _tiny_weights(t / "huge.safetensors", preset="minivlm-huge"),
         "names preset 'minivlm-huge' in its metadata, which this SDK does not have (presets: minivlm-demo"),
    ],
)
def test_bad_model_arguments_are_one_line_errors(tmp_path, image, make, message):
    model = str(make(tmp_path))
    with pytest.raises(WeightsError) as err:
        minivlm.load(model)
    assert message in str(err.value)
    assert message in _one_line_error(["caption", image, "--model", model])


@pytest.fixture(scope="module")
def tiny_pipe():
    return minivlm.load("minivlm-tiny", random_init=True)


@pytest.mark.parametrize("text, position", [("\udcff\udcfe how many", 0), ("how \ud800many shapes?", 4)])
def test_text_that_is_not_utf8_is_refused(tiny_pipe, image, text, position):
    """A non-UTF-8 argv argument arrives surrogate-escaped; `tokenizers` raised a TypeError on it."""
    expected = f"is not valid UTF-8 text: .* at character {position} is an undecodable byte or lone surrogate"
    with pytest.raises(InputError, match="question " + expected):
        tiny_pipe.answer(image, text)
    with pytest.raises(InputError, match="text " + expected):
        tiny_pipe.match(image, text)


@pytest.mark.parametrize("command", ["ask", "match"])
def test_cli_text_that_is_not_utf8_is_one_line(tmp_path, image, command):
    model = str(_tiny_weights(tmp_path / "tiny.safetensors"))
    line = _one_line_error([command, image, "\udcff\udcfe how many", "--model", model])
    assert "is not valid UTF-8 text: '\\udcff' at character 0" in line


@pytest.mark.parametrize("question", [None, b"how many shapes are there?", 3, "", "   "])
def test_non_str_or_empty_questions_are_input_errors_before_the_image_is_read(tiny_pipe, question):
    with pytest.raises(InputError, match="question is .*, expected a non-empty string"):
        tiny_pipe.answer("/no/such/image.png", question)
    with pytest.raises(InputError, match="text is .*, expected a non-empty string"):
        tiny_pipe.match("/no/such/image.png", question)
