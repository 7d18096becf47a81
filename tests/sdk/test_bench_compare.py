"""`minivlm bench --versus`: the comparison of models built from a report's own per-model sections (ratios are
quotients of the medians those sections hold, runtimes paired by kind), and the one-line errors for combinations
it refuses, each raised before anything is measured. A real comparison run is in test_bench_builds.py (it
exports graphs to ONNX)."""

import json

import pytest
from typer.testing import CliRunner

from minivlm.bench.compare import add_comparison, comparison_table, model_report
from minivlm.bench.report import markdown, table
from minivlm.cli import app

runner = CliRunner()


def _result(scale: float) -> dict:
    return {"load_seconds": 1.0, "peak_rss_mb": 500.0,
            "graphs": {"vision": {"median_ms": 4.0 * scale}, "fusion": {"median_ms": 6.0 * scale}},
            "tasks": {"caption": {"median_ms": 50.0 * scale, "result": "a red circle"}}}


def _model(name: str, params: int, scale: float, builds: list[dict]) -> dict:
    runtimes = [{"name": "pytorch eager", "kind": "eager", "size_bytes": params * 4, "size_of": "weights file",
                 "by_threads": {"1": _result(2 * scale)}},
                {"name": "onnxruntime fp32", "kind": "onnxruntime", "size_bytes": params * 5,
                 "by_threads": {"1": _result(scale)}}] + builds
    return {"model": {"name": name, "preset": name, "family": "efficientvlm", "source": "w", "parameters": params},
            "graphs": {"vision": {"flops": 10 * params}, "fusion": {"flops": 20 * params}},
            "onnx_export_seconds": 1.0, "runtimes": runtimes}


def _build(name: str, scale: float, size: int, ran: bool = True) -> dict:
    return {"name": name, "kind": "build", "size_bytes": size,
            "by_threads": {"1": _result(scale) if ran else {"error": "boom"}}}


def _report() -> dict:
    """A student (--model) with ExecuTorch and TFLite builds against a teacher (--versus, the baseline) with two
    ExecuTorch builds (named by folder, as `run_bench` names them) and a TFLite build that failed."""
    student = _model("student", 1_000_000, 0.5, [_build("executorch fp32", 0.25, 3_000_000),
                                                  _build("tflite fp32", 0.3, 3_500_000)])
    teacher = _model("teacher", 4_000_000, 1.0, [_build("executorch fp32 [et-a]", 1.0, 9_000_000),
                                                  _build("executorch fp32 [et-b]", 2.0, 9_000_000),
                                                  _build("tflite fp32", 1.0, 9_500_000, ran=False)])
    return {"schema_version": 2, "created": "2026-12-01T00:00:00Z", "command": "minivlm bench x",
            "machine": {"cpu": "CPU", "usable_cores": 2, "load_average_start": [0.5]},
            "settings": {"threads": [1], "runs": 5, "task_runs": 3, "image": "scene"}, "models": [student, teacher]}


def _median(report: dict, model: int, runtime: str, section: str, item: str) -> float:
    rt = next(r for r in report["models"][model]["runtimes"] if r["name"] == runtime)
    return rt["by_threads"]["1"][section][item]["median_ms"]


def test_ratios_are_quotients_of_the_per_model_medians_of_the_same_runtime_kind():
    report = _report()
    add_comparison(report)
    c = report["comparison"]
    assert c["baseline"] == "teacher" and "below 1 is faster" in c["ratio"]
    assert c["models"]["student"]["parameters_vs_baseline"] == 0.25 and c["models"]["teacher"]["parameters_vs_baseline"] == 1.0
    assert [e["runtime"] for e in c["runtimes"]] == ["pytorch eager", "onnxruntime fp32", "executorch fp32", "tflite fp32"]
    # The teacher's failed TFLite build leaves no time to compare with: sizes only, never a ratio to nothing.
    tfl = c["runtimes"][3]
    assert tfl["by_threads"] == {} and tfl["size_vs_baseline"]["student"] == 3_500_000 / 9_500_000
    et = c["runtimes"][2]
    # Of two baseline builds of one kind, the first is the one compared, and the names say which it was.
    assert et["names"] == {"student": "executorch fp32", "teacher": "executorch fp32 [et-a]"}
    assert et["size_vs_baseline"]["student"] == 3_000_000 / 9_000_000
    for entry in c["runtimes"][:3]:
        rows = entry["by_threads"]["1"]
        assert list(rows["tasks"]) == ["caption"] and list(rows["graphs"]) == ["vision", "fusion"]
        for section, items in rows.items():
            for item, row in items.items():
                student = _median(report, 0, entry["names"]["student"], section, item)
                teacher = _median(report, 1, entry["names"]["teacher"], section, item)
                assert row["median_ms"] == {"student": student, "teacher": teacher}
                assert row["vs_baseline"] == {"student": student / teacher, "teacher": 1.0}
    assert et["by_threads"]["1"]["tasks"]["caption"]["vs_baseline"]["student"] == 0.25  # 12.5 ms against 50 ms
    assert et["by_threads"]["1"]["graphs"]["fusion"]["flops"] == {"student": 20_000_000, "teacher": 80_000_000}
    assert et["by_threads"]["1"]["tasks"]["caption"]["result"] == {"student": "a red circle", "teacher": "a red circle"}
    json.dumps(report)  # the report stays JSON


def test_the_table_of_a_comparison_shows_each_model_then_the_comparison():
    report = _report()
    add_comparison(report)
    text = table(report)
    assert text.index("student (efficientvlm") < text.index("teacher (efficientvlm") < text.index("comparison with the baseline teacher")
    lines = comparison_table(report).splitlines()
    assert lines[1].split() == ["student", "teacher"]
    assert lines[2].split() == ["parameters", "(M)", "1.00", "0.25x", "4.00", "1.00x"]
    et = lines.index("  executorch fp32")
    assert lines[et + 1].split() == ["task:", "caption", "12.50", "0.25x", "50.00", "1.00x"]
    assert lines[-2] == "  tflite fp32 (not timed: the baseline's did not run)"
    assert lines[-1].split() == ["size", "(MB)", "3.5", "0.37x", "9.5", "1.00x"]
    md = markdown(report).splitlines()
    assert md[2] == "| | `student` | `teacher` |" and md[4] == "| parameters (M) | 1.00 (0.25×) | 4.00 (1.00×) |"
    assert "| executorch fp32: caption | 12.50 (0.25×) | 50.00 (1.00×) |" in md
    assert md[-1] == "| tflite fp32: size (MB) | 3.5 (0.37×) | 9.5 (1.00×) |"
    # Each model's part reads as a one-model report.
    assert model_report(report, 1)["model"]["name"] == "teacher" and model_report(report, 1)["settings"]["runs"] == 5


runner_args = ["bench", "--random-init", "--runs", "1"]


@pytest.mark.parametrize("args, expected", [
    (["--model", "efficientvlm-tiny", "--versus", "efficientvlm-tiny"],
     "efficientvlm-tiny is given twice (--model and --versus name the models to compare)"),
    (["--model", "efficientvlm-tiny", "--versus", "efficientvlm-demo-tiny", "--versus", "efficientvlm-demo-tiny"],
     "efficientvlm-demo-tiny is given twice"),
    (["--model", "efficientvlm-tiny", "--versus-build", "out/x"], "--versus-build out/x is given without --versus"),
    (["--model", "minivlm-tiny", "--versus", "efficientvlm-tiny"],
     "efficientvlm-tiny is a model of the efficientvlm family and minivlm-tiny of the minivlm family: bench compares "
     "models of one family"),
])
def test_bad_combinations_are_one_line_errors(args, expected):
    result = runner.invoke(app, [*runner_args, *args])
    assert result.exit_code == 2, result.output
    assert result.output.count("\n") == 1 and result.output.startswith("error: ") and expected in result.output


def test_a_weights_file_and_its_own_path_spelt_otherwise_are_the_same_model(tmp_path, monkeypatch):
    (tmp_path / "m.safetensors").write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, [*runner_args, "--model", "m.safetensors", "--versus", str(tmp_path / "m.safetensors")])
    assert result.exit_code == 2 and "is given twice" in result.output, result.output


@pytest.fixture()
def manifests(monkeypatch, tmp_path):
    """Build folders whose manifest names the preset of the folder's name (only the preset is read before the
    refusals under test, so no conversion is needed)."""
    monkeypatch.setattr("minivlm.bench.workload.read_manifest", lambda folder: {"model": {"preset": folder.name}})
    return tmp_path


@pytest.mark.parametrize("args, expected", [
    (["--model", "efficientvlm-demo-tiny", "--versus", "efficientvlm-tiny", "{d}/efficientvlm-tiny"],
     "{d}/efficientvlm-tiny is a build of efficientvlm-tiny, but the model benchmarked is efficientvlm-demo-tiny "
     "(BUILD arguments are builds of --model; give a --versus model's builds with --versus-build)"),
    (["--model", "efficientvlm-demo-tiny", "--versus", "efficientvlm-tiny", "--versus-build", "{d}/efficientvlm-demo-tiny"],
     "--versus-build {d}/efficientvlm-demo-tiny is a build of efficientvlm-demo-tiny, but the --versus model is "
     "efficientvlm-tiny: list it with the model it is a build of"),
])
def test_a_build_listed_with_the_wrong_model_is_a_one_line_error(manifests, args, expected):
    result = runner.invoke(app, [*runner_args, *(a.format(d=manifests) for a in args)])
    assert result.exit_code == 2, result.output
    assert result.output.count("\n") == 1 and expected.format(d=manifests) in result.output
