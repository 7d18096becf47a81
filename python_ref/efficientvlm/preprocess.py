"""EfficientVLM's image preprocessing, as upstream X-VLM: the whole image resized to S×S (no letterbox, the aspect
ratio is not kept), then /255 and CLIP's mean/std.

X-VLM (zengyan-97/X-VLM `dataset/__init__.py`, test transform) is `transforms.Resize((S, S),
interpolation=BICUBIC)` on a PIL image, `ToTensor()` and `Normalize(mean, std)`. torchvision's Resize on a PIL
image is Pillow's `Image.resize((S, S), Image.BICUBIC)`, so `resize_bicubic` is a NumPy port of Pillow's
`ImagingResample` for 8-bit images (`src/libImaging/Resample.c`): a separable convolution with Keys' cubic
(a = -0.5) whose support widens with the downscale factor (antialiasing), coefficients normalised per output
pixel and rounded to fixed point with PRECISION_BITS fraction bits, a horizontal pass (rounded and clipped to
uint8) and then a vertical pass. It reproduces Pillow bit for bit (tests/python_ref/test_efficientvlm_pipeline.py)
without importing it: python_ref depends on torch and NumPy only, and the native core can port the same code.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

from ..errors import InputError

PRECISION_BITS = 32 - 8 - 2  # Pillow's fixed-point fraction bits for 8-bit images
BICUBIC_A = -0.5  # Keys' cubic convolution parameter, as Pillow's bicubic_filter
BICUBIC_SUPPORT = 2.0
BLOCK_ELEMENTS = 1 << 21  # pixel values per block of lines (float64 and int64: at most 16 MB per buffer)
BAND_ROWS = 32  # output pixels per block of a pass's weights (`_bands`)


def _bicubic(x: np.ndarray) -> np.ndarray:
    """Pillow's `bicubic_filter`, elementwise on float64."""
    a, x = BICUBIC_A, np.abs(x)
    near = ((a + 2.0) * x - (a + 3.0)) * x * x + 1
    far = (((x - 5) * x + 8) * x - 4) * a
    return np.where(x < 1.0, near, np.where(x < 2.0, far, 0.0))


def _coefficients(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc` for one axis: per output pixel the first input
    index and the int fixed-point weights of its taps, as (out, ksize) indices (clamped) and weights (0 past
    the taps a pixel has)."""
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = BICUBIC_SUPPORT * filterscale
    inv_filterscale = 1.0 / filterscale  # multiplied, as Pillow does: dividing rounds differently
    ksize = int(math.ceil(support)) * 2 + 1
    index = np.zeros((out_size, ksize), dtype=np.int64)
    weight = np.zeros((out_size, ksize), dtype=np.int64)
    for xx in range(out_size):
        center = (xx + 0.5) * scale
        xmin = max(int(center - support + 0.5), 0)  # int(): C's truncation toward zero
        xmax = min(int(center + support + 0.5), in_size) - xmin
        taps = np.arange(xmax, dtype=np.float64)
        k = _bicubic((taps + xmin - center + 0.5) * inv_filterscale)
        total = k.sum()
        if total != 0.0:
            k = k / total
        fixed = k * (1 << PRECISION_BITS)
        weight[xx, :xmax] = np.trunc(np.where(k < 0, fixed - 0.5, fixed + 0.5)).astype(np.int64)
        index[xx, :xmax] = np.arange(xmin, xmin + xmax)
        index[xx, xmax:] = xmin
    return index, weight


@functools.lru_cache(maxsize=16)
def _matrix(in_size: int, out_size: int) -> np.ndarray:
    """The pass as a dense (out, in) matrix of the fixed-point weights, as float64: every product and sum of a
    pass stays an integer below 2**53 (weights < 2**22, pixels <= 255, a few dozen taps), so a float64 matrix
    product computes Pillow's integer sums exactly, at BLAS speed."""
    index, weight = _coefficients(in_size, out_size)
    dense = np.zeros((out_size, in_size), dtype=np.float64)
    np.add.at(dense, (np.repeat(np.arange(out_size), index.shape[1]), index.ravel()), weight.ravel())
    return dense


@functools.lru_cache(maxsize=16)
def _bands(in_size: int, out_size: int) -> tuple[tuple[int, int, int, int, np.ndarray], ...]:
    """`_matrix` cut into blocks of `BAND_ROWS` output pixels, each with only the input columns its taps reach:
    (out start, out end, in start, in end, weights). A downscale's matrix is mostly zeros (17 taps of 512 inputs
    at 4x), so the blocks compute the same exact sums with a fraction of the products."""
    dense = _matrix(in_size, out_size)
    bands = []
    for start in range(0, out_size, BAND_ROWS):
        block = dense[start:start + BAND_ROWS]
        used = np.nonzero(block.any(axis=0))[0]
        low, high = (int(used[0]), int(used[-1]) + 1) if len(used) else (0, 1)
        bands.append((start, start + len(block), low, high, np.ascontiguousarray(block[:, low:high])))
    return tuple(bands)


def _pass(lines: np.ndarray, out_size: int) -> np.ndarray:
    """One pass of Pillow's resampling along axis 1 of uint8 (lines, in, 3), a block of lines at a time (a photo
    many times the input size would otherwise need gigabytes of float64)."""
    bands = _bands(lines.shape[1], out_size)
    out = np.empty((lines.shape[0], out_size, 3), dtype=np.uint8)
    block = max(1, BLOCK_ELEMENTS // (3 * max(lines.shape[1], out_size)))
    for start in range(0, lines.shape[0], block):
        chunk = lines[start:start + block]  # (L, in, 3) -> (out, in) x (in, L*3) products by band, exact
        columns = chunk.transpose(1, 0, 2).reshape(chunk.shape[1], -1).astype(np.float64)
        total = np.empty((out_size, columns.shape[1]))
        for first, end, low, high, weights in bands:
            np.matmul(weights, columns[low:high], out=total[first:end])
        total = total.reshape(out_size, chunk.shape[0], 3).transpose(1, 0, 2).astype(np.int64)
        out[start:start + block] = np.clip((total + (1 << (PRECISION_BITS - 1))) >> PRECISION_BITS, 0, 255)
    return out


def resize_bicubic(image: np.ndarray, size: int) -> np.ndarray:
    """uint8 (H, W, 3) -> uint8 (size, size, 3), equal to Pillow's `Image.resize((size, size), BICUBIC)`:
    horizontal pass first, each pass skipped when that side already has `size` pixels."""
    return resize_bicubic_stack(image[None], size)[0]


def resize_bicubic_stack(images: np.ndarray, size: int) -> np.ndarray:
    """`resize_bicubic` of every image of a uint8 (N, H, W, 3) stack at once, -> (N, size, size, 3): the
    lines of all images go through one pass together, so a training batch costs a few large products."""
    n, height, width, _ = images.shape
    out = images
    if width != size:
        out = _pass(out.reshape(n * height, width, 3), size).reshape(n, height, size, 3)
    if height != size:  # the columns of every image as lines: (N, W, H, 3) -> (N * W, H, 3)
        columns = out.transpose(0, 2, 1, 3).reshape(n * size, height, 3)
        out = _pass(columns, size).reshape(n, size, size, 3).transpose(0, 2, 1, 3)
    return np.ascontiguousarray(out)


def _check(image: object) -> None:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        shape = getattr(image, "shape", None)
        dtype = getattr(image, "dtype", type(image).__name__)
        raise InputError(f"image is {dtype} with shape {shape}, expected uint8 (H, W, 3) RGB")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise InputError(f"image is {image.shape[0]}x{image.shape[1]}, expected at least 1x1 pixels")


def _normalise(resized: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """uint8 (N, S, S, 3) -> float32 (N, 3, S, S): torchvision's ToTensor (float32 / 255) and Normalize."""
    pixels = torch.from_numpy(resized).permute(0, 3, 1, 2).float()
    mean_t = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
    return ((pixels / 255.0 - mean_t) / std_t).contiguous()


def preprocess(image: np.ndarray, size: int, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """uint8 (H, W, 3) RGB -> normalised float32 (1, 3, size, size): `resize_bicubic`, then torchvision's
    ToTensor (float32 / 255) and Normalize ((v - mean) / std, float32)."""
    _check(image)
    return _normalise(resize_bicubic(image, size)[None], mean, std)


def preprocess_batch(images: list[np.ndarray], size: int, mean: tuple[float, ...],
                     std: tuple[float, ...]) -> torch.Tensor:
    """`preprocess` of images of one shape -> (N, 3, size, size), equal to concatenating `preprocess` of each
    (the same integer passes and float32 operations, element by element) at a fraction of the cost."""
    for image in images:
        _check(image)
    if len({image.shape for image in images}) != 1:
        raise InputError(f"images have shapes {sorted({image.shape for image in images})}, expected one shape")
    return _normalise(resize_bicubic_stack(np.stack(images), size), mean, std)


__all__ = ["PRECISION_BITS", "preprocess", "preprocess_batch", "resize_bicubic", "resize_bicubic_stack"]
