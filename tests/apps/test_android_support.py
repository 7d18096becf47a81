"""The Android app's own common Kotlin on the desktop JVM: golden replay (what the androidTest runs on a device) and
how the runners apply a runtime plan (accelerator fallback, the UI line, the decoded photo size), the demo
scenes' index, and installing a build from the APK's assets (`BuildInstall`: a failed rename never loses the
installed copy).

A small build folder is written here with the converters' own golden writer (two graphs, recorded calls on two
images, the fp32 tolerance row); `ai.minivlm.AndroidSupportMain` replays it through `GraphReplay` with recorded,
perturbed, NaN, misshapen and failing runners. The statistics it prints for the perturbed output are recomputed
here with NumPy, as sdk/parity/statistics.py defines them.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from test_android_jvm import java_home, kotlin_home, test_jar  # noqa: F401  (test_jar is a fixture)

from minivlm.converters.goldens import GoldenWriter
from minivlm.converters.tolerances import tolerance

MAIN_CLASS = "ai.minivlm.AndroidSupportMain"
DELTA = np.float32(0.5)  # AndroidSupportMain.DELTA
GRAPHS = {  # name -> (inputs, outputs), each (name, dtype, shape)
    "encode": ([("pixels", "float32", (1, 3, 4, 4)), ("ids", "int64", (1, 5))],
               [("features", "float32", (1, 6, 8)), ("logits", "float32", (1, 7))]),
    "head": ([("features", "float32", (1, 6, 8))], [("scores", "float32", (1, 3))]),
}
CALLS = {"encode": 1, "head": 2}  # recorded calls per image
IMAGES = ("scene_a", "photo_b")


def _tensor(rng: np.random.Generator, dtype: str, shape: tuple[int, ...]) -> torch.Tensor:
    if dtype == "int64":
        return torch.from_numpy(rng.integers(0, 30522, size=shape, dtype=np.int64))
    return torch.from_numpy((rng.standard_normal(shape) * 3).astype(np.float32))


def write_build(root: Path) -> dict[str, list[dict[str, np.ndarray]]]:
    """A build folder with manifest.json and golden/; returns the recorded outputs per graph, in replay order."""
    rng = np.random.default_rng(7)
    writer = GoldenWriter(root / "golden")
    cases, recorded = {}, {g: [] for g in GRAPHS}
    for image in IMAGES:
        graphs = {}
        for graph, (ins, outs) in GRAPHS.items():
            calls = []
            for i in range(CALLS[graph]):
                inputs = {n: _tensor(rng, d, s) for n, d, s in ins}
                outputs = {n: _tensor(rng, d, s) for n, d, s in outs}
                recorded[graph].append({n: t.numpy() for n, t in outputs.items()})
                calls.append({"call": i, "inputs": writer.group(f"{image}/{graph}.{i}.inputs", inputs),
                              "outputs": writer.group(f"{image}/{graph}.{i}.outputs", outputs)})
            graphs[graph] = calls
        cases[image] = {"source": "synthetic", "height": 4, "width": 4, "host_steps": {}, "graphs": graphs}
    (root / "golden" / "index.json").write_text(json.dumps({"version": 2, "images": list(IMAGES), "cases": cases}))

    def spec(t):
        return {"name": t[0], "dtype": t[1], "shape": list(t[2])}

    manifest = {
        "family": "minivlm", "target": "tflite", "precision": "fp32", "golden_dir": "golden",
        "graph_order": list(GRAPHS),
        "graphs": {g: {"file": "model.tflite", "signature": g, "inputs": [spec(t) for t in ins], "outputs": [spec(t) for t in outs]}
                   for g, (ins, outs) in GRAPHS.items()},
        "tolerances": tolerance("tflite", "fp32").as_json(),
    }
    (root / "manifest.json").write_text(json.dumps(manifest))
    return recorded


def expected_stats(outputs: list[np.ndarray]) -> dict[str, float]:
    """sdk/parity ErrorStats of `outputs` against themselves + DELTA (added in float32, as the Kotlin runner does)."""
    max_abs = peak = sum_sq = 0.0
    numel = 0
    min_cos = 1.0
    for r in outputs:
        g = (r + DELTA).astype(np.float64)
        r64 = r.astype(np.float64).ravel()
        err = g.ravel() - r64
        max_abs = max(max_abs, float(np.abs(err).max()))
        peak = max(peak, float(np.abs(r64).max()))
        sum_sq += float((err * err).sum())
        numel += r64.size
        min_cos = min(min_cos, float(r64 @ g.ravel()) / (np.linalg.norm(r64) * np.linalg.norm(g.ravel())))
    return {"max_abs": max_abs, "peak": peak, "psnr_db": 10 * math.log10(peak**2 / (sum_sq / numel)), "min_cosine": min_cos}


def test_replay_and_runtime_choices_on_the_jvm(test_jar: Path, tmp_path: Path):  # noqa: F811
    recorded = write_build(tmp_path / "build")
    home = java_home()
    kotlin = kotlin_home()
    classpath = os.pathsep.join(map(str, [test_jar, kotlin / "lib" / "kotlin-stdlib.jar", kotlin / "lib" / "kotlin-test.jar"]))
    proc = subprocess.run([str(home / "bin" / "java"), "-cp", classpath, MAIN_CLASS, str(tmp_path / "build")],
                          capture_output=True, text=True, timeout=300)
    sys.stdout.write(proc.stdout[-6000:] + proc.stderr[-3000:])
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    summary = re.search(r"^(\d+) passed, (\d+) failed$", proc.stdout, re.M)
    assert summary and int(summary.group(2)) == 0 and int(summary.group(1)) == 13, proc.stdout[-3000:]
    # Every graph replayed with every recorded call.
    for graph in GRAPHS:
        assert re.search(rf"^  PASS {graph} \({CALLS[graph] * len(IMAGES)} calls\)", proc.stdout, re.M), graph
    # The perturbed output's statistics, recomputed independently.
    first, first_output = next(iter(GRAPHS)), GRAPHS[next(iter(GRAPHS))][1][0][0]
    line = re.search(rf"^MEASURED {first} {first_output} (.+)$", proc.stdout, re.M)
    assert line, proc.stdout[-3000:]
    measured = {k: float(v) for k, v in (kv.split("=") for kv in line.group(1).split())}
    want = expected_stats([call[first_output] for call in recorded[first]])
    for key, value in want.items():
        assert measured[key] == pytest.approx(value, rel=1e-9), (key, measured[key], value)
    limit = tolerance("tflite", "fp32").graph_max_abs.value
    assert want["max_abs"] / want["peak"] > limit  # the perturbation is one the fp32 limit must catch


def test_replay_reads_the_build_from_android_test_assets():
    """The androidTest stays thin: it copies the build and hands GraphReplay the device backend."""
    android_test = Path(__file__).resolve().parents[2] / "android_demo" / "minivlm" / "src" / "androidTest" / "kotlin"
    sources = "\n".join(p.read_text() for p in sorted(android_test.rglob("*.kt")))
    assert "GraphReplay(" in sources and ".run()" in sources
    assert "assets" in sources and "@Test" in sources
    assert len(sources.splitlines()) < 120, "replay logic belongs in src/common/kotlin (GraphReplay.kt), not in the androidTest"
