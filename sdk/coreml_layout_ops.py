"""MIL operations that move or select values without arithmetic (reshape, transpose, slicing, gather, concat,
pad, …), registered in `coreml_ops.OPS`. Semantics from coremltools' `converters/mil/mil/ops/defs`."""

from __future__ import annotations

import numpy as np

from .coreml_ops import Inputs, op


@op("reshape")
def _reshape(i: Inputs):
    x, shape = i["x"], i.ints("shape")
    # iOS17+: a 0 takes the input's size on the axis at the same place counted from the right (1 if there is none);
    # one -1 is inferred
    def zero(k: int) -> int:
        j = x.ndim - (len(shape) - k)
        return x.shape[j] if 0 <= j < x.ndim else 1
    return np.reshape(x, [zero(k) if s == 0 else s for k, s in enumerate(shape)])


@op("transpose")
def _transpose(i: Inputs):
    return np.transpose(i["x"], i.ints("perm"))


@op("expand_dims")
def _expand_dims(i: Inputs):
    x = i["x"]
    rank = x.ndim + len(i.ints("axes"))
    return np.expand_dims(x, tuple(sorted(a % rank for a in i.ints("axes"))))


@op("squeeze")
def _squeeze(i: Inputs):
    x, axes = i["x"], i.ints("axes")
    return np.squeeze(x) if axes is None else np.squeeze(x, tuple(a % x.ndim for a in axes))


@op("concat")
def _concat(i: Inputs):
    values, axis = [np.asarray(v) for v in i["values"]], i.scalar("axis")
    if not i.scalar("interleave", False):
        return np.concatenate(values, axis=axis)
    # interleave: the output takes one slice from each input in turn (inputs of equal shape)
    axis %= values[0].ndim
    stacked = np.stack(values, axis=axis + 1)
    shape = list(values[0].shape)
    shape[axis] *= len(values)
    return stacked.reshape(shape)


@op("stack")
def _stack(i: Inputs):
    return np.stack([np.asarray(v) for v in i["values"]], axis=i.scalar("axis"))


@op("split")
def _split(i: Inputs):
    x, axis = i["x"], i.scalar("axis")
    sizes = i.ints("split_sizes")
    if sizes is None:
        return np.split(x, i.scalar("num_splits"), axis=axis)
    return np.split(x, np.cumsum(sizes)[:-1], axis=axis)


@op("tile")
def _tile(i: Inputs):
    return np.tile(i["x"], i.ints("reps"))


@op("slice_by_index")
def _slice_by_index(i: Inputs):
    x = i["x"]
    rank = x.ndim
    begin, end = i.ints("begin"), i.ints("end")
    stride = i.ints("stride", [1] * rank)
    begin_mask = [bool(b) for b in i.get("begin_mask", [False] * rank)]
    end_mask = [bool(b) for b in i.get("end_mask", [False] * rank)]
    squeeze = [bool(b) for b in i.get("squeeze_mask", [False] * rank)]
    index = []
    for k in range(rank):
        if squeeze[k]:  # a pure index at begin[k]; end[k] is ignored
            index.append(begin[k])
        else:  # a masked bound is open, as in a Python slice (which also handles negative strides)
            index.append(slice(None if begin_mask[k] else begin[k], None if end_mask[k] else end[k], stride[k]))
    return x[tuple(index)]


@op("slice_by_size")
def _slice_by_size(i: Inputs):
    x, begin, size = i["x"], i.ints("begin"), i.ints("size")
    return x[tuple(slice(b, x.shape[k] if s == -1 else b + s) for k, (b, s) in enumerate(zip(begin, size)))]


def _indices(i: Inputs, name: str, size: int) -> np.ndarray:
    idx = np.asarray(i[name]).astype(np.int64)
    if i.scalar("validate_indices", False) and (idx.size and (idx.min() < -size or idx.max() >= size)):
        raise i.fail(f"index out of range [{-size}, {size})")
    return np.where(idx < 0, idx + size, idx)


@op("gather")
def _gather(i: Inputs):
    x = i["x"]
    axis = i.scalar("axis", 0) % x.ndim
    batch_dims = i.scalar("batch_dims", 0)
    idx = np.clip(_indices(i, "indices", x.shape[axis]), 0, x.shape[axis] - 1)  # Core ML leaves these undefined
    if batch_dims == 0:
        return np.take(x, idx, axis=axis)
    # batch_dims leading axes are shared by x and indices: gather row by row within each batch entry
    batch = x.shape[:batch_dims]
    xb = x.reshape((-1,) + x.shape[batch_dims:])
    ib = idx.reshape((-1,) + idx.shape[batch_dims:])
    out = np.stack([np.take(xb[b], ib[b], axis=axis - batch_dims) for b in range(xb.shape[0])])
    return out.reshape(batch + out.shape[1:])


@op("gather_along_axis")
def _gather_along_axis(i: Inputs):
    x = i["x"]
    axis = i.scalar("axis", 0) % x.ndim
    return np.take_along_axis(x, _indices(i, "indices", x.shape[axis]), axis=axis)


@op("pad")
def _pad(i: Inputs):
    x, pad = i["x"], i.ints("pad")
    n = len(pad) // 2  # pads the last n axes: (before, after) of each, in axis order
    widths = [(0, 0)] * (x.ndim - n) + [(pad[2 * k], pad[2 * k + 1]) for k in range(n)]
    mode = i.scalar("mode", "constant")
    if mode == "constant":
        return np.pad(x, widths, mode="constant", constant_values=np.asarray(i.get("constant_val", 0), x.dtype))
    if mode in ("reflect", "replicate"):
        return np.pad(x, widths, mode="reflect" if mode == "reflect" else "edge")
    raise i.fail(f"pad mode {mode!r}, expected constant, reflect or replicate")


@op("band_part")
def _band_part(i: Inputs):
    x = i["x"]
    lower, upper = i.scalar("lower", -1), i.scalar("upper", -1)
    rows, cols = np.indices(x.shape[-2:])
    keep = ((lower < 0) | (rows - cols <= lower)) & ((upper < 0) | (cols - rows <= upper))
    return np.where(keep, x, np.zeros((), x.dtype))


@op("shape")
def _shape(i: Inputs):
    return np.asarray(np.shape(i["x"]), np.int32)


@op("fill")
def _fill(i: Inputs):
    return np.full(i.ints("shape"), i.scalar("value", 0.0))


@op("range_1d")
def _range_1d(i: Inputs):
    return np.arange(i.scalar("start"), i.scalar("end"), i.scalar("step"))
