"""`minivlm bench`: the model's graphs and tasks timed in PyTorch eager, ONNX Runtime and each build given, every
runtime and thread count in a worker process of its own (`worker.py`), gathered into one report (docs/BENCHMARKS.md);
with `versus`, other models of the same family side by side in the same run, interleaved (`compare.py`).
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
from dataclasses import dataclass, field
from typing import Callable, Sequence

from minivlm.errors import InputError
from minivlm.python_ref.families import family_of

from .machine import machine_info
from .measure import WARMUP_RUNS, build_bytes, tree_bytes
from .onnx_graphs import export_graphs
from .compare import add_comparison
from .report import add_ratios, write_json
from .worker import TASK_WARMUP
from .workload import Workload, check_build, load_reference, not_runnable, prepare

# A report of one model; a run with --versus writes version 2: the same per-model parts, once per model under
# `models`, and a `comparison` (docs/BENCHMARKS.md).
SCHEMA_VERSION = 1
COMPARISON_SCHEMA_VERSION = 2


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


@dataclass
class _Model:
    """One model of the run: what it was given as, its reference, its build folders, and (once prepared) its
    workload, ONNX export and runtimes."""

    name: str
    reference: object
    builds: list[str] = field(default_factory=list)
    workload: Workload | None = None
    work: Path | None = None
    export_seconds: float = 0.0
    runtimes: list[dict] = field(default_factory=list)
    base_spec: dict = field(default_factory=dict)


def _same_model(a: str, b: str) -> bool:
    """Whether two model arguments name the same model: one preset, or one weights file however it is spelt."""
    return a == b or (Path(a).suffix == ".safetensors" and Path(a).resolve() == Path(b).resolve())


def _models(model: str, builds: Sequence[str], versus: Sequence[str], versus_builds: Sequence[str],
            random_init: bool) -> list[_Model]:
    """`model` with `builds`, then each `versus` model with the `versus_builds` that are builds of it: loaded and
    checked (InputError, one line: a model given twice, models of two families, a build of none of the models
    it is listed with)."""
    if isinstance(versus, str) or isinstance(versus_builds, str):
        raise InputError("versus and versus_builds are lists of models and of build folders, not one string")
    if versus_builds and not versus:
        raise InputError(f"--versus-build {versus_builds[0]} is given without --versus: name the model it is a build of "
                         "with --versus")
    names = [model, *versus]
    for i, a in enumerate(names):
        for b in names[:i]:
            if _same_model(a, b):
                raise InputError(f"{a} is given twice (--model and --versus name the models to compare): "
                                 "compare two different models")
    models = [_Model(model, load_reference(model, random_init), list(builds))]
    models += [_Model(name, load_reference(name, random_init)) for name in versus]
    families = [family_of(m.reference.config).name for m in models]
    for m, fam in zip(models[1:], families[1:]):
        if fam != families[0]:
            raise InputError(f"{m.name} is a model of the {fam} family and {model} of the {families[0]} family: bench "
                             "compares models of one family (their tasks and graphs differ)")
    hint = "BUILD arguments are builds of --model; give a --versus model's builds with --versus-build" if versus else None
    for folder in builds:  # every bad folder is refused before anything is measured
        check_build(folder, models[0].reference.config, hint)
    for folder in versus_builds:
        preset = check_build(folder, None)["model"]["preset"]
        owners = [m for m in models[1:] if m.reference.config.name == preset]
        if not owners:
            raise InputError(f"--versus-build {folder} is a build of {preset}, but the --versus model"
                             f"{'s are' if len(versus) > 1 else ' is'} {', '.join(versus)}: list it with the model it is a "
                             "build of (a BUILD argument goes with --model)")
        if len(owners) > 1:
            raise InputError(f"--versus-build {folder} is a build of {preset}, which --versus names twice "
                             f"({owners[0].name}, {owners[1].name}): give each of them in a run of its own")
        owners[0].builds.append(str(folder))
    return models


def _schedule(models: list[_Model]) -> list[tuple[_Model, dict]]:
    """Every (model, runtime) to run, interleaved: round i runs each model's i-th runtime (eager, ONNX Runtime,
    then its builds in order), the model that goes first alternating from round to round, so that a change of
    the machine's load during the run hits every model alike."""
    order = []
    for i in range(max(len(m.runtimes) for m in models)):
        for m in (models if i % 2 == 0 else models[::-1]):
            if i < len(m.runtimes):
                order.append((m, m.runtimes[i]))
    return order


def _section(m: _Model, random_init: bool) -> dict:
    """A model's part of the report: what it is, its graphs (FLOPs, input shapes), the ONNX export time and every
    runtime's measurements."""
    w = m.workload
    return {"model": {"name": m.name, "preset": m.reference.config.name, "family": w.family.name,
                      "source": m.reference.source, "random_init": random_init},
            "graphs": {name: {"flops": w.flops[name],
                              "inputs": [{"shape": list(t.shape), "dtype": str(t.dtype).removeprefix("torch.")}
                                         for t in w.inputs[name]]} for name in w.family.graph_names},
            "onnx_export_seconds": m.export_seconds,
            "runtimes": m.runtimes}


def run_bench(model: str = "minivlm-demo", builds: Sequence[str] = (), *, versus: Sequence[str] = (),
              versus_builds: Sequence[str] = (), random_init: bool = False,
              threads: Sequence[int] = (1,), runs: int = 20, task_runs: int | None = None,
              json_path: str | None = None, plot_path: str | None = None,
              progress: Callable[[str], None] = lambda _: None, command: str | None = None) -> dict:
    """Benchmark `model` (a preset or a .safetensors; `random_init` for an untrained preset, seeded) in PyTorch
    eager, ONNX Runtime and each build folder in `builds`, at each thread count: per graph `runs` timed calls
    after warm-up, per task `task_runs` (default `runs`). Returns the report (and writes it to `json_path`,
    a bar chart to `plot_path`).

    `versus` names other models of the same family to measure in the same run, each with the folders of
    `versus_builds` that are builds of it, on the same image and text: then the report (schema version 2) has
    one section per model (`models`, `model` first) and a `comparison` of every model with the baseline, the
    first of `versus` (`compare.add_comparison`). InputError/ConfigError/ArtifactError (one line) for bad
    arguments, before any measurement."""
    task_runs = runs if task_runs is None else task_runs
    for name, value in (("--runs", runs), ("--task-runs", task_runs)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InputError(f"{name} is {value!r}, expected an integer >= 1")
    threads = parse_threads(",".join(map(str, threads))) if not isinstance(threads, str) else parse_threads(threads)
    json_out = _check_output(json_path, ".json", "--json")
    plot_out = _check_output(plot_path, ".png", "--plot")
    machine_start = machine_info()
    if not isinstance(versus, str) and not isinstance(versus_builds, str):
        model, builds = os.fspath(model), [os.fspath(b) for b in builds]
        versus, versus_builds = [os.fspath(v) for v in versus], [os.fspath(b) for b in versus_builds]
    models = _models(model, builds, versus, versus_builds, random_init)
    for m in models:
        progress(f"tracing {m.name} on the sample image")
        m.workload = prepare(m.reference, m.name, random_init)
    sample = models[0].workload.sample
    assert all(m.workload.sample.name == sample.name for m in models)  # every model does the same work
    with tempfile.TemporaryDirectory(prefix="minivlm-bench-") as tmp:
        for i, m in enumerate(models):
            m.work = Path(tmp) / str(i)
            m.work.mkdir()
            m.workload.save(m.work)
            progress(f"exporting {m.name}'s graphs to ONNX")
            start = time.perf_counter()
            onnx_files = export_graphs(m.reference.pipeline.graphs.modules(), m.workload.inputs, m.work / "onnx")
            m.export_seconds = time.perf_counter() - start
            m.runtimes = _runtimes(m.reference, m.builds, sum(tree_bytes(p) for p in onnx_files.values()))
            m.base_spec = {**m.workload.spec(), "workdir": str(m.work), "runs": runs, "task_runs": task_runs,
                           "onnx_files": {k: str(v) for k, v in onnx_files.items()}}
            for rt in m.runtimes:
                rt["by_threads"] = {}
        for n in threads:
            for m, rt in _schedule(models):
                if rt.get("not_runnable"):
                    continue
                who = f"{m.name}: " if len(models) > 1 else ""
                progress(f"{who}{rt['name']}, {n} thread{'s' if n > 1 else ''}")
                spec = {**m.base_spec, "runtime": rt["kind"], "threads": n, "build": rt.get("path"), "target": rt.get("target")}
                rt["by_threads"][str(n)] = _spawn(spec, m.work, f"{n}-{m.runtimes.index(rt)}")
    if command is None:
        args = ["--model", model, *builds] + [a for v in versus for a in ("--versus", v)] + \
            [a for b in versus_builds for a in ("--versus-build", b)]
        command = "minivlm bench " + shlex.join(args)
    head = {"created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "command": command,
            "machine": {**machine_start, "load_average_end": list(os.getloadavg())}}
    settings = {"threads": list(threads), "runs": runs, "task_runs": task_runs, "warmup_runs": WARMUP_RUNS,
                "task_warmup_runs": TASK_WARMUP, "image": sample.name, "image_source": sample.source,
                "question": sample.question, "text": sample.text}
    sections = [_section(m, random_init) for m in models]
    for section in sections:
        add_ratios({**section, "settings": settings})
    if len(models) == 1:
        s = sections[0]
        report = {"schema_version": SCHEMA_VERSION, **head, "model": s["model"], "settings": settings,
                  "graphs": s["graphs"], "onnx_export_seconds": s["onnx_export_seconds"], "runtimes": s["runtimes"]}
    else:
        for section, m in zip(sections, models):
            section["model"]["parameters"] = sum(p.numel() for p in m.reference.pipeline.model.parameters())
        report = {"schema_version": COMPARISON_SCHEMA_VERSION, **head, "settings": settings, "models": sections}
        add_comparison(report)
    if json_out is not None:
        write_json(report, json_out)
    if plot_out is not None:
        from .plot import plot

        plot(report, plot_out)
    return report


__all__ = ["COMPARISON_SCHEMA_VERSION", "SCHEMA_VERSION", "parse_threads", "run_bench"]
