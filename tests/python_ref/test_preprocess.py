import numpy as np
import pytest
import torch

from minivlm.errors import InputError
from minivlm.python_ref.config import IMAGENET_MEAN, IMAGENET_STD
from minivlm.python_ref.preprocess import letterbox_geometry, preprocess


def _bilinear_half_pixel(img: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Independent numpy bilinear resize with half-pixel centres, edge-clamped, no antialias."""
    h, w, _ = img.shape
    out = np.zeros((out_h, out_w, img.shape[2]), dtype=np.float64)
    for oy in range(out_h):
        sy = max((oy + 0.5) * h / out_h - 0.5, 0.0)
        y0 = min(int(np.floor(sy)), h - 1)
        y1 = min(y0 + 1, h - 1)
        fy = sy - y0
        for ox in range(out_w):
            sx = max((ox + 0.5) * w / out_w - 0.5, 0.0)
            x0 = min(int(np.floor(sx)), w - 1)
            x1 = min(x0 + 1, w - 1)
            fx = sx - x0
            top = img[y0, x0] * (1 - fx) + img[y0, x1] * fx
            bottom = img[y1, x0] * (1 - fx) + img[y1, x1] * fx
            out[oy, ox] = top * (1 - fy) + bottom * fy
    return out


def test_geometry_rounds_half_up_and_keeps_aspect():
    box = letterbox_geometry(100, 50, 64)
    assert (box.resized_height, box.resized_width, box.scale) == (64, 32, 0.64)
    assert letterbox_geometry(3, 1000, 256).resized_height == 1  # floor(0.768 + 0.5)


def test_same_size_image_is_only_normalised():
    img = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    x, box = preprocess(img, 32, IMAGENET_MEAN, IMAGENET_STD)
    expected = (img / 255.0 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    assert box.scale == 1.0
    np.testing.assert_allclose(x[0].permute(1, 2, 0).numpy(), expected, atol=1e-6)


def test_letterbox_resizes_top_left_and_pads_with_the_mean():
    img = np.random.default_rng(1).integers(0, 256, (20, 10, 3), dtype=np.uint8)
    x, box = preprocess(img, 16, IMAGENET_MEAN, IMAGENET_STD)
    assert (box.resized_height, box.resized_width) == (16, 8)
    resized = _bilinear_half_pixel(img.astype(np.float64), 16, 8)
    expected = (resized / 255.0 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    np.testing.assert_allclose(x[0, :, :, :8].permute(1, 2, 0).numpy(), expected, atol=1e-5)
    assert torch.count_nonzero(x[0, :, :, 8:]) == 0


def test_boxes_map_back_to_the_original_image():
    box = letterbox_geometry(100, 50, 64)
    back = box.boxes_to_image(torch.tensor([[6.4, 12.8, 32.0, 70.0]]))
    np.testing.assert_allclose(back.numpy(), [[10.0, 20.0, 50.0, 100.0]], rtol=1e-6)


@pytest.mark.parametrize(
    "bad, message",
    [
        (np.zeros((4, 4), np.uint8), r"uint8 with shape \(4, 4\)"),
        (np.zeros((4, 4, 3), np.float32), r"float32 with shape \(4, 4, 3\)"),
        (np.zeros((0, 4, 3), np.uint8), r"image is 0x4"),
        ("not an array", r"str with shape None"),
    ],
)
def test_bad_images_raise_one_line_input_errors(bad, message):
    with pytest.raises(InputError, match=message) as err:
        preprocess(bad, 16, IMAGENET_MEAN, IMAGENET_STD)
    assert "\n" not in str(err.value)
