import struct
import zlib

import numpy as np
import pytest
from PIL import ExifTags, Image, ImageFile

from minivlm.errors import InputError
from minivlm.images import PRESHRINK_RATIO, load_image, shrink_for_input
from minivlm.python_ref.scenes import generate_scene


def test_modes_become_rgb(tmp_path):
    gray = Image.fromarray(np.full((5, 7), 100, np.uint8), mode="L")
    assert load_image(gray).shape == (5, 7, 3) and load_image(gray)[0, 0].tolist() == [100, 100, 100]
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[0, 0] = [255, 0, 0, 255]  # opaque red stays red; transparent black becomes white
    out = load_image(rgba)
    assert out[0, 0].tolist() == [255, 0, 0] and out[1, 1].tolist() == [255, 255, 255]
    palette = Image.fromarray(np.full((3, 3, 3), 40, np.uint8)).convert("P", palette=Image.Palette.ADAPTIVE)
    path = tmp_path / "p.png"
    palette.save(path)
    assert load_image(path)[1, 1].tolist() == [40, 40, 40]
    assert load_image(str(path)).dtype == np.uint8


def test_unreadable_and_missing_files_give_one_line_errors(tmp_path):
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not a png at all")
    for path, message in [(junk, "cannot read image"), (tmp_path / "missing.jpg", "does not exist")]:
        with pytest.raises(InputError, match=message) as err:
            load_image(path)
        assert "\n" not in str(err.value)


def test_bad_arrays_and_types_are_rejected():
    with pytest.raises(InputError, match="dtype int64"):
        load_image(np.zeros((4, 4, 3), np.int64))
    with pytest.raises(InputError, match=r"shape \(4, 4, 2\)"):
        load_image(np.zeros((4, 4, 2), np.uint8))
    with pytest.raises(InputError, match="is a int"):
        load_image(3)


# The stored frame for each EXIF orientation, made from the upright image: the inverse of what a viewer applies.
_STORED = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
           5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_90, 7: Image.Transpose.TRANSVERSE,
           8: Image.Transpose.ROTATE_270}


def save_oriented(upright: np.ndarray, orientation: int, path) -> None:
    """Store `upright` turned/flipped, with the EXIF Orientation tag that makes a viewer show it upright."""
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = orientation
    Image.fromarray(upright).transpose(_STORED[orientation]).save(path, exif=exif)


@pytest.mark.parametrize("orientation", sorted(_STORED))
def test_exif_orientation_gives_the_image_as_displayed(tmp_path, orientation):
    upright = generate_scene(4244, 0).image[:, :200]  # not square, so a rotation changes the shape
    path = tmp_path / "oriented.png"
    save_oriented(upright, orientation, path)
    assert not np.array_equal(np.asarray(Image.open(path)), upright)  # the stored frame differs
    np.testing.assert_array_equal(load_image(path), upright)
    with Image.open(path) as opened:
        np.testing.assert_array_equal(load_image(opened), upright)


def test_16_bit_images_are_scaled_by_their_bit_depth(tmp_path):
    levels = np.array([[0, 257, 128 * 257, 32767, 65535]], np.uint16)  # black .. white
    expected = [0, 1, 128, 127, 255]
    path = tmp_path / "gray16.png"
    Image.fromarray(levels).save(path)
    assert Image.open(path).mode == "I;16"
    for image in (path, Image.fromarray(levels), Image.fromarray(levels.astype(np.int32)), levels):
        out = load_image(image)
        assert out.shape == (1, 5, 3) and out[0, :, 0].tolist() == expected, image
    with pytest.raises(InputError, match=r"mode 'I' has values in \[-5, 70000\], expected 16-bit"):
        load_image(Image.fromarray(np.array([[-5, 70000]], np.int32)))


@pytest.mark.parametrize("as_pil", [True, False], ids=["pil_F", "array"])
def test_float_images_follow_one_documented_rule(as_pil):
    def load(values, dtype=np.float32):
        values = np.asarray(values, dtype)
        return load_image(Image.fromarray(values.astype(np.float32), mode="F") if as_pil else values)

    assert load([[0.0, 0.5, 1.0]])[0, :, 0].tolist() == [0, 128, 255]  # fractions
    assert load([[0.0, 2.0, 254.6]], np.float64)[0, :, 0].tolist() == [0, 2, 255]  # 8-bit levels
    for bad, message in [([[0.5, np.nan]], "NaN or infinite"), ([[np.inf, 1.0]], "NaN or infinite"),
                         ([[-0.5, 0.5]], r"values in \[-0.5, 0.5\], expected all in \[0, 1\] or all in \[0, 255\]"),
                         ([[0.0, 300.0]], r"values in \[0, 300\]")]:
        with pytest.raises(InputError, match=message) as err:
            load(bad)
        assert "\n" not in str(err.value)
    if not as_pil:
        assert load(np.full((2, 2, 3), 0.25), np.float16)[0, 0].tolist() == [64, 64, 64]


def _png_header_only(path, width: int, height: int) -> None:
    """A PNG whose header claims width x height RGB pixels (its data holds one row; decoding it would fail)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * (3 * width + 1)))
                     + chunk(b"IEND", b""))


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
@pytest.mark.parametrize("side, message", [(20000, r"has 400,000,000 pixels, more than the 89,478,485 allowed"),
                                           (10000, r"has 100,000,000 pixels \(10000x10000\), more than the 89,478,485")])
def test_decompression_bombs_are_refused_from_the_header(tmp_path, monkeypatch, side, message):
    path = tmp_path / "bomb.png"
    _png_header_only(path, side, side)

    def no_decoding(self):
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    with pytest.raises(InputError, match=message) as err:
        load_image(path)
    assert "\n" not in str(err.value) and "bomb.png" in str(err.value)


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_the_pixel_limit_is_pillows_own(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 120)
    path = tmp_path / "small.png"
    Image.fromarray(np.zeros((11, 11, 3), np.uint8)).save(path)  # 121 pixels: Pillow only warns
    with pytest.raises(InputError, match=r"121 pixels \(11x11\), more than the 120 allowed"):
        load_image(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)  # lifted: no limit
    assert load_image(path).shape == (11, 11, 3)


def test_truncated_and_closed_pil_images_give_one_line_errors(tmp_path):
    path = tmp_path / "full.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(path)
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(path.read_bytes()[:2000])
    closed = Image.open(path)
    closed.close()
    for image, message in [(Image.open(truncated), "image file is truncated"), (closed, "closed image")]:
        with pytest.raises(InputError, match=rf"cannot read the PIL image \(RGB, 64x64\): .*{message}") as err:
            load_image(image)
        assert "\n" not in str(err.value)


def test_an_empty_path_says_so():
    with pytest.raises(InputError, match="image path is empty, expected the path of an image file"):
        load_image("")


def test_shrink_leaves_images_up_to_the_ratio_untouched():
    image = np.zeros((PRESHRINK_RATIO * 32, 7, 3), np.uint8)
    out, factor = shrink_for_input(image, 32)
    assert factor == 1 and out is image


@pytest.mark.parametrize("height, width", [(1000, 700), (2049, 513), (130, 4000)])
def test_shrink_is_an_exact_box_mean_in_uint8(height, width):
    size = 100
    image = np.random.default_rng(height).integers(0, 256, (height, width, 3), dtype=np.uint8)
    out, f = shrink_for_input(image, size)
    assert f == max(height, width) // (2 * size) and out.dtype == np.uint8
    assert out.shape == (-(-height // f), -(-width // f), 3)
    assert 2 * size <= max(out.shape) <= PRESHRINK_RATIO * size
    for i, j in [(0, 0), (out.shape[0] - 1, out.shape[1] - 1), (out.shape[0] // 2, out.shape[1] - 1),
                 (out.shape[0] - 1, 0), (out.shape[0] // 3, out.shape[1] // 2)]:
        box = image[i * f : (i + 1) * f, j * f : (j + 1) * f].reshape(-1, 3).astype(np.int64)
        assert out[i, j].tolist() == ((box.sum(axis=0) + len(box) // 2) // len(box)).tolist(), (i, j)
