"""MIL convolution and pooling (conv, max_pool, avg_pool) over 1-3 spatial axes, registered in `coreml_ops.OPS`.

Layouts are MIL's: x is [N, C_in, *spatial], conv's weight [C_out, C_in / groups, *kernel]; `pad` lists (before,
after) per spatial axis, `[top, bottom, left, right]` for 2-D. Convolution accumulates in float32.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .coreml_ops import Inputs, op


def _pads(i: Inputs, size: tuple[int, ...], kernel: list[int], strides: list[int], dilations: list[int]
          ) -> list[tuple[int, int]]:
    """(before, after) padding per spatial axis for the op's pad_type."""
    pad_type = i.scalar("pad_type", "valid")
    eff = [(k - 1) * d + 1 for k, d in zip(kernel, dilations)]
    if pad_type == "valid":
        pads = [(0, 0)] * len(size)
    elif pad_type == "custom":
        p = i.ints("pad")
        pads = [(p[2 * k], p[2 * k + 1]) for k in range(len(size))]
    elif pad_type in ("same", "same_lower"):
        pads = []
        for n, e, s in zip(size, eff, strides):
            total = max((math.ceil(n / s) - 1) * s + e - n, 0)
            small, large = total // 2, total - total // 2
            pads.append((small, large) if pad_type == "same" else (large, small))  # same_lower: the extra one first
    else:
        raise i.fail(f"pad_type {pad_type!r}, expected valid, custom, same or same_lower")
    return pads


def _ceil_sizes(size, pads, kernel, strides) -> list[int]:
    """Pooling output sizes with ceil_mode: a last, partial window counts, unless it would start in the padding
    after the input (coremltools' `spatial_dimensions_out_shape`, PyTorch's rule)."""
    sizes = []
    for n, (b, a), k, s in zip(size, pads, kernel, strides):
        out = (n + b + a - k + s - 1) // s + 1
        sizes.append(out - 1 if (out - 1) * s >= n + b and (b > 0 or a > 0) else out)
    return sizes


def _windows(x: np.ndarray, kernel: list[int], strides: list[int], dilations: list[int]) -> np.ndarray:
    """[N, C, *out, *kernel] view of every (strided, dilated) window of a padded x."""
    nsp = len(kernel)
    eff = [(k - 1) * d + 1 for k, d in zip(kernel, dilations)]
    win = sliding_window_view(x, eff, axis=tuple(range(2, 2 + nsp)))
    return win[(slice(None), slice(None)) + tuple(slice(None, None, s) for s in strides)
               + tuple(slice(None, None, d) for d in dilations)]


def _spatial(i: Inputs, x: np.ndarray, kernel: list[int]):
    nsp = x.ndim - 2
    strides = i.ints("strides", [1] * nsp)
    dilations = i.ints("dilations", [1] * nsp)
    return strides, dilations


@op("conv")
def _conv(i: Inputs):
    x, w = i.acc("x"), i.acc("weight")
    kernel = list(w.shape[2:])
    nsp = len(kernel)
    strides, dilations = _spatial(i, x, kernel)
    groups = int(i.scalar("groups", 1))
    pads = _pads(i, x.shape[2:], kernel, strides, dilations)
    x = np.pad(x, [(0, 0), (0, 0)] + pads)
    win = _windows(x, kernel, strides, dilations)  # [N, C_in, *out, *kernel]
    n, c_in = win.shape[:2]
    out_sp = win.shape[2:2 + nsp]
    c_out = w.shape[0]
    win = win.reshape((n, groups, c_in // groups) + out_sp + tuple(kernel))
    wg = w.reshape((groups, c_out // groups, c_in // groups) + tuple(kernel))
    sp, ks = "hwd"[:nsp], "ijk"[:nsp]
    y = np.einsum(f"ngc{sp}{ks},goc{ks}->ngo{sp}", win, wg, optimize=True).reshape((n, c_out) + out_sp)
    bias = i.get("bias")
    if bias is not None:
        y = y + np.asarray(bias, np.float32).reshape((1, c_out) + (1,) * nsp)
    return y


def _pool(i: Inputs, reduce, fill: float):
    x = i.f("x")
    kernel = i.ints("kernel_sizes")
    strides = i.ints("strides", [1] * len(kernel))
    ones = [1] * len(kernel)
    pads = _pads(i, x.shape[2:], kernel, strides, ones)
    if i.scalar("ceil_mode", False):  # pad the end so that the last (partial) window exists, then keep `sizes`
        sizes = _ceil_sizes(x.shape[2:], pads, kernel, strides)
        pads = [(b, max(a, (o - 1) * s + k - n - b)) for (b, a), o, s, k, n in zip(pads, sizes, strides, kernel, x.shape[2:])]
    else:
        sizes = [(n + b + a - k) // s + 1 for n, (b, a), k, s in zip(x.shape[2:], pads, kernel, strides)]
    padded = np.pad(x, [(0, 0), (0, 0)] + pads, constant_values=fill)
    win = _windows(padded, kernel, strides, ones)[(slice(None), slice(None)) + tuple(slice(0, o) for o in sizes)]
    return reduce(win, x, pads, kernel, strides, tuple(range(-len(kernel), 0)), sizes)


@op("max_pool")
def _max_pool(i: Inputs):
    return _pool(i, lambda win, *rest: win.max(axis=rest[-2]), -np.inf)


@op("avg_pool")
def _avg_pool(i: Inputs):
    exclude = bool(i.scalar("exclude_padding_from_average", False))

    def average(win, x, pads, kernel, strides, axes, sizes):
        total = win.sum(axis=axes)
        if not exclude:
            return total / math.prod(kernel)
        inside = np.pad(np.ones(x.shape[2:]), pads)[None, None]  # 1 on the input, 0 on the padding
        count = _windows(inside, kernel, strides, [1] * len(kernel))
        count = count[(slice(None), slice(None)) + tuple(slice(0, o) for o in sizes)].sum(axis=axes)
        return total / count
    return _pool(i, average, 0.0)
