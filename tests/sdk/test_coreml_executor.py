"""minivlm.coreml_executor: each MIL op of a tiny saved ML program against the same computation in torch
(coreml_cases.py, coreml_cases_layout.py), multifunction packages, and the one-line errors.

Bounds. An fp16 program's op is computed wide and rounded once to fp16, so its result is within half an fp16 ulp
(<= 2**-11 of the value, 2**-25 for subnormals) of the exact one; torch computes it in float32, which is within
`delta` of exact: 1e-6 of the peak for elementwise ops (float32 transcendentals), 1e-5 for sums of many terms (the
summation order differs). An fp32 program runs in float32: within 1e-6 (2e-6 when accumulating) of the peak."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from coreml_cases import Case, cases
from minivlm.coreml_executor import SUPPORTED_OPS, MILProgram
from minivlm.errors import ArtifactError, InputError

ct = pytest.importorskip("coremltools")

CASES = cases()
_rng = np.random.default_rng(0)


def _input(shape, kind, fp32: bool) -> np.ndarray:
    if kind.startswith("i"):
        n = int(kind[1:])
        return _rng.integers(-n, n, shape).astype(np.int32)
    x = _rng.standard_normal(shape)
    x = np.abs(x) + 0.05 if kind == "pos" else x
    return x.astype(np.float32 if fp32 else np.float16)


def _zero(x):
    from coremltools.converters.mil.mil import types

    return types.nptype_from_builtin(x.dtype)(0)


def _spec(value: np.ndarray):
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.mil import types

    dtype = {np.float16: types.fp16, np.float32: types.fp32, np.int32: types.int32, np.bool_: types.bool}
    return mb.TensorSpec(shape=value.shape, dtype=dtype[value.dtype.type])


def save_program(build, feeds: list[np.ndarray], path=None) -> MILProgram:
    """`build(*vars)` as a one-function ML program with inputs x0, x1, ... like `feeds`, saved at `path` (no graph
    passes: the saved ops are the built ones) and loaded back; `path=None`: the program as built, in memory (the
    op cases: saving and loading is held by the tests below and the builds of test_coreml_executor_builds.py)."""
    from coremltools.converters.mil.mil import Function, Program

    inputs = {f"x{k}": _spec(v) for k, v in enumerate(feeds)}
    program = Program()
    with Function(inputs, opset_version=ct.target.iOS18) as function:
        outputs = build(*function.inputs.values())
        function.set_outputs(list(outputs) if isinstance(outputs, (list, tuple)) else [outputs])
    program.add_function("main", function)
    if path is None:
        return MILProgram(program, "in memory")
    model = ct.convert(program, convert_to="mlprogram", minimum_deployment_target=ct.target.iOS18,
                       pass_pipeline=ct.PassPipeline.EMPTY)
    model.save(str(path))
    return MILProgram.load(path)


def _run_case(case: Case) -> tuple[MILProgram, list, list]:
    feeds = [_input(shape, kind, case.fp32) for shape, kind in case.inputs]
    # ML programs take no bool inputs: a "bool" input is a float one, made bool by x > 0 on both sides
    flags = [kind == "bool" for _, kind in case.inputs]
    from coremltools.converters.mil import Builder as mb

    def bools(*xs):
        return case.build(*[mb.greater(x=x, y=_zero(x)) if f else x for x, f in zip(xs, flags)])
    program = save_program(bools, feeds)
    (inputs, outputs) = program.function_io("main")
    got, _ = program.run("main", {name: v for (name, _, _), v in zip(inputs, feeds)})
    tensors = [torch.from_numpy(v.astype(np.float32) if v.dtype.kind == "f" else v.astype(np.int64)) for v in feeds]
    ref = case.ref(*[t > 0 if f else t for t, f in zip(tensors, flags)])
    ref = list(ref) if isinstance(ref, (tuple, list)) else [ref]
    return program, [got[name] for name, _, _ in outputs], ref


def assert_close(got: np.ndarray, ref: torch.Tensor, *, fp32: bool, accumulates: bool) -> None:
    r = ref.detach().numpy()
    assert got.shape == r.shape, (got.shape, r.shape)
    if r.dtype.kind in "biu":  # Core ML returns bool outputs as fp32
        np.testing.assert_array_equal(got.astype(np.float64), r.astype(np.float64))
        return
    g, r = got.astype(np.float64), r.astype(np.float64)
    peak = max(float(np.abs(r).max()), 1e-30)
    if fp32:
        bound = (2e-6 if accumulates else 1e-6) * peak
    else:
        delta = (1e-5 if accumulates else 1e-6) * peak
        bound = 2.0 ** -11 * (np.abs(r) + delta) + delta + 2.0 ** -25
    worst = np.abs(g - r) - bound
    assert worst.max() <= 0, f"{np.abs(g - r).max():.3g} > bound at {np.unravel_index(worst.argmax(), r.shape)}"


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_op_matches_torch(case: Case):
    program, got, ref = _run_case(case)
    assert set(case.ops) <= set(program.op_types("main")), "the program lacks an op this case claims to test"
    assert len(got) == len(ref)
    for g, r in zip(got, ref):
        assert_close(g, r, fp32=case.fp32, accumulates=case.accumulates)


def test_every_supported_op_has_a_case():
    assert SUPPORTED_OPS == {op for c in CASES for op in c.ops}


def test_fp16_rounds_once_after_each_op(tmp_path):
    """(x + y) - y in fp16 loses x's low bits when x + y is rounded to fp16 first, which is what an fp16 program
    stores between the ops; a float32 executor would return x exactly."""
    from coremltools.converters.mil import Builder as mb

    x, y = np.array([1.0 + 2.0 ** -10], np.float16), np.array([1024.0], np.float16)
    program = save_program(lambda a, b: mb.sub(x=mb.add(x=a, y=b), y=b), [x, y], tmp_path / "p.mlpackage")
    got, kept = program.run("main", {"x0": x, "x1": y}, keep=True)
    assert got[next(iter(got))][0] == np.float16(1.0)  # 1025.0009765625 rounds to 1025 in fp16 (ulp 1)
    assert {v.dtype for v in kept.values()} == {np.dtype(np.float16)} and len(kept) == 2
    add = next(name for name in kept if name not in got)
    assert program.run("main", {"x0": x, "x1": y}, keep=[add])[1] == {add: np.float16(1025.0)}
    assert program.run("main", {"x0": x, "x1": y})[1] == {}
    with pytest.raises(InputError) as err:
        program.run("main", {"x0": x, "x1": y}, keep=["nope"])
    assert "['nope']" in _one_line(err)


def test_multifunction_package(tmp_path):
    from coremltools.converters.mil import Builder as mb

    x = np.linspace(-2, 2, 6, dtype=np.float16).reshape(2, 3)
    save_program(lambda a: mb.relu(x=a), [x], tmp_path / "relu.mlpackage")
    save_program(lambda a: mb.mul(x=a, y=np.float16(3)), [x], tmp_path / "triple.mlpackage")
    desc = ct.utils.MultiFunctionDescriptor()
    desc.add_function(str(tmp_path / "relu.mlpackage"), "main", "relu")
    desc.add_function(str(tmp_path / "triple.mlpackage"), "main", "triple")
    desc.default_function_name = "relu"
    ct.utils.save_multifunction(desc, str(tmp_path / "both.mlpackage"))
    program = MILProgram.load(tmp_path / "both.mlpackage")
    assert set(program.functions) == {"relu", "triple"}
    assert program.op_types("triple")["mul"] == 1 and program.op_types()["relu"] == 1
    got, _ = program.run("relu", {"x0": x})
    np.testing.assert_array_equal(next(iter(got.values())), np.maximum(x, 0))
    got, _ = program.run("triple", {"x0": x})
    np.testing.assert_array_equal(next(iter(got.values())), (x.astype(np.float64) * 3).astype(np.float16))


def _one_line(err: pytest.ExceptionInfo) -> str:
    assert "\n" not in str(err.value)
    return str(err.value)


def test_unknown_op_is_one_line(tmp_path, monkeypatch):
    from coremltools.converters.mil import Builder as mb

    from minivlm import coreml_executor

    x = np.ones((2, 3), np.float16)
    program = save_program(lambda a: mb.relu(x=a), [x], tmp_path / "p.mlpackage")
    monkeypatch.setattr(coreml_executor, "SUPPORTED_OPS", SUPPORTED_OPS - {"relu"})
    with pytest.raises(ArtifactError) as err:
        program.run("main", {"x0": x})
    assert "'relu'" in _one_line(err) and "'main'" in str(err.value) and "'softmax'" in str(err.value)


def test_bad_feeds_are_one_line(tmp_path):
    from coremltools.converters.mil import Builder as mb

    x = np.ones((2, 3), np.float16)
    program = save_program(lambda a: mb.relu(x=a), [x], tmp_path / "p.mlpackage")
    for feeds, words in [({"x1": x}, "expected exactly ['x0']"), ({"x0": x[:1]}, "float16[1, 3], expected float16[2, 3]"),
                         ({"x0": x.astype(np.float32)}, "float32[2, 3], expected float16[2, 3]")]:
        with pytest.raises(InputError) as err:
            program.run("main", feeds)
        assert words in _one_line(err)
    with pytest.raises(InputError) as err:
        program.run("nope", {"x0": x})
    assert "has no function 'nope'" in _one_line(err)


def test_unreadable_package_is_one_line(tmp_path):
    (tmp_path / "bad.mlpackage").mkdir()
    with pytest.raises(ArtifactError) as err:
        MILProgram.load(tmp_path / "bad.mlpackage")
    assert "bad.mlpackage" in _one_line(err)
