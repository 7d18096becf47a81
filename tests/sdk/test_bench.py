"""`minivlm bench`'s parts that need no conversion: its statistics, sizes and ratios against values worked out by
hand, and its one-line errors for bad input (each raised before anything is measured). The command on real builds
and ONNX Runtime's agreement with eager are in test_bench_builds.py (build tier)."""

import json
import statistics

import pytest
from typer.testing import CliRunner

from minivlm.bench import parse_threads
from minivlm.bench.measure import build_bytes, build_files, summary
from minivlm.bench.report import add_ratios, markdown, table
from minivlm.bench.workload import not_runnable
from minivlm.cli import app
from minivlm.errors import InputError

runner = CliRunner()


def test_summary_takes_median_and_deciles_of_the_runs():
    times = [float(t) for t in range(1, 21)]  # 1..20 ms, shuffled: the order must not matter
    got = summary(times[::-1])
    assert got["median_ms"] == 10.5
    # Inclusive deciles of 1..20: position 1 + 0.1 * 19 = 2.9 and 1 + 0.9 * 19 = 18.1.
    assert got["p10_ms"] == pytest.approx(2.9) and got["p90_ms"] == pytest.approx(18.1)
    assert (got["min_ms"], got["max_ms"], got["runs"]) == (1.0, 20.0, 20)
    assert summary([4.0])["p10_ms"] == summary([4.0])["p90_ms"] == 4.0 == statistics.median([4.0])


def test_parse_threads():
    assert parse_threads("1,2") == (1, 2) and parse_threads(" 4 ") == (4,)
    for bad in ("0", "1,0", "a", "1,,2", "-1", "1,1", ""):
        with pytest.raises(InputError, match="--threads"):
            parse_threads(bad)


def test_a_build_is_its_distinct_graph_files_and_its_weights_file(tmp_path):
    """The size counts each file the manifest names once: per-graph files, one file for every graph (multi-
    signature TFLite), and the shared weights file; never goldens or vocabularies."""
    (tmp_path / "a.pte").write_bytes(b"x" * 10)
    (tmp_path / "b.pte").write_bytes(b"x" * 20)
    (tmp_path / "weights.ptd").write_bytes(b"x" * 300)
    (tmp_path / "golden").mkdir()
    (tmp_path / "golden" / "big.bin").write_bytes(b"x" * 5000)
    per_graph = {"graphs": {"g1": {"file": "a.pte"}, "g2": {"file": "b.pte"}}, "weights_file": "weights.ptd"}
    assert build_files(per_graph) == ["a.pte", "b.pte", "weights.ptd"]
    assert sum(build_bytes(tmp_path, per_graph).values()) == 330
    package = tmp_path / "model.mlpackage"
    (package / "Data").mkdir(parents=True)
    (package / "Data" / "w.bin").write_bytes(b"x" * 7)
    (package / "Manifest.json").write_bytes(b"x" * 3)
    one_file = {"graphs": {"g1": {"file": "model.mlpackage", "function": "g1"},
                           "g2": {"file": "model.mlpackage", "function": "g2"}}}
    assert build_bytes(tmp_path, one_file) == {"model.mlpackage": 10}


def test_a_core_ml_build_is_not_runnable_off_macos(monkeypatch):
    monkeypatch.setattr("sys.platform", "linux")
    assert "macOS" in not_runnable({"target": "coreml", "delegate": None})
    assert not_runnable({"target": "tflite", "delegate": "xnnpack"}) is None
    monkeypatch.setattr("sys.platform", "darwin")
    assert not_runnable({"target": "coreml", "delegate": None}) is None


def _result(graph_ms: float, task_ms: float) -> dict:
    return {"load_seconds": 1.0, "peak_rss_mb": 500.0, "graphs": {"g": {"median_ms": graph_ms}},
            "tasks": {"caption": {"median_ms": task_ms, "result": "a cat"}}}


def _report() -> dict:
    runtimes = [
        {"name": "pytorch eager", "kind": "eager", "size_bytes": 4_000_000, "by_threads": {"1": _result(8.0, 100.0)}},
        {"name": "onnxruntime fp32", "kind": "onnxruntime", "size_bytes": 5_000_000, "by_threads": {"1": _result(4.0, 50.0)}},
        {"name": "tflite fp32", "kind": "build", "size_bytes": 4_200_000, "by_threads": {"1": _result(2.0, 40.0)}},
        {"name": "coreml fp16", "kind": "build", "size_bytes": 2_000_000, "by_threads": {},
         "not_runnable": "a coreml build with Core ML runs only on macOS/iOS; this is linux"},
        {"name": "executorch fp32", "kind": "build", "size_bytes": 4_100_000, "by_threads": {"1": {"error": "boom"}}},
    ]
    return {"command": "minivlm bench x", "created": "2026-11-30T00:00:00Z",
            "machine": {"cpu": "CPU", "usable_cores": 2, "load_average_start": [0.5]},
            "model": {"preset": "m", "family": "minivlm", "source": "w"},
            "settings": {"threads": [1], "runs": 20, "task_runs": 20, "image": "scene"},
            "graphs": {"g": {"flops": 2_000_000_000}}, "runtimes": runtimes}


def test_ratios_and_achieved_flops_per_runtime():
    report = _report()
    add_ratios(report)
    tfl = report["runtimes"][2]["by_threads"]["1"]
    assert tfl["graphs"]["g"]["vs_onnxruntime"] == 0.5 and tfl["graphs"]["g"]["vs_eager"] == 0.25
    assert tfl["tasks"]["caption"]["vs_onnxruntime"] == 0.8 and tfl["tasks"]["caption"]["vs_eager"] == 0.4
    assert tfl["graphs"]["g"]["gflops_per_s"] == pytest.approx(1000.0)  # 2 GFLOP in 2 ms
    text = table(report)
    assert "not runnable here" in text and "failed: boom" in text and "macOS" in text
    md = markdown(report)
    assert "| g | 2.000 | 8.00 (2.00×) | 4.00 | 2.00 (0.50×) | not runnable here | failed |" in md
    json.dumps(report)  # the report stays JSON


@pytest.mark.parametrize("args, expected", [
    (["--threads", "0"], "--threads is '0'"),
    (["--threads", "1,x"], "--threads is '1,x'"),
    (["--runs", "0"], "--runs is 0"),
    (["--task-runs", "0"], "--task-runs is 0"),
    (["--model", "no-such-model"], "unknown model preset 'no-such-model'"),
    (["--json", "out.txt"], "--json is 'out.txt', expected a .json"),
    (["--plot", "no/such/folder/p.png"], "its folder no/such/folder does not exist"),
])
def test_bad_arguments_are_one_line_errors(args, expected):
    result = runner.invoke(app, ["bench", *args])
    assert result.exit_code == 2, result.output
    assert result.output.count("\n") == 1 and result.output.startswith("error: ") and expected in result.output


def test_a_folder_that_is_not_a_build_is_a_one_line_error(tmp_path):
    result = runner.invoke(app, ["bench", "--model", "minivlm-tiny", "--random-init", str(tmp_path)])
    assert result.exit_code == 2
    assert result.output == f"error: {tmp_path} has no manifest.json; it is not a minivlm build\n"
