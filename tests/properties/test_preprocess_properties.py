"""Properties of python_ref's letterbox preprocessing (preprocess.py) on generated sizes and small images: the
geometry fills the square on the long side and keeps the aspect ratio to half a pixel; the resampled image is a
convex combination of its source pixels; the padding is exactly 0."""

from __future__ import annotations

import numpy as np
import pytest
import torch

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.extra import numpy as hnp  # noqa: E402

from minivlm.python_ref.config import IMAGENET_MEAN, IMAGENET_STD  # noqa: E402
from minivlm.python_ref.preprocess import letterbox_geometry, preprocess  # noqa: E402


@given(st.integers(1, 10_000), st.integers(1, 10_000), st.integers(1, 2048))
def test_letterbox_fills_the_long_side_and_keeps_the_aspect_ratio(height, width, size):
    box = letterbox_geometry(height, width, size)
    assert max(box.resized_height, box.resized_width) == size
    assert 1 <= box.resized_height <= size and 1 <= box.resized_width <= size
    for resized, original in ((box.resized_height, height), (box.resized_width, width)):
        assert resized == 1 or abs(resized - original * box.scale) <= 0.5
    swapped = letterbox_geometry(width, height, size)
    assert (swapped.resized_height, swapped.resized_width) == (box.resized_width, box.resized_height)
    # The resized image's extent maps back to the whole image, within half an input pixel.
    corners = box.boxes_to_image(torch.tensor([[0.0, 0.0, box.resized_width, box.resized_height]], dtype=torch.float64))
    assert corners[0, 0] == 0 and corners[0, 1] == 0
    assert width - corners[0, 2] <= 0.5 / box.scale + 1e-9 and height - corners[0, 3] <= 0.5 / box.scale + 1e-9


images = hnp.arrays(np.uint8, st.tuples(st.integers(1, 20), st.integers(1, 20), st.just(3)))


@given(images, st.integers(1, 32))
def test_letterboxed_pixels_stay_within_their_source_range_and_the_padding_is_zero(image, size):
    out, box = preprocess(image, size, IMAGENET_MEAN, IMAGENET_STD)
    assert out.shape == (1, 3, size, size) and out.dtype == torch.float32
    part = out[0, :, : box.resized_height, : box.resized_width]
    padding = out.clone()
    padding[0, :, : box.resized_height, : box.resized_width] = 0
    assert torch.count_nonzero(padding) == 0
    for c in range(3):
        lo, hi = ((np.float32(v) / np.float32(255) - np.float32(IMAGENET_MEAN[c])) / np.float32(IMAGENET_STD[c])
                  for v in (image[..., c].min(), image[..., c].max()))
        assert float(part[c].min()) >= lo - 1e-5 and float(part[c].max()) <= hi + 1e-5
    if box.resized_height == image.shape[0] and box.resized_width == image.shape[1]:  # no resampling: exact
        mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32).view(3, 1, 1)
        std = torch.tensor(IMAGENET_STD, dtype=torch.float32).view(3, 1, 1)
        assert torch.equal(part, (torch.from_numpy(image).permute(2, 0, 1).float() / 255.0 - mean) / std)
