"""An fp16-faithful executor of Core ML ML programs (MIL) in numpy, so a Core ML build can be run on Linux.

A Core ML build is one multifunction `model.mlpackage` (docs/ARCHITECTURE.md §6); Core ML itself runs only on
Apple systems. `MILProgram.load` reads the package's MIL program with coremltools (no Core ML needed) and `run`
interprets one function op by op (`coreml_ops.py`, `coreml_layout_ops.py`, `coreml_spatial.py`).

Arithmetic: every value is stored in its var's declared dtype. An op whose output var is fp16 computes from its
(exactly widened) inputs in float64 and rounds its result once to float16, so each op is correctly rounded;
matmul, linear and conv accumulate in float32 and then round to float16. An fp32 program runs in float32. This is
an *ideal* fp16 executor, fp16 storage and rounding after every op: it is NOT the arithmetic of Core ML's CPU,
GPU or Neural Engine backends (which fuse ops, accumulate differently and approximate transcendental functions), so
it bounds what fp16 storage alone costs, not what a device computes.
"""

from __future__ import annotations

import collections
import contextlib
import io
import logging
import warnings
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from minivlm.python_ref.errors import ArtifactError, InputError

from . import coreml_layout_ops, coreml_spatial  # noqa: F401  (they register their ops in OPS)
from .coreml_ops import OPS, Inputs

SUPPORTED_OPS: frozenset[str] = frozenset(OPS)
# constexpr ops make constants from constant inputs; they run once, when a function first runs
_FLOATS = {"fp16": np.float16, "fp32": np.float32, "fp64": np.float64}
_DTYPES = {**_FLOATS, "int32": np.int32, "int16": np.int16, "uint16": np.uint16, "int8": np.int8, "uint8": np.uint8,
           "int64": np.int64, "bool": np.bool_}


@contextlib.contextmanager
def _quiet():
    """coremltools logs and warns on import on Linux (no Core ML proxies, untested torch): none of it applies."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
                contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(previous)


def _dtype(var) -> np.dtype:
    from coremltools.converters.mil.mil import types

    name = types.builtin_to_string(var.dtype)
    if name not in _DTYPES:
        raise ArtifactError(f"MIL var {var.name} has dtype {name}, expected one of {sorted(_DTYPES)}")
    return np.dtype(_DTYPES[name])


def _walk(block) -> Iterable:
    for op in block.operations:
        yield op
        for inner in op.blocks:
            yield from _walk(inner)


class MILProgram:
    """A Core ML ML program (`.mlpackage`), its functions run by this module's numpy ops."""

    def __init__(self, program, name: str, order: Iterable[str] = ()) -> None:
        self._program, self.name = program, name
        order = [f for f in order if f in program.functions]  # the spec's order, as Core ML lists them
        self.functions: tuple[str, ...] = tuple(order) + tuple(f for f in program.functions if f not in order)
        self._consts: dict[str, dict[str, np.ndarray]] = {}
        self._checked: set[str] = set()

    @classmethod
    def load(cls, path: str | Path) -> "MILProgram":
        """The ML program of the `.mlpackage` at `path`; ArtifactError if coremltools cannot read it."""
        path = Path(path)
        try:
            with _quiet():
                import coremltools as ct
                from coremltools.converters.mil.frontend.milproto.load import load

                model = ct.models.MLModel(str(path), skip_model_load=True)
                spec = model.get_spec()
                if not spec.HasField("mlProgram"):
                    raise ValueError("not an ML program")
                program = load(spec, spec.specificationVersion, model.weights_dir)
        except Exception as err:  # FileNotFoundError, protobuf DecodeError, a missing weight file, …
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ArtifactError(f"{path.name}: coremltools cannot read it as an ML program ({first})") from None
        return cls(program, path.name, [f.name for f in spec.description.functions])

    def _function(self, function: str):
        if function not in self._program.functions:
            raise InputError(f"{self.name} has no function {function!r}; it has {list(self.functions)}")
        return self._program.functions[function]

    def function_io(self, function: str) -> tuple[list[tuple[str, tuple[int, ...], np.dtype]],
                                                   list[tuple[str, tuple[int, ...], np.dtype]]]:
        """(inputs, outputs) of `function`, each as (name, shape, dtype) in the function's order."""
        f = self._function(function)
        return ([(v.name, tuple(v.shape), _dtype(v)) for v in f.inputs.values()],
                [(v.name, tuple(v.shape), _dtype(v)) for v in f.outputs])

    def op_types(self, function: str | None = None) -> collections.Counter:
        """How many ops of each type `function` (default: every function) holds, nested blocks included."""
        names = self.functions if function is None else (function,)
        return collections.Counter(op.op_type for name in names for op in _walk(self._function(name)))

    def _check_ops(self, function: str) -> None:
        if function in self._checked:
            return
        unknown = sorted(set(self.op_types(function)) - SUPPORTED_OPS)
        if unknown:
            raise ArtifactError(f"{self.name} function {function!r} uses MIL op {unknown[0]!r}"
                                f"{f' (and {unknown[1:]})' if unknown[1:] else ''}, which this executor does "
                                f"not implement; it supports {sorted(SUPPORTED_OPS)}")
        self._checked.add(function)

    def _check_feeds(self, function: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        inputs, _ = self.function_io(function)
        names = [n for n, _, _ in inputs]
        if set(feeds) != set(names):
            raise InputError(f"{function}: feeds {sorted(feeds)}, expected exactly {names}")
        for name, shape, dtype in inputs:
            value = np.asarray(feeds[name])
            if value.shape != shape or value.dtype != dtype:
                raise InputError(f"{function}: input {name!r} is {value.dtype}{list(value.shape)}, "
                                 f"expected {dtype}{list(shape)}")
        return {name: np.asarray(feeds[name]) for name in names}

    def run(self, function: str, feeds: dict[str, np.ndarray], *, keep: Iterable[str] | bool = False
            ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Run `function` on `feeds` (input name -> array of the declared shape and dtype). Returns (outputs by
        name, intermediates): the value of every op output except constants, by MIL var name, if `keep` is True;
        only the named vars (inputs and constants too) if `keep` names some; none otherwise."""
        f = self._function(function)
        self._check_ops(function)
        env: dict[str, Any] = dict(self._check_feeds(function, feeds))
        wanted = None if keep is True else set() if keep is False else set(keep)
        kept: dict[str, np.ndarray] = {}
        self._block(f, env, kept, wanted, function)
        if wanted:
            missing = sorted(wanted - set(kept) - set(env))
            if missing:
                raise InputError(f"{function}: keep names {missing}, which are not vars of this function")
            kept.update({n: env[n] for n in wanted - set(kept)})
        return {v.name: env[v.name] for v in f.outputs}, kept

    def _block(self, block, env: dict, kept: dict, wanted: set | None, function: str) -> None:
        consts = self._consts.setdefault(function, {})
        for op in block.operations:
            if op.blocks:
                raise ArtifactError(f"{self.name} function {function!r}: op {op.op_type} ({op.name}) has nested "
                                    "blocks; control flow is not implemented")
            out = op.outputs
            if op.op_type == "const" or op.op_type.startswith("constexpr_"):
                if out[0].name not in consts:
                    consts[out[0].name] = (self._const(op) if op.op_type == "const"
                                           else self._apply(op, env, function)[0])
                env[out[0].name] = consts[out[0].name]
                continue
            for var, value in zip(out, self._apply(op, env, function)):
                env[var.name] = value
                if wanted is None or var.name in wanted:
                    kept[var.name] = value

    @staticmethod
    def _const(op) -> Any:
        var = op.outputs[0]
        val = var.val
        if isinstance(val, str):
            return val
        return np.asarray(val, dtype=_dtype(var))

    def _apply(self, op, env: dict, function: str) -> list[np.ndarray]:
        values = {name: [env[v.name] for v in var] if isinstance(var, (list, tuple)) else env[var.name]
                  for name, var in op.inputs.items()}
        dtypes = [_dtype(v) for v in op.outputs]
        floats = [np.dtype(d) for d in dtypes] + [np.asarray(v).dtype for v in values.values()
                                                   if not isinstance(v, (list, str))]
        ftype = np.float32 if np.dtype(np.float32) in floats else np.float64
        try:
            result = OPS[op.op_type](Inputs(op.op_type, values, ftype, dtypes))
        except ArtifactError as err:
            raise ArtifactError(f"{self.name} function {function!r} op {op.name}: {err}") from None
        results = result if isinstance(result, (list, tuple)) else [result]
        stored = []
        for var, dtype, value in zip(op.outputs, dtypes, results):
            value = np.asarray(value).astype(dtype)
            if var.shape is not None and all(isinstance(s, int) for s in var.shape) and value.shape != var.shape:
                raise ArtifactError(f"{self.name} function {function!r} op {op.name} ({op.op_type}) made shape "
                                    f"{list(value.shape)}, its var {var.name} declares {list(var.shape)}")
            stored.append(value)
        return stored


__all__ = ["SUPPORTED_OPS", "MILProgram"]
