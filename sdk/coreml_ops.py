"""The MIL operations `coreml_executor` runs: one numpy function per op type, by MIL's definitions (coremltools'
`converters/mil/mil/ops/defs`, opsets iOS15-iOS18).

Each function takes the op's `Inputs` (its named input values, already in their vars' declared dtypes) and returns
its output value(s) in a wide type; the executor then stores each in its output var's dtype (rounding to float16 for
an fp16 var). Floating inputs are widened by `Inputs.f` to the op's compute type (float64 for an fp16 op, so a
result is rounded once, to fp16; float32 in an fp32 program); matmul, linear and conv accumulate in float32
(`Inputs.acc`). Pooling and convolution live in `coreml_spatial.py`.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np

from minivlm.python_ref.errors import ArtifactError


class Inputs:
    """An op's input values by name, its compute type `ftype` and its output dtypes `out`."""

    def __init__(self, op_type: str, values: dict[str, Any], ftype: type, out: list[np.dtype]) -> None:
        self.op_type, self.values, self.ftype, self.out = op_type, values, ftype, out

    def __getitem__(self, name: str):
        return self.values[name]

    def get(self, name: str, default=None):
        value = self.values.get(name)
        return default if value is None else value

    def f(self, name: str) -> np.ndarray:
        """Input `name`, floats widened to the compute type (exact: every fp16 and fp32 value is a float64)."""
        x = np.asarray(self.values[name])
        return x.astype(self.ftype) if x.dtype.kind == "f" else x

    def acc(self, name: str) -> np.ndarray:
        """Input `name` as float32, the accumulation type of matmul, linear and conv."""
        return np.asarray(self.values[name], dtype=np.float32)

    def ints(self, name: str, default=None) -> list[int] | None:
        value = self.get(name, default)
        return None if value is None else [int(v) for v in np.atleast_1d(value)]

    def scalar(self, name: str, default=None):
        value = self.get(name, default)
        return value.item() if isinstance(value, np.ndarray) else value

    def fail(self, what: str) -> ArtifactError:
        return ArtifactError(f"MIL op {self.op_type}: {what}")


OPS: dict[str, Callable[[Inputs], Any]] = {}


def op(*names: str):
    def register(fn):
        for name in names:
            OPS[name] = fn
        return fn
    return register


def _unary(name: str, fn) -> None:
    OPS[name] = lambda i: fn(i.f("x"))


def _unary_eps(name: str, fn, eps: float) -> None:
    OPS[name] = lambda i: fn(i.f("x") + np.asarray(i.get("epsilon", eps), i.ftype))


def _binary(name: str, fn) -> None:
    OPS[name] = lambda i: fn(i.f("x"), i.f("y"))


def _erf(x: np.ndarray) -> np.ndarray:
    return np.frompyfunc(math.erf, 1, 1)(x).astype(x.dtype) if x.size else x


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # no overflow for large |x|


for _name, _fn in {
    "abs": np.abs, "ceil": np.ceil, "floor": np.floor, "exp": np.exp, "exp2": np.exp2, "sqrt": np.sqrt,
    "square": np.square, "sign": np.sign, "sin": np.sin, "cos": np.cos, "tanh": np.tanh, "erf": _erf,
    "sigmoid": _sigmoid, "relu": lambda x: np.maximum(x, 0), "relu6": lambda x: np.clip(x, 0, 6),
    "silu": lambda x: x * _sigmoid(x), "softplus": lambda x: np.logaddexp(0, x), "logical_not": np.logical_not,
}.items():
    _unary(_name, _fn)
_unary_eps("rsqrt", lambda v: 1 / np.sqrt(v), 1e-12)
_unary_eps("inverse", np.reciprocal, 1e-4)
_unary_eps("log", np.log, 1e-45)

for _name, _fn in {
    "add": np.add, "sub": np.subtract, "mul": np.multiply, "real_div": np.true_divide, "pow": np.power,
    "maximum": np.maximum, "minimum": np.minimum, "floor_div": np.floor_divide, "mod": np.mod,
    "equal": np.equal, "not_equal": np.not_equal, "less": np.less, "less_equal": np.less_equal,
    "greater": np.greater, "greater_equal": np.greater_equal, "logical_and": np.logical_and,
    "logical_or": np.logical_or, "logical_xor": np.logical_xor,
}.items():
    _binary(_name, _fn)


@op("clip")
def _clip(i: Inputs):
    return np.minimum(np.maximum(i.f("x"), i.f("alpha")), i.f("beta"))


@op("leaky_relu")
def _leaky_relu(i: Inputs):
    x = i.f("x")
    return np.where(x >= 0, x, x * i.scalar("alpha", 0.01))


@op("gelu")
def _gelu(i: Inputs):
    x, mode = i.f("x"), i.scalar("mode", "EXACT")
    if mode == "EXACT":
        return 0.5 * x * (1 + _erf(x / np.sqrt(2)))
    if mode == "TANH_APPROXIMATION":
        return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))
    if mode == "SIGMOID_APPROXIMATION":
        return x * _sigmoid(1.702 * x)
    raise i.fail(f"gelu mode {mode!r}, expected EXACT, TANH_APPROXIMATION or SIGMOID_APPROXIMATION")


@op("softmax")
def _softmax(i: Inputs):
    x, axis = i.f("x"), i.scalar("axis", -1)
    e = np.exp(x - np.max(x, axis=axis, keepdims=True))
    return e / np.sum(e, axis=axis, keepdims=True)


@op("select")
def _select(i: Inputs):
    return np.where(i["cond"], i.f("a"), i.f("b"))


@op("cast")
def _cast(i: Inputs):
    return i["x"]  # the executor stores the value in the output var's dtype (astype: floats truncate to ints)


@op("identity")
def _identity(i: Inputs):
    return i["x"]


def _reduce(fn):
    def run(i: Inputs):
        axes = i.ints("axes")
        return fn(i.f("x"), axis=None if axes is None else tuple(axes), keepdims=bool(i.scalar("keep_dims", False)))
    return run


for _name, _fn in {"reduce_sum": np.sum, "reduce_mean": np.mean, "reduce_max": np.max, "reduce_min": np.min,
                   "reduce_prod": np.prod}.items():
    OPS[_name] = _reduce(_fn)
OPS["reduce_l2_norm"] = _reduce(lambda x, **kw: np.sqrt(np.sum(x * x, **kw)))
OPS["reduce_sum_square"] = _reduce(lambda x, **kw: np.sum(x * x, **kw))


@op("reduce_argmax", "reduce_argmin")
def _argmax(i: Inputs):
    fn = np.argmax if i.op_type == "reduce_argmax" else np.argmin
    return fn(i["x"], axis=i.scalar("axis", -1), keepdims=bool(i.scalar("keep_dims", False)))


@op("matmul")
def _matmul(i: Inputs):
    x, y = i.acc("x"), i.acc("y")
    if i.scalar("transpose_x", False) and x.ndim > 1:
        x = np.swapaxes(x, -1, -2)
    if i.scalar("transpose_y", False) and y.ndim > 1:
        y = np.swapaxes(y, -1, -2)
    return np.matmul(x, y)


@op("linear")
def _linear(i: Inputs):
    y = np.matmul(i.acc("x"), i.acc("weight").T)
    bias = i.get("bias")
    return y if bias is None else y + np.asarray(bias, np.float32)


@op("layer_norm")
def _layer_norm(i: Inputs):
    x = i.f("x")
    axes = tuple(i.ints("axes", list(range(x.ndim))))
    mean = x.mean(axis=axes, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
    y = (x - mean) / np.sqrt(var + i.scalar("epsilon", 1e-5))
    gamma, beta = i.get("gamma"), i.get("beta")
    y = y if gamma is None else y * i.f("gamma")
    return y if beta is None else y + i.f("beta")


@op("batch_norm")
def _batch_norm(i: Inputs):
    x = i.f("x")
    shape = (1, -1) + (1,) * (x.ndim - 2)
    def p(name, default):
        return i.f(name).reshape(shape) if i.get(name) is not None else default
    y = (x - p("mean", 0)) / np.sqrt(p("variance", 1) + i.scalar("epsilon", 1e-5))
    return y * p("gamma", 1) + p("beta", 0)


@op("constexpr_blockwise_shift_scale")
def _shift_scale(i: Inputs):
    data = np.asarray(i["data"], np.float64)
    scale, offset = np.asarray(i["scale"], np.float64), i.get("offset")
    if scale.ndim != data.ndim or any(d % s for d, s in zip(data.shape, scale.shape)):
        raise i.fail(f"scale shape {scale.shape} does not divide data shape {data.shape} block-wise")

    def blocks(t):  # repeat each entry over its block: entry j covers data[j*b:(j+1)*b] on every axis
        for axis, (d, s) in enumerate(zip(data.shape, t.shape)):
            t = np.repeat(t, d // s, axis=axis)
        return t
    if offset is not None:
        data = data - blocks(np.asarray(offset, np.float64))
    return blocks(scale) * data


OPS["const"] = None  # handled by the executor (a var's stored value)
