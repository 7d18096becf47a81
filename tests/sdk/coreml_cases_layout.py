"""The cases of test_coreml_executor.py for reductions, matmul/linear, normalization, int8 dequantisation, layout
ops (reshape, slicing, gather, pad, …) and convolution/pooling (coreml_cases.py holds the elementwise ones)."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
import torch.nn.functional as F

from coreml_cases import (B_CONV, B_LIN, BETA, BN, GAMMA, Q_DATA, Q_OFFSET, Q_SCALE, W_1D, W_CONV, W_DW, W_GROUP,
                          W_LIN, C, Case, _mb, _t)

X = ((2, 3, 5), "f")


def _dequant(data, scale, offset) -> torch.Tensor:
    """Block-wise scale * (data - offset), each scale repeated over its block, written with torch."""
    s, o = _t(scale), _t(offset) if offset is not None else torch.zeros(scale.shape)
    for axis in range(data.ndim):
        s = s.repeat_interleave(data.shape[axis] // scale.shape[axis], axis)
        o = o.repeat_interleave(data.shape[axis] // scale.shape[axis], axis)
    return (_t(data) - o) * s


def _reduce(name: str, kw: dict, ref) -> Case:
    return C(name, name, [X], lambda x: getattr(_mb(), name)(x=x, **kw), ref, accumulates=True)


def layout_cases() -> list[Case]:
    mb = _mb()
    red = [_reduce(name, kw, ref) for name, kw, ref in [
               ("reduce_sum", {"axes": [1]}, lambda x: x.sum(1)),
               ("reduce_mean", {"axes": [0, 2], "keep_dims": True}, lambda x: x.mean((0, 2), keepdim=True)),
               ("reduce_max", {"axes": [-1]}, lambda x: x.amax(-1)),
               ("reduce_min", {"axes": [1], "keep_dims": True}, lambda x: x.amin(1, keepdim=True)),
               ("reduce_prod", {"axes": [1]}, lambda x: x.prod(1)),
               ("reduce_l2_norm", {"axes": [-1], "keep_dims": True}, lambda x: x.norm(dim=-1, keepdim=True)),
               ("reduce_sum_square", {"axes": [0]}, lambda x: (x * x).sum(0)),
               ("reduce_argmax", {"axis": 1}, lambda x: x.argmax(1)),
               ("reduce_argmin", {"axis": -1, "keep_dims": True}, lambda x: x.argmin(-1, keepdim=True))]]
    return red + [
        C("matmul", "matmul", [((2, 3, 4), "f"), ((2, 4, 5), "f")], lambda x, y: mb.matmul(x=x, y=y),
          torch.matmul, accumulates=True),
        C("matmul_transpose_y", "matmul", [((2, 3, 4), "f"), ((2, 5, 4), "f")],
          lambda x, y: mb.matmul(x=x, y=y, transpose_y=True), lambda x, y: x @ y.transpose(-1, -2), accumulates=True),
        C("matmul_transpose_x_broadcast", "matmul", [((2, 4, 3), "f"), ((4, 5), "f")],
          lambda x, y: mb.matmul(x=x, y=y, transpose_x=True), lambda x, y: x.transpose(-1, -2) @ y, accumulates=True),
        C("linear", "linear", [X], lambda x: mb.linear(x=x, weight=W_LIN, bias=B_LIN),
          lambda x: F.linear(x, _t(W_LIN), _t(B_LIN)), accumulates=True),
        C("layer_norm", "layer_norm", [X], lambda x: mb.layer_norm(x=x, axes=[-1], gamma=GAMMA, beta=BETA, epsilon=np.float16(2 ** -10)),
          lambda x: F.layer_norm(x, (5,), _t(GAMMA), _t(BETA), 2 ** -10), accumulates=True),
        C("batch_norm", "batch_norm", [((2, 4, 3, 3), "f")],
          lambda x: mb.batch_norm(x=x, mean=BN[0], variance=BN[1], gamma=BN[2], beta=BN[3], epsilon=np.float16(2 ** -10)),
          lambda x: F.batch_norm(x, _t(BN[0]), _t(BN[1]), _t(BN[2]), _t(BN[3]), False, 0.0, 2 ** -10)),
        C("int8_blockwise_offset", "constexpr_blockwise_shift_scale linear", [((2, 8), "f")],
          lambda x: mb.linear(x=x, weight=mb.constexpr_blockwise_shift_scale(data=Q_DATA, scale=Q_SCALE, offset=Q_OFFSET)),
          lambda x: x @ _dequant(Q_DATA, Q_SCALE, Q_OFFSET).half().float().T, accumulates=True),
        C("int8_per_channel", "constexpr_blockwise_shift_scale",  [((6, 8), "f")],
          lambda x: mb.add(x=x, y=mb.constexpr_blockwise_shift_scale(data=Q_DATA, scale=Q_SCALE[:, :1].repeat(2, 0))),
          lambda x: x + _dequant(Q_DATA, Q_SCALE[:, :1].repeat(2, 0), None).half().float()),  # an fp16 constant
        C("reshape", "reshape", [X], lambda x: mb.reshape(x=x, shape=[0, -1]), lambda x: x.reshape(3, 10)),  # iOS17+: 0s align from the right
        C("transpose", "transpose", [((2, 3, 4, 5), "f")], lambda x: mb.transpose(x=x, perm=[2, 0, 3, 1]),
          lambda x: x.permute(2, 0, 3, 1)),
        C("expand_dims", "expand_dims", [X], lambda x: mb.expand_dims(x=x, axes=[-1, 0]), lambda x: x[None, ..., None]),
        C("squeeze", "squeeze", [((1, 3, 1, 5), "f")], lambda x: mb.squeeze(x=x, axes=[2]), lambda x: x[:, :, 0]),
        C("concat", "concat", [X, ((2, 2, 5), "f")], lambda x, y: mb.concat(values=[x, y], axis=-2),
          lambda x, y: torch.cat([x, y], 1)),
        C("concat_interleave", "concat", [((2, 3), "f"), ((2, 3), "f")],
          lambda x, y: mb.concat(values=[x, y], axis=1, interleave=True),
          lambda x, y: torch.stack([x, y], 2).reshape(2, 6)),
        C("stack", "stack", [X, X], lambda x, y: mb.stack(values=[x, y], axis=1), lambda x, y: torch.stack([x, y], 1)),
        C("split_num", "split", [((2, 6), "f")], lambda x: mb.split(x=x, num_splits=3, axis=1),
          lambda x: x.split(2, 1)),
        C("split_sizes", "split", [X], lambda x: mb.split(x=x, split_sizes=[1, 4], axis=-1), lambda x: x.split([1, 4], -1)),
        C("tile", "tile", [X], lambda x: mb.tile(x=x, reps=[2, 1, 3]), lambda x: x.repeat(2, 1, 3)),
        C("slice_masks_negative_stride", "slice_by_index", [((4, 6, 5), "f")],
          lambda x: mb.slice_by_index(x=x, begin=[1, 3, 4], end=[3, 0, 0], stride=[1, 2, -1],
                                      begin_mask=[False, True, False], end_mask=[False, True, True]),
          lambda x: x[1:3, ::2, :5].flip(-1)),
        C("slice_squeeze", "slice_by_index", [((4, 6, 5), "f")],
          lambda x: mb.slice_by_index(x=x, begin=[0, -2, 1], end=[0, 0, 4], end_mask=[True, False, False],
                                      squeeze_mask=[False, True, False]), lambda x: x[:, -2, 1:4]),
        C("slice_by_size", "slice_by_size", [((4, 6, 5), "f")], lambda x: mb.slice_by_size(x=x, begin=[1, 2, 0], size=[2, -1, 3]),
          lambda x: x[1:3, 2:, 0:3]),
        C("gather_negative_indices", "gather", [X, ((2, 2), "i3")], lambda x, i: mb.gather(x=x, indices=i, axis=-2),
          lambda x, i: x[:, i % 3]),
        C("gather_batch_dims", "gather", [X, ((2, 4), "i3")], lambda x, i: mb.gather(x=x, indices=i, axis=1, batch_dims=1),
          lambda x, i: torch.stack([x[b, i[b] % 3] for b in range(2)])),
        C("gather_along_axis", "gather_along_axis", [X, ((2, 4, 5), "i3")],
          lambda x, i: mb.gather_along_axis(x=x, indices=i, axis=1), lambda x, i: x.gather(1, i % 3)),
        C("pad_constant_ordering", "pad", [((1, 2, 3, 4), "f")],
          lambda x: mb.pad(x=x, pad=[0, 0, 0, 0, 1, 2, 3, 0], mode="constant", constant_val=np.float16(0.5)),
          lambda x: F.pad(x, (3, 0, 1, 2), value=0.5)),  # MIL: (before, after) per axis, first axis first
        C("pad_reflect_last_axes", "pad", [((1, 2, 3, 4), "f")],  # 4 pads: the last 2 axes
          lambda x: mb.pad(x=x, pad=[1, 1, 2, 0], mode="reflect", constant_val=np.float16(0)),
          lambda x: F.pad(x, (2, 0, 1, 1), mode="reflect")),
        C("pad_replicate", "pad", [((1, 2, 3, 4), "f")],
          lambda x: mb.pad(x=x, pad=[0, 2, 1, 3], mode="replicate", constant_val=np.float16(0)),
          lambda x: F.pad(x, (1, 3, 0, 2), mode="replicate")),
        C("band_part", "band_part", [((4, 5), "f")], lambda x: mb.band_part(x=x, lower=1, upper=0),
          lambda x: torch.tril(x) - torch.tril(x, -2)),
        C("shape_fill", "shape fill", [X], lambda x: mb.fill(shape=mb.shape(x=x), value=2.5), lambda x: torch.full((2, 3, 5), 2.5)),
        C("range_1d", "range_1d", [((2,), "i3")], lambda i: mb.add(x=i, y=mb.range_1d(start=1, end=5, step=2)),
          lambda i: i + torch.arange(1, 5, 2)),
    ]


def _conv(name, x_shape, w, b=None, torch_pad=None, **kw) -> Case:
    mb = _mb()
    nsp = w.ndim - 2
    conv = F.conv1d if nsp == 1 else F.conv2d

    def ref(x):
        x = F.pad(x, torch_pad) if torch_pad else x
        return conv(x, _t(w), None if b is None else _t(b), stride=kw.get("strides", 1), dilation=kw.get("dilations", 1),
                    groups=kw.get("groups", 1), padding="same" if kw.get("pad_type") == "same" else 0)
    extra = {} if b is None else {"bias": b}
    return C(name, "conv", [(x_shape, "f")], lambda x: mb.conv(x=x, weight=w, **extra, **kw), ref, accumulates=True)


def spatial_cases() -> list[Case]:
    mb = _mb()
    pool = ((1, 2, 8, 9), "f")
    return [
        _conv("conv_layout_custom_pad", (1, 4, 7, 8), W_CONV, B_CONV, (2, 1, 0, 1), strides=[2, 1], dilations=[1, 2],
              pad_type="custom", pad=[0, 1, 2, 1]),  # [top, bottom, left, right]; torch pads (left, right, top, bottom)
        _conv("conv_depthwise_same", (1, 4, 6, 7), W_DW, None, None, groups=4, pad_type="same"),
        _conv("conv_groups", (1, 4, 5, 7), W_GROUP, B_CONV, None, groups=2, strides=[1, 2], pad_type="valid"),
        _conv("conv_same_lower_stride", (1, 4, 8, 8), W_CONV, None, (0, 0, 1, 0), strides=[2, 2], pad_type="same_lower"),
        # kernel 3x2, input 8x8, stride 2: height needs 1 row of padding (same_lower: before), width none
        _conv("conv1d", (1, 4, 9), W_1D, None, (1, 0), strides=[2], pad_type="custom", pad=[1, 0]),
        C("max_pool", "max_pool", [pool], lambda x: mb.max_pool(x=x, kernel_sizes=[3, 3], strides=[2, 2], pad_type="custom",
                                                                 pad=[0, 0, 0, 0], ceil_mode=False),
          lambda x: F.max_pool2d(x, 3, 2)),
        C("max_pool_ceil_pad", "max_pool", [pool], lambda x: mb.max_pool(x=x, kernel_sizes=[3, 2], strides=[2, 2],
                                                                         pad_type="custom", pad=[1, 1, 1, 1], ceil_mode=True),
          lambda x: F.max_pool2d(x, (3, 2), 2, padding=1, ceil_mode=True)),
        C("avg_pool_exclude_pad", "avg_pool", [pool], lambda x: mb.avg_pool(
            x=x, kernel_sizes=[2, 3], strides=[2, 2], pad_type="custom", pad=[1, 1, 1, 1], exclude_padding_from_average=True),
          lambda x: F.avg_pool2d(x, (2, 3), 2, padding=1, count_include_pad=False), accumulates=True),
        C("avg_pool_include_pad", "avg_pool", [pool], lambda x: mb.avg_pool(
            x=x, kernel_sizes=[2, 3], strides=[2, 2], pad_type="custom", pad=[1, 1, 1, 1], exclude_padding_from_average=False),
          lambda x: F.avg_pool2d(x, (2, 3), 2, padding=1, count_include_pad=True), accumulates=True),
    ]


def fp32_cases(all_cases: list[Case]) -> list[Case]:
    """fp32 programs: the accumulating ops (with float32 constants) and a few transcendental ones."""
    mb = _mb()
    keep = {"matmul_transpose_y", "softmax", "gelu_exact", "rsqrt", "reduce_mean", "add", "sigmoid"}
    w, b, wl, bl = (a.astype(np.float32) for a in (W_CONV, B_CONV, W_LIN, B_LIN))
    own = [_conv("conv_layout_custom_pad", (1, 4, 7, 8), w, b, (2, 1, 0, 1), strides=[2, 1], dilations=[1, 2],
                 pad_type="custom", pad=[0, 1, 2, 1]),
           C("linear", "linear", [X], lambda x: mb.linear(x=x, weight=wl, bias=bl), lambda x: F.linear(x, _t(wl), _t(bl)),
             accumulates=True)]
    return [dataclasses.replace(c, id=f"{c.id}_fp32", fp32=True) for c in all_cases + own
            if c.id in keep or c in own]
