"""`minivlm bench`: the model's graphs and tasks timed in PyTorch eager, ONNX Runtime and each build given, every
runtime and thread count in a worker process of its own (`worker.py`), gathered into one report (docs/BENCHMARKS.md).
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Sequence

from minivlm.errors import InputError

from .machine import machine_info
from .measure import WARMUP_RUNS, build_bytes, tree_bytes
from .onnx_graphs import export_graphs
from .report import add_ratios, write_json
from .worker import TASK_WARMUP
from .workload import check_build, load_reference, not_runnable, prepare

SCHEMA_VERSION = 1


def parse_threads(text: str) -> tuple[int, ...]:
    """`--threads` "1,2" -> (1, 2); InputError for anything but positive integers, each once."""
    parts = [p.strip() for p in str(text).split(",")]
    if not all(p.isdigit() and int(p) >= 1 for p in parts) or len(set(parts)) != len(parts):
        raise InputError(f"--threads is {text!r}, expected distinct positive integers separated by commas, e.g. 1,2")
    return tuple(int(p) for p in parts)


def _check_output(path: str | None, suffix: str | None, what: str) -> Path | None:
    if path is None:
        return None
    out = Path(path)
    if suffix and out.suffix.lower() != suffix:
        raise InputError(f"{what} is {path!r}, expected a {suffix} file name")
    if not out.parent.is_dir():
        raise InputError(f"{what} is {path!r}, but its folder {out.parent} does not exist")
    return out


def _spawn(spec: dict, work: Path, tag: str) -> dict:
    """Run one worker process; its result, or {"error": ...} with the last line it printed on failure."""
    spec_path, out_path = work / f"{tag}.spec.json", work / f"{tag}.out.json"
    spec_path.write_text(json.dumps(spec))
    proc = subprocess.run([sys.executable, "-m", "minivlm.bench.worker", str(spec_path), str(out_path)],
                          capture_output=True, text=True)
    if proc.returncode != 0 or not out_path.exists():
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        return {"error": lines[-1] if lines else f"worker exited with {proc.returncode}"}
    return json.loads(out_path.read_text())


def _runtimes(reference, builds: Sequence[str], onnx_bytes: int) -> list[dict]:
    """The runtimes to measure: eager, ONNX Runtime, then each build (with its size, and why it cannot run here)."""
    source = Path(reference.source)
    eager_bytes = source.stat().st_size if source.is_file() else sum(
        p.numel() * p.element_size() for p in reference.pipeline.model.parameters())
    out = [{"name": "pytorch eager", "kind": "eager", "precision": "fp32", "size_bytes": eager_bytes,
            "size_of": "weights file" if source.is_file() else "parameters in memory (random init)"},
           {"name": "onnxruntime fp32", "kind": "onnxruntime", "precision": "fp32", "size_bytes": onnx_bytes,
            "size_of": "exported .onnx files (each carries its own weights)"}]
    for folder in builds:
        manifest = check_build(folder, reference.config)
        files = build_bytes(Path(folder), manifest)
        label = f"{manifest['target']} {manifest['precision']}"
        if manifest.get("delegate") and manifest["delegate"] != "xnnpack":
            label += f" ({manifest['delegate']})"
        out.append({"name": label, "kind": "build", "path": str(folder), "target": manifest["target"],
                    "precision": manifest["precision"], "delegate": manifest.get("delegate"),
                    "size_bytes": sum(files.values()), "files": files, "size_of": "graph files + weights file",
                    "not_runnable": not_runnable(manifest)})
    names = [r["name"] for r in out]
    for r in out:  # two builds of one kind: name them by folder too
        if names.count(r["name"]) > 1:
            r["name"] += f" [{Path(r['path']).name}]"
    return out


def run_bench(model: str = "minivlm-demo", builds: Sequence[str] = (), *, random_init: bool = False,
              threads: Sequence[int] = (1,), runs: int = 20, task_runs: int | None = None,
              json_path: str | None = None, plot_path: str | None = None,
              progress: Callable[[str], None] = lambda _: None, command: str | None = None) -> dict:
    """Benchmark `model` (a preset or a .safetensors; `random_init` for an untrained preset, seeded) in PyTorch
    eager, ONNX Runtime and each build folder in `builds`, at each thread count: per graph `runs` timed calls
    after warm-up, per task `task_runs` (default `runs`). Returns the report (and writes it to `json_path`,
    a bar chart to `plot_path`). InputError/ConfigError/ArtifactError (one line) for bad arguments, before any
    measurement."""
    task_runs = runs if task_runs is None else task_runs
    for name, value in (("--runs", runs), ("--task-runs", task_runs)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InputError(f"{name} is {value!r}, expected an integer >= 1")
    threads = parse_threads(",".join(map(str, threads))) if not isinstance(threads, str) else parse_threads(threads)
    json_out = _check_output(json_path, ".json", "--json")
    plot_out = _check_output(plot_path, ".png", "--plot")
    machine_start = machine_info()
    reference = load_reference(model, random_init)
    for folder in builds:
        check_build(folder, reference.config)  # every bad folder is refused before anything is measured
    progress("tracing the reference on the sample image")
    workload = prepare(reference, model, random_init)
    with tempfile.TemporaryDirectory(prefix="minivlm-bench-") as tmp:
        work = Path(tmp)
        workload.save(work)
        progress("exporting the graphs to ONNX")
        start = time.perf_counter()
        onnx_files = export_graphs(reference.pipeline.graphs.modules(), workload.inputs, work / "onnx")
        export_seconds = time.perf_counter() - start
        runtimes = _runtimes(reference, builds, sum(tree_bytes(p) for p in onnx_files.values()))
        base = {**workload.spec(), "workdir": str(work), "runs": runs, "task_runs": task_runs,
                "onnx_files": {k: str(v) for k, v in onnx_files.items()}}
        for rt in runtimes:
            rt["by_threads"] = {}
            if rt.get("not_runnable"):
                continue
            for n in threads:
                progress(f"{rt['name']}, {n} thread{'s' if n > 1 else ''}")
                spec = {**base, "runtime": rt["kind"], "threads": n, "build": rt.get("path"), "target": rt.get("target")}
                rt["by_threads"][str(n)] = _spawn(spec, work, f"{len(rt['by_threads'])}-{runtimes.index(rt)}")
    report = {
        "schema_version": SCHEMA_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": command or "minivlm bench " + shlex.join([*(["--model", model] if model else []), *builds]),
        "machine": {**machine_start, "load_average_end": list(os.getloadavg())},
        "model": {"name": model, "preset": reference.config.name, "family": workload.family.name,
                  "source": reference.source, "random_init": random_init},
        "settings": {"threads": list(threads), "runs": runs, "task_runs": task_runs, "warmup_runs": WARMUP_RUNS,
                     "task_warmup_runs": TASK_WARMUP, "image": workload.sample.name, "image_source": workload.sample.source,
                     "question": workload.sample.question, "text": workload.sample.text},
        "graphs": {name: {"flops": workload.flops[name],
                          "inputs": [{"shape": list(t.shape), "dtype": str(t.dtype).removeprefix("torch.")}
                                     for t in workload.inputs[name]]} for name in workload.family.graph_names},
        "onnx_export_seconds": export_seconds,
        "runtimes": runtimes,
    }
    add_ratios(report)
    if json_out is not None:
        write_json(report, json_out)
    if plot_out is not None:
        from .plot import plot

        plot(report, plot_out)
    return report


__all__ = ["SCHEMA_VERSION", "parse_threads", "run_bench"]
