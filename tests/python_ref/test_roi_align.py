"""The separable-matmul RoIAlign against a naive per-sample loop of torchvision's algorithm.

torchvision is not installed here, so `_naive_roi_align` transcribes `csrc/ops/cpu/roi_align_kernel.cpp`
(aligned=True, fixed sampling ratio) and `_naive_level` transcribes `ops/poolers.py` `LevelMapper`.
"""

import math

import numpy as np
import pytest
import torch

from minivlm.errors import ConfigError
from minivlm.python_ref.roi_align import MultiScaleRoIAlign, level_masks, roi_align

TOL = 1e-5  # float32 matmul vs a float64 loop: a few ulps of values of order 1


def _bilinear(f: np.ndarray, y: float, x: float) -> np.ndarray:
    """torchvision `bilinear_interpolate` for one point, all channels of f (C, H, W)."""
    _, h, w = f.shape
    if y < -1.0 or y > h or x < -1.0 or x > w:
        return np.zeros(f.shape[0])
    y, x = max(y, 0.0), max(x, 0.0)
    y_low, x_low = int(y), int(x)
    if y_low >= h - 1:
        y_high = y_low = h - 1
        y = float(y_low)
    else:
        y_high = y_low + 1
    if x_low >= w - 1:
        x_high = x_low = w - 1
        x = float(x_low)
    else:
        x_high = x_low + 1
    ly, lx = y - y_low, x - x_low
    hy, hx = 1.0 - ly, 1.0 - lx
    return (hy * hx * f[:, y_low, x_low] + hy * lx * f[:, y_low, x_high]
            + ly * hx * f[:, y_high, x_low] + ly * lx * f[:, y_high, x_high])


def _naive_roi_align(f: np.ndarray, box, scale: float, p: int, s: int) -> np.ndarray:
    """One box (x1, y1, x2, y2) on one image's features (C, H, W) -> (C, P, P)."""
    f = f.astype(np.float64)
    x1, y1, x2, y2 = (float(v) * scale - 0.5 for v in box)
    bin_h, bin_w = (y2 - y1) / p, (x2 - x1) / p
    out = np.zeros((f.shape[0], p, p))
    for ph in range(p):
        for pw in range(p):
            acc = np.zeros(f.shape[0])
            for iy in range(s):
                y = y1 + ph * bin_h + (iy + 0.5) * bin_h / s
                for ix in range(s):
                    x = x1 + pw * bin_w + (ix + 0.5) * bin_w / s
                    acc += _bilinear(f, y, x)
            out[:, ph, pw] = acc / (s * s)
    return out


def _naive_level(box, k_min: int, k_max: int, s0: float = 224.0, k0: int = 4) -> int:
    area = (float(box[2]) - float(box[0])) * (float(box[3]) - float(box[1]))
    k = math.floor(k0 + math.log2(math.sqrt(area) / s0) + 1e-6)
    return min(max(k, k_min), k_max)


def _random_boxes(gen: torch.Generator, n: int, extent: float) -> torch.Tensor:
    """Boxes of all sizes, many crossing or outside the image border, a few degenerate."""
    centre = torch.rand(n, 2, generator=gen) * extent * 1.4 - 0.2 * extent
    size = torch.exp(torch.rand(n, 2, generator=gen) * math.log(extent * 1.5)) - 0.9  # ~0.1 px .. 1.5x image
    boxes = torch.cat([centre - size / 2, centre + size / 2], dim=1)
    boxes[0] = torch.tensor([0.0, 0.0, extent, extent])  # whole image
    boxes[1] = torch.tensor([-5.0, -5.0, 3.0, 2.0])  # corner, mostly outside
    boxes[2] = torch.tensor([extent - 1, extent - 1, extent + 7, extent + 9])  # far corner, mostly outside
    boxes[3] = torch.tensor([4.0, 4.0, 4.0, 4.0])  # empty
    boxes[4] = torch.tensor([-30.0, -30.0, -20.0, -20.0])  # entirely outside
    return boxes


@pytest.mark.parametrize("scale,p,s", [(1 / 8, 4, 2), (1 / 16, 4, 2), (1.0, 3, 1), (1 / 4, 2, 3)])
def test_roi_align_matches_torchvision_loop(scale, p, s):
    gen = torch.Generator().manual_seed(0)
    b, c, h, w = 2, 3, 9, 11
    features = torch.randn(b, c, h, w, generator=gen)
    boxes = torch.stack([_random_boxes(gen, 24, w / scale), _random_boxes(gen, 24, h / scale)])  # (B, R, 4)
    got = roi_align(features, boxes, p, scale, s).reshape(b, 24, c, p, p)
    want = np.stack([[_naive_roi_align(features[i].numpy(), boxes[i, r].tolist(), scale, p, s) for r in range(24)]
                     for i in range(b)])
    err = np.abs(got.numpy() - want)
    assert err.max() <= TOL, f"max abs {err.max():.3g}, mean abs {err.mean():.3g}"


def test_level_assignment_matches_level_mapper():
    gen = torch.Generator().manual_seed(1)
    sides = torch.exp(torch.rand(200, 2, generator=gen) * math.log(1200.0))
    boxes = torch.cat([torch.zeros(200, 2), sides], dim=1)
    # Exactly at the boundaries: 224 -> P4, 112 -> P3, 448 -> P5, 896 -> P6, and just below 224 -> P3.
    edges = torch.tensor([[0, 0, 224.0, 224.0], [0, 0, 112.0, 112.0], [0, 0, 448.0, 448.0], [0, 0, 896.0, 896.0],
                          [0, 0, 223.9, 223.9], [0, 0, 0.0, 0.0]])
    boxes = torch.cat([boxes, edges])
    masks = torch.cat(level_masks(boxes[None], (3, 4, 5, 6), 224.0, 4), dim=-1)[0]
    assert torch.equal(masks.sum(dim=1), torch.ones(len(boxes)))
    got = masks.argmax(dim=1) + 3
    want = torch.tensor([_naive_level(box.tolist(), 3, 6) if box[2] > 0 else 3 for box in boxes])
    assert torch.equal(got, want)
    assert got[-6:].tolist() == [4, 3, 5, 6, 3, 3]


def test_multiscale_roi_align_pools_each_box_on_its_level():
    gen = torch.Generator().manual_seed(2)
    levels, size = (3, 4, 5, 6), 256
    features = tuple(torch.randn(1, 4, size >> lv, size >> lv, generator=gen) for lv in levels)
    boxes = _random_boxes(gen, 40, float(size))[None]  # (1, R, 4)
    pooler = MultiScaleRoIAlign(levels, 4, 2, 224.0, 4)
    got = pooler(features, boxes).numpy()  # (R, C, P, P)
    for r, box in enumerate(boxes[0].tolist()):
        area = (box[2] - box[0]) * (box[3] - box[1])
        lv = _naive_level(box, 3, 6) if area > 0 else 3
        want = _naive_roi_align(features[lv - 3][0].numpy(), box, 2.0**-lv, 4, 2)
        assert np.abs(got[r] - want).max() <= TOL, f"box {r} {box} on P{lv}"


def test_roi_align_has_no_nan_for_padding_boxes():
    features = (torch.randn(1, 2, 8, 8),)
    boxes = torch.zeros(1, 5, 4)  # the zero boxes stage 2 sees as padding
    out = MultiScaleRoIAlign((3,), 4, 2, 224.0, 4)(features, boxes)
    assert torch.isfinite(out).all() and out.shape == (5, 2, 4, 4)


def test_pooler_rejects_adaptive_sampling_and_gapped_levels():
    with pytest.raises(ConfigError, match="sampling_ratio"):
        MultiScaleRoIAlign((3, 4), 4, 0, 224.0, 4)
    with pytest.raises(ConfigError, match="consecutive"):
        MultiScaleRoIAlign((3, 5), 4, 2, 224.0, 4)
