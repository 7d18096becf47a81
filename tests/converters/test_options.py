"""Target/precision/delegate choices: what exists is accepted with its defaults, anything else is one line
naming what exists, from Python and from both CLI spellings, before any model is loaded."""

import re

import pytest
from typer.testing import CliRunner

from minivlm.cli import app, convert_app
from minivlm.conversion import default_out
from minivlm.converters.targets import TARGETS, BuildOptions, resolve_options
from minivlm.errors import ConversionError


def test_defaults_per_target():
    assert resolve_options("executorch") == BuildOptions("executorch", "fp32", "xnnpack", None)
    assert resolve_options("coreml") == BuildOptions("coreml", "fp16", None, "all")
    assert resolve_options("tflite") == BuildOptions("tflite", "fp32", "xnnpack", None)
    assert resolve_options("coreai") == BuildOptions("coreai", "fp32", None, "default")


@pytest.mark.parametrize("target", list(TARGETS))
def test_every_listed_choice_resolves(target):
    t = TARGETS[target]
    for precision in t.precisions:
        for delegate in t.delegates or (None,):
            if precision == "int8" and target == "executorch" and delegate != "xnnpack":
                continue
            for units in t.compute_units or (None,):
                assert resolve_options(target, precision, delegate, units).precision == precision


@pytest.mark.parametrize(
    "args, message",
    [
        (("onnx",), "unknown target 'onnx'; targets: executorch, coreml, tflite"),
        (("executorch", "fp16"), "executorch has no precision 'fp16'; it has: fp32, int8"),
        (("tflite", "int4"), "tflite has no precision 'int4'; it has: fp32, fp16, int8"),
        (("executorch", None, "gpu"), "executorch has no delegate 'gpu'; it has: xnnpack, coreml, portable"),
        (("tflite", None, "coreml"), "tflite has no delegate 'coreml'; it has: xnnpack, gpu, nnapi"),
        (("coreml", None, "xnnpack"), "coreml takes no --delegate"),
        (("tflite", None, None, "cpu_only"), "--compute-units applies to coreml, coreai only, not tflite"),
        (("coreml", None, None, "npu"), "coreml has no compute units 'npu'"),
        (("coreai", None, None, "all"), "coreai has no compute units 'all'; it has: default, neural_engine, gpu, cpu_only"),
        (("coreai", "fp16"), "coreai has no precision 'fp16'; it has: fp32, int8"),
        (("coreai", None, "xnnpack"), "coreai takes no --delegate"),
        (("executorch", "int8", "portable"), "needs --delegate xnnpack"),
    ],
)
def test_impossible_choices_name_what_exists(args, message):
    with pytest.raises(ConversionError, match=re.escape(message)) as err:
        resolve_options(*args)
    assert "\n" not in str(err.value)


def test_default_out_keeps_different_builds_apart():
    assert str(default_out("minivlm-demo", resolve_options("executorch"))) == "out/minivlm-demo-executorch-fp32"
    assert str(default_out("minivlm-demo", resolve_options("executorch", delegate="portable"))) == \
        "out/minivlm-demo-executorch-fp32-portable"
    assert str(default_out("minivlm-demo", resolve_options("coreml", compute_units="cpu_only"))) == \
        "out/minivlm-demo-coreml-fp16-cpu_only"


@pytest.mark.parametrize("runner_app, prefix", [(convert_app, []), (app, ["convert"])])
def test_cli_rejects_a_missing_combination_in_one_line(runner_app, prefix, tmp_path):
    out = tmp_path / "never"
    result = CliRunner().invoke(runner_app, [*prefix, "--target", "executorch", "--precision", "fp16", "--out", str(out)])
    assert result.exit_code == 2
    assert "error: executorch has no precision 'fp16'; it has: fp32, int8" in result.output
    assert not out.exists()


def test_cli_rejects_an_unknown_target():
    result = CliRunner().invoke(convert_app, ["--target", "onnx"])
    assert result.exit_code == 2
    assert "onnx" in result.output


def test_cli_help_lists_exactly_the_table():
    text = CliRunner().invoke(convert_app, ["--help"], terminal_width=200).output
    for t in TARGETS.values():
        assert t.name in text
        for choice in (*t.precisions, *t.delegates, *t.compute_units):
            assert choice in text
