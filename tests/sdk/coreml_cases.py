"""Tiny MIL programs, one or a few ops each, and the same computation written in torch: the cases of
test_coreml_executor.py. `ops` names the MIL op types a case checks (scripts/coreml_op_coverage.py lists them as
"tested by", and a test holds each case's program to contain them)."""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

_rng = np.random.default_rng(7)


def const(*shape, dtype=np.float16, low=-1.0, high=1.0) -> np.ndarray:
    """A seeded constant, exactly representable in `dtype`."""
    return _rng.uniform(low, high, shape).astype(dtype)


@dataclasses.dataclass(frozen=True)
class Case:
    id: str
    ops: tuple[str, ...]
    inputs: tuple[tuple[tuple[int, ...], str], ...]  # (shape, kind): kind "f" (N(0,1)), "pos", "i<n>" ints in [-n, n), "bool"
    build: Callable  # (*mil vars) -> var or tuple of vars, inside mb.program
    ref: Callable  # (*torch tensors: floats as float32, ints as int64) -> tensor or tuple
    accumulates: bool = False  # sums many products or terms (matmul, conv, reductions): float32 order differs
    fp32: bool = False  # an fp32 program


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.asarray(a, np.float32))


def C(name, ops, inputs, build, ref, **kw) -> Case:
    return Case(name, tuple(ops.split()), tuple(inputs), build, ref, **kw)


def _mb():
    from coremltools.converters.mil import Builder as mb
    return mb


X = ((2, 3, 5), "f")
POS = ((2, 3, 5), "pos")
W_CONV, B_CONV = const(6, 4, 3, 2), const(6)  # [C_out, C_in, kH, kW]: asymmetric kernel catches a layout swap
W_DW = const(4, 1, 3, 3)  # depthwise: groups = C_in = C_out = 4
W_GROUP = const(6, 2, 1, 3)  # groups = 2
W_1D = const(3, 4, 3)
W_LIN, B_LIN = const(7, 5), const(7)
Q_DATA = _rng.integers(-128, 128, (6, 8)).astype(np.int8)
Q_SCALE = const(3, 2, low=0.001, high=0.02)  # a block of 2 rows x 4 columns per scale
Q_OFFSET = _rng.integers(-5, 5, (3, 2)).astype(np.int8)
GAMMA, BETA, K5 = const(5), const(5), const(5)
BN = [const(4), const(4, low=0.5, high=2.0), const(4), const(4)]


def like(x, value):
    """`value` as a scalar of the MIL var x's dtype (MIL wants an op's float attributes in its input's type)."""
    from coremltools.converters.mil.mil import types

    return types.nptype_from_builtin(x.dtype)(value)


def _unary(name, torch_fn, kind="f", **kw):
    def build(x):
        return getattr(_mb(), name)(x=x, **{k: like(x, v) if isinstance(v, float) else v for k, v in kw.items()})
    return C(name, name, [((2, 3, 5), kind)], build, torch_fn)


def _binary(name, torch_fn, kind="f"):
    return C(name, name, [((2, 3, 5), kind), ((3, 1), kind)], lambda x, y: getattr(_mb(), name)(x=x, y=y), torch_fn)


def _chain(*fns):
    def run(*args):
        out = fns[0](*args)
        for f in fns[1:]:
            out = f(out)
        return out
    return run


def _mil_cases() -> list[Case]:
    mb = _mb()
    cases = [
        _unary("abs", torch.abs), _unary("ceil", torch.ceil), _unary("floor", torch.floor), _unary("exp", torch.exp),
        _unary("exp2", torch.exp2), _unary("sqrt", torch.sqrt, "pos"), _unary("square", torch.square),
        _unary("sign", torch.sign), _unary("sin", torch.sin), _unary("cos", torch.cos), _unary("tanh", torch.tanh),
        _unary("erf", torch.erf), _unary("sigmoid", torch.sigmoid), _unary("relu", torch.relu),
        _unary("relu6", F.relu6), _unary("silu", F.silu), _unary("softplus", F.softplus),
        _unary("rsqrt", lambda x: 1 / torch.sqrt(x + 0.25), "pos", epsilon=0.25),
        _unary("inverse", lambda x: 1 / (x + 0.5), "pos", epsilon=0.5),
        _unary("log", lambda x: torch.log(x + 0.125), "pos", epsilon=0.125),
        _unary("leaky_relu", lambda x: F.leaky_relu(x, 0.25), alpha=0.25),
        _unary("clip", lambda x: x.clamp(-0.5, 0.75), alpha=-0.5, beta=0.75),
        _unary("softmax", lambda x: torch.softmax(x, 1), axis=1),
        C("gelu_exact", "gelu", [X], lambda x: mb.gelu(x=x, mode="EXACT"), F.gelu),
        C("gelu_tanh", "gelu", [X], lambda x: mb.gelu(x=x, mode="TANH_APPROXIMATION"),
          lambda x: F.gelu(x, approximate="tanh")),
        C("gelu_sigmoid", "gelu", [X], lambda x: mb.gelu(x=x, mode="SIGMOID_APPROXIMATION"),
          lambda x: x * torch.sigmoid(1.702 * x)),
        _binary("add", torch.add), _binary("sub", torch.sub), _binary("mul", torch.mul),
        _binary("real_div", torch.div), _binary("pow", torch.pow, "pos"), _binary("maximum", torch.maximum),
        _binary("minimum", torch.minimum), _binary("floor_div", torch.floor_divide), _binary("mod", torch.remainder),
        _binary("equal", torch.eq, "i3"), _binary("not_equal", torch.ne, "i3"), _binary("less", torch.lt),
        _binary("less_equal", torch.le, "i3"), _binary("greater", torch.gt), _binary("greater_equal", torch.ge, "i3"),
        _binary("logical_and", torch.logical_and, "bool"), _binary("logical_or", torch.logical_or, "bool"),
        _binary("logical_xor", torch.logical_xor, "bool"),
        _unary("logical_not", torch.logical_not, "bool"),
        C("select", "select", [((2, 3), "bool"), ((2, 3), "f"), ((1, 3), "f")],
          lambda c, a, b: mb.select(cond=c, a=a, b=b), lambda c, a, b: torch.where(c, a, b)),
        C("cast_fp16_int32", "cast", [((3, 4), "f")], lambda x: mb.cast(x=mb.mul(x=x, y=np.float16(7)), dtype="int32"),
          lambda x: (x * 7).half().float().trunc().long()),  # float -> int truncates toward zero
        C("cast_int32_int16_fp32", "cast", [((3, 4), "i300")], lambda x: mb.cast(x=mb.cast(x=x, dtype="int16"), dtype="fp32"),
          lambda x: x.float()),
        C("identity", "identity", [X], lambda x: mb.identity(x=x), lambda x: x),
        C("const", "const", [X], lambda x: mb.add(x=x, y=K5), lambda x: x + _t(K5)),
    ]
    return cases


def _all() -> list[Case]:
    from coreml_cases_layout import fp32_cases, layout_cases, spatial_cases

    fp16 = _mil_cases() + layout_cases() + spatial_cases()
    return fp16 + fp32_cases(fp16)


def cases() -> list[Case]:
    """Every case, built lazily (coremltools is imported only when the tests run)."""
    return _all()
