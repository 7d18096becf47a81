"""The `minivlm` command: thin, true --help, one-line errors with exit code 2."""

import os
import struct
import zlib

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import minivlm
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


def test_info_of_an_efficientvlm_student_prints_its_parts_and_its_ratios_to_its_teacher():
    from minivlm.python_ref.efficientvlm.profile import profile_efficientvlm

    result = runner.invoke(app, ["info", "efficientvlm-demo-student"])
    assert result.exit_code == 0, result.output
    for part in ("ViT: 4 layers, 65 tokens (128x128, 16-px patches)", "layers: 2 (24 tokens)",
                 "layers: 2 (24 text x 65 image tokens)", "ITC, ITM, MLM", "VQA classifier", "efficientvlm total"):
        assert part in result.output
    profile = profile_efficientvlm("efficientvlm-demo-student")
    total = next(line for line in result.output.splitlines() if line.startswith("efficientvlm total"))
    assert total.split()[-2:] == [f"{profile.total.params / 1e6:.3f}", f"{profile.total.flops / 1e9:.3f}"]
    assert f"(word embeddings = MLM decoder, MLM bias): {profile.params_without_vocabulary / 1e6:.3f} M" in result.output
    assert "efficientvlm-demo-student / efficientvlm-demo-teacher: parameters 0." in result.output


def test_info_takes_efficientvlm_image_sizes_on_the_patch_grid_only():
    result = runner.invoke(app, ["info", "efficientvlm-demo-student", "--image-size", "64"])
    assert result.exit_code == 0 and "ViT: 4 layers, 17 tokens (64x64, 16-px patches)" in result.output, result.output
    result = runner.invoke(app, ["info", "efficientvlm-demo-student", "--image-size", "100"])
    assert result.exit_code == 2, result.output
    assert result.output == ("error: image size 100 is not one efficientvlm-demo-student can take: a multiple of its "
                             "patch size 16 from 16 to 2048 (efficientvlm-demo-student's own is 128)\n")


@pytest.mark.parametrize(
    "args, message",
    [
        (["info", "minivlm-huge"], "unknown model preset 'minivlm-huge'"),
        (["info", "efficientvlm-huge"], "known presets: minivlm-demo, minivlm-minilm-l6, minivlm-paper, minivlm-tiny, "
                                        "efficientvlm-demo, efficientvlm-demo-student, efficientvlm-demo-teacher, efficientvlm-demo-tiny, "
                                        "efficientvlm-paper, efficientvlm-teacher, efficientvlm-tiny"),
        (["eval", "--model", "minivlm-paper"], "no weights ship for 'minivlm-paper'"),
        (["ask", "IMG", "", "--model", "minivlm-paper"], "no weights ship"),
    ],
)
def test_known_errors_are_one_line_and_exit_2(args, message):
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert len([line for line in result.output.splitlines() if line.strip()]) == 1


def test_a_missing_image_is_one_line_with_a_model_that_loads():
    """`caption` loads the model before it opens the image: with a model that loads (the bundled demo; a preset
    without weights would fail first, on its weights), the one error line is the image's."""
    from minivlm.loading import bundled_weights

    if bundled_weights("minivlm-demo") is None:
        pytest.skip("demo weights not bundled")
    result = runner.invoke(app, ["caption", "/nonexistent/photo.png", "--model", "minivlm-demo"])
    assert result.exit_code == 2, result.output
    assert result.stdout == "" and result.stderr == "error: image file '/nonexistent/photo.png' does not exist\n"


def _detection_line(line: str) -> tuple[str, float, list[float]]:
    """(label, score, box) of one `minivlm detect` line: `<label> <score>  [x1 y1 x2 y2]`."""
    head, box = line.split("[")
    *label, score = head.split()
    return " ".join(label), float(score), [float(v) for v in box.rstrip("]").split()]


def test_detect_of_a_photo_prints_the_python_apis_detections(tmp_path):
    """The happy path on a real photo file (a JPEG): exit 0, and the lines `detect` prints are the detections the
    Python API returns for the same file, in order, to the printed precision (scores 3 decimals, boxes 1).
    (`caption` on a file is checked against the scene grammar's caption below.)"""
    from minivlm.loading import bundled_weights

    if bundled_weights("minivlm-demo") is None:
        pytest.skip("demo weights not bundled")
    skimage_data = pytest.importorskip("skimage.data")
    photo = tmp_path / "coffee.jpg"
    Image.fromarray(skimage_data.coffee()).save(photo, quality=90)
    expected = minivlm.load("minivlm-demo").detect(str(photo))
    assert expected, "nothing detected in the photo: the comparison below would check no line"
    result = runner.invoke(app, ["detect", str(photo)])
    assert result.exit_code == 0 and result.stderr == "", result.output
    printed = [_detection_line(line) for line in result.stdout.splitlines()]
    assert [label for label, _, _ in printed] == [d.label for d in expected], result.stdout
    for (_, score, box), d in zip(printed, expected):
        assert abs(score - d.score) <= 5e-4 and np.abs(np.array(box) - d.box).max() <= 0.05, (score, box, d)


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


@pytest.fixture(scope="module")
def scene_png(tmp_path_factory):
    from minivlm.python_ref.scenes import generate_scene

    path = tmp_path_factory.mktemp("scene") / "scene.png"
    Image.fromarray(generate_scene(4244, 0).image).save(path)
    return path


@pytest.mark.parametrize("name, message", [("boxes", "it has no suffix, expected one of .png, .jpg"),
                                           ("boxes.gif", "it has suffix '.gif', expected one of .png, .jpg")])
def test_detect_out_needs_an_image_suffix(scene_png, tmp_path, name, message):
    out = tmp_path / name
    result = runner.invoke(app, ["detect", str(scene_png), "--out", str(out), "--model", "minivlm-tiny"])
    assert result.exit_code == 2, result.output
    assert result.output.startswith(f"error: cannot write {str(out)!r}: {message}") and result.output.count("\n") == 1
    assert list(tmp_path.iterdir()) == []  # checked before the model loads (minivlm-tiny has no weights)


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux /proc")
def test_detect_out_in_a_folder_that_refuses_files(scene_png):
    from minivlm.loading import bundled_weights

    if bundled_weights("minivlm-demo") is None:
        pytest.skip("demo weights not bundled")
    result = runner.invoke(app, ["detect", str(scene_png), "--out", "/proc/b.png"])
    assert result.exit_code == 2, result.output
    assert result.stderr.strip() == "error: cannot write '/proc/b.png': cannot create a file in '/proc' (No such file or directory)"


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_detect_out_honours_the_umask(scene_png, tmp_path, umask):
    from minivlm.loading import bundled_weights

    if bundled_weights("minivlm-demo") is None:
        pytest.skip("demo weights not bundled")
    out = tmp_path / "boxes.png"
    old = os.umask(umask)
    try:
        result = runner.invoke(app, ["detect", str(scene_png), "--out", str(out)])
    finally:
        os.umask(old)
    assert result.exit_code == 0, result.output
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask
    assert [p.name for p in tmp_path.iterdir()] == ["boxes.png"]


def test_a_blank_image_captions_with_a_warning(tmp_path):
    from minivlm.loading import bundled_weights

    if bundled_weights("minivlm-demo") is None:
        pytest.skip("demo weights not bundled")
    blank = tmp_path / "white.png"
    Image.fromarray(np.full((256, 256, 3), 255, np.uint8)).save(blank)
    result = runner.invoke(app, ["caption", str(blank)])
    assert result.exit_code == 0, result.output
    with pytest.warns(minivlm.NoDetectionsWarning):
        expected = minivlm.load("minivlm-demo").caption(str(blank))
    assert result.stdout == expected + "\n"  # the caption, still printed, and only it
    assert result.stderr == "warning: no object detected in the image: the caption comes from no region and no tag\n"


def test_caption_of_a_scene_is_its_true_caption(tmp_path):
    """`minivlm caption` on a rendered scene prints the caption the scene grammar gives it, and nothing else."""
    from minivlm.loading import bundled_weights
    from minivlm.python_ref.scenes import generate_scene

    if bundled_weights("minivlm-demo") is None:
        pytest.skip("demo weights not bundled")
    # Four objects, one colour twice, "an orange": not a trivial caption. The truth is the scene grammar's.
    scene = generate_scene(4244, 2)
    img = tmp_path / "scene.png"
    Image.fromarray(scene.image).save(img)
    result = runner.invoke(app, ["caption", str(img)])
    assert result.exit_code == 0, result.output
    assert result.stdout == scene.caption + "\n" and result.stderr == "", result.output


def test_image_errors_are_one_line(tmp_path):
    from minivlm.loading import bundled_weights

    if bundled_weights("minivlm-demo") is None:
        pytest.skip("demo weights not bundled")
    chunk = lambda kind, data: struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))  # noqa: E731
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 20000, 20000, 8, 2, 0, 0, 0))
                     + chunk(b"IEND", b""))
    for image, message in [("", "error: image path is empty, expected the path of an image file"),
                           (str(bomb), f"error: image {str(bomb)!r} has 400,000,000 pixels, more than the 89,478,485")]:
        result = runner.invoke(app, ["caption", image])
        assert result.exit_code == 2, result.output
        assert result.output.startswith(message) and result.output.count("\n") == 1, result.output
