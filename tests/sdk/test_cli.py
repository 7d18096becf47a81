"""The `minivlm` command: thin, true --help, one-line errors with exit code 2."""

import pytest
from PIL import Image
from typer.testing import CliRunner

from minivlm.cli import app

runner = CliRunner()


def test_info_prints_a_row_per_part():
    result = runner.invoke(app, ["info", "minivlm-tiny"])
    assert result.exit_code == 0, result.output
    for part in ("backbone (EfficientNet)", "BiFPN", "RoIAlign", "word embeddings", "encoder"):
        assert part in result.output


@pytest.mark.parametrize("size", ["0", "-128", "-64", "100", "4096", "1000000000000"])
def test_info_refuses_image_sizes_the_model_cannot_take(size):
    """0 and -128 used to end in a traceback from the backbone or the anchors, huge sizes in an allocation."""
    result = runner.invoke(app, ["info", "minivlm-tiny", "--image-size", size])
    assert result.exit_code == 2, result.output
    expected = f"error: image size {size} is not one minivlm-tiny can take: a multiple of its coarsest stride 128 from 128 to 2048"
    assert result.output.startswith(expected) and len(result.output.strip().splitlines()) == 1, result.output


@pytest.mark.parametrize(
    "args, message",
    [
        (["info", "minivlm-huge"], "unknown model preset 'minivlm-huge'"),
        (["caption", "/nonexistent/photo.png", "--model", "minivlm-tiny"], "error:"),
        (["eval", "--model", "minivlm-paper"], "no weights ship for 'minivlm-paper'"),
        (["ask", "IMG", "", "--model", "minivlm-paper"], "no weights ship"),
    ],
)
def test_known_errors_are_one_line_and_exit_2(args, message):
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert len([line for line in result.output.splitlines() if line.strip()]) == 1


def test_detect_draws_boxes_atomically(tmp_path):
    from minivlm.loading import bundled_weights

    if bundled_weights("minivlm-demo") is None:
        pytest.skip("demo weights not bundled")
    from minivlm.python_ref.scenes import generate_scene

    img = tmp_path / "scene.png"
    Image.fromarray(generate_scene(4244, 0).image).save(img)
    out = tmp_path / "boxes.png"
    result = runner.invoke(app, ["detect", str(img), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert Image.open(out).size == (256, 256)
    bad = runner.invoke(app, ["detect", str(img), "--out", str(tmp_path / "no" / "such" / "dir.png")])
    assert bad.exit_code == 2 and "does not exist" in bad.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["boxes.png", "scene.png"]
