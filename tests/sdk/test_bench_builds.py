"""`minivlm bench` end to end on the tiny builds (build tier: it uses the tiny build fixtures, and exports graphs
to ONNX), and ONNX Runtime computing what eager computes. No timing is asserted: only that every measurement is
there, and that every runtime computed the same thing."""

import json

import pytest
import torch
from PIL import Image

import minivlm
from minivlm.bench import COMPARISON_SCHEMA_VERSION, SCHEMA_VERSION, run_bench
from minivlm.bench.compare import model_report
from minivlm.bench.measure import build_files
from minivlm.bench.onnx_graphs import export_graphs, ort_graphs
from minivlm.bench.workload import prepare
from minivlm.converters.tolerances import FP32_MAX_ABS

GRAPH_FIELDS = ("median_ms", "p10_ms", "p90_ms", "min_ms", "max_ms", "runs", "times_ms", "max_abs_vs_eager",
                "vs_onnxruntime", "vs_eager", "gflops_per_s")


def _check_report(report: dict, path, runtimes: list[str], threads: list[int], tasks: tuple[str, ...], runs: int) -> None:
    """`report` (one model's; `path` its JSON file, or None for a part of a comparison) has every measurement."""
    if path is not None:
        assert json.loads(path.read_text()) == report
    assert [rt["name"] for rt in report["runtimes"]] == runtimes
    for key in ("cpu", "logical_cores", "usable_cores", "versions", "load_average_start", "load_average_end"):
        assert report["machine"][key] is not None, key
    assert report["machine"]["versions"]["onnxruntime"] and report["machine"]["versions"]["torch"]
    assert all(g["flops"] > 0 for g in report["graphs"].values())
    for rt in report["runtimes"]:
        assert rt["size_bytes"] > 0
        assert sorted(rt["by_threads"]) == sorted(map(str, threads)), rt["name"]
        for result in rt["by_threads"].values():
            assert "error" not in result, (rt["name"], result)
            assert result["load_seconds"] > 0 and result["peak_rss_mb"] >= result["rss_before_load_mb"] > 0
            assert list(result["graphs"]) == list(report["graphs"])
            for name, row in result["graphs"].items():
                assert all(row[f] is not None for f in GRAPH_FIELDS), (rt["name"], name)
                assert row["runs"] == len(row["times_ms"]) == runs
                # Every fp32 runtime computed what eager computed, on the same recorded inputs (parity's bound).
                assert row["max_abs_vs_eager"] <= FP32_MAX_ABS, (rt["name"], name, row["max_abs_vs_eager"])
            assert tuple(result["tasks"]) == tasks
            # A result is recorded (an untrained model's greedy caption may be empty: its first token ends it).
            assert all(row["runs"] == 1 and isinstance(row["result"], str) for row in result["tasks"].values())


def test_bench_times_eager_onnxruntime_and_both_tiny_builds_at_two_thread_counts(tiny_executorch_build, tiny_tflite_build, tmp_path):
    builds = [str(tiny_executorch_build.path), str(tiny_tflite_build.path)]
    out, png = tmp_path / "bench.json", tmp_path / "bench.png"
    report = run_bench("minivlm-tiny", builds, random_init=True, threads=(1, 2), runs=2, task_runs=1,
                       json_path=str(out), plot_path=str(png))
    _check_report(report, out, ["pytorch eager", "onnxruntime fp32", "executorch fp32", "tflite fp32"], [1, 2],
                  ("detect", "caption", "answer"), runs=2)
    assert report["schema_version"] == SCHEMA_VERSION == 1 and "comparison" not in report  # one model: as before
    for rt, build in zip(report["runtimes"][2:], (tiny_executorch_build, tiny_tflite_build)):
        manifest = json.loads((build.path / "manifest.json").read_text())
        assert rt["size_bytes"] == sum((build.path / f).stat().st_size for f in build_files(manifest))
    decoding = report["runtimes"][0]["by_threads"]["1"]["caption_decoding"]
    assert decoding["cached"]["caption"] == decoding["uncached"]["caption"]  # the same decode, two ways
    assert decoding["vocab_head"]["median_ms"] > 0 and decoding["speedup_bound"] > 0  # what caching could gain
    with Image.open(png) as img:
        assert img.format == "PNG" and img.size[0] > 300


def test_bench_of_an_efficientvlm_build(tiny_efficientvlm_file, tiny_efficientvlm_build, tmp_path):
    build = tiny_efficientvlm_build("tflite")
    out = tmp_path / "bench.json"
    report = run_bench(str(tiny_efficientvlm_file), [str(build.path)], threads=(1,), runs=2, task_runs=1, json_path=str(out))
    _check_report(report, out, ["pytorch eager", "onnxruntime fp32", "tflite fp32"], [1], ("caption", "answer", "match"), runs=2)
    assert "caption_decoding" not in report["runtimes"][0]["by_threads"]["1"]  # its step graph recomputes the sequence


def test_bench_compares_two_models_side_by_side(tiny_efficientvlm_file, tiny_efficientvlm_build, tmp_path):
    """efficientvlm-demo-tiny (random init) against the tiny EfficientVLM file with its TFLite build, the baseline:
    each model measured as a run of its own would measure it, runtimes interleaved, and a comparison whose ratios
    are the quotients of the medians in the models' own sections. Only kinds of runtime both have are compared."""
    build = tiny_efficientvlm_build("tflite")
    out, png = tmp_path / "bench.json", tmp_path / "bench.png"
    said = []
    report = run_bench("efficientvlm-demo-tiny", versus=[str(tiny_efficientvlm_file)], versus_builds=[str(build.path)],
                       random_init=True, runs=2, task_runs=1, json_path=str(out), plot_path=str(png), progress=said.append)
    assert report["schema_version"] == COMPARISON_SCHEMA_VERSION and json.loads(out.read_text()) == report
    student, teacher = "efficientvlm-demo-tiny", str(tiny_efficientvlm_file)
    assert [m["model"]["name"] for m in report["models"]] == [student, teacher]
    tasks = ("caption", "answer", "match")
    _check_report(model_report(report, 0), None, ["pytorch eager", "onnxruntime fp32"], [1], tasks, runs=2)
    _check_report(model_report(report, 1), None, ["pytorch eager", "onnxruntime fp32", "tflite fp32"], [1], tasks, runs=2)
    # Round by round, the model that goes first alternating.
    assert [line for line in said if "thread" in line] == [
        f"{student}: pytorch eager, 1 thread", f"{teacher}: pytorch eager, 1 thread",
        f"{teacher}: onnxruntime fp32, 1 thread", f"{student}: onnxruntime fp32, 1 thread",
        f"{teacher}: tflite fp32, 1 thread"]
    c = report["comparison"]
    assert c["baseline"] == teacher and [e["runtime"] for e in c["runtimes"]] == ["pytorch eager", "onnxruntime fp32"]
    for i, name in enumerate((student, teacher)):
        params = report["models"][i]["model"]["parameters"]
        assert params > 0 and c["models"][name]["parameters"] == params
    assert c["models"][student]["parameters"] < c["models"][teacher]["parameters"]  # demo-tiny is the smaller
    for entry in c["runtimes"]:
        runtimes = [next(rt for rt in m["runtimes"] if rt["name"] == entry["runtime"]) for m in report["models"]]
        rows = entry["by_threads"]["1"]
        assert tuple(rows["tasks"]) == tasks and list(rows["graphs"]) == list(report["models"][1]["graphs"])
        for section, items in rows.items():
            for item, row in items.items():
                s_ms, t_ms = (rt["by_threads"]["1"][section][item]["median_ms"] for rt in runtimes)
                assert row["median_ms"] == {student: s_ms, teacher: t_ms}
                assert row["vs_baseline"][student] == pytest.approx(s_ms / t_ms) and row["vs_baseline"][teacher] == 1.0
    with Image.open(png) as img:
        assert img.format == "PNG" and img.size[0] > 300


@pytest.mark.build
@pytest.mark.parametrize("model", ["minivlm-tiny", "efficientvlm-tiny"])
def test_onnxruntime_graphs_compute_what_eager_computes(model, tmp_path):
    """Each exported graph run by ONNX Runtime on the recorded inputs, against the eager outputs the trace
    recorded (not the bench's own comparison): fp32 kernels differ in summation order only."""
    torch.manual_seed(0)
    reference = minivlm.load(model, random_init=True)
    workload = prepare(reference, model, True)
    graphs = reference.pipeline.graphs.modules()
    files = export_graphs(graphs, workload.inputs, tmp_path)
    sessions = ort_graphs(files, workload.io_names(), threads=1)
    for name, session in sessions.items():
        got = session(*workload.inputs[name])
        want = graphs[name](*workload.inputs[name])
        assert len(got) == len(want) == len(graphs[name].output_names)
        for g, w, out in zip(got, want, graphs[name].output_names):
            assert g.shape == w.shape and g.dtype == w.dtype, (name, out)
            peak = float(w.abs().max())
            assert float((g - w).abs().max()) <= FP32_MAX_ABS * max(peak, 1e-6), (name, out)
