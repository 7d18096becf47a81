"""What `minivlm bench` measures, one function per quantity: timed runs of a call, peak resident memory, FLOPs
of an eager graph, and the bytes of a build (docs/BENCHMARKS.md)."""

from __future__ import annotations

import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

from minivlm.python_ref.profile import count_flops

# Calls made before the timed ones: the first call of a runtime allocates its buffers and packs weights
# (XNNPACK), which is not what a phone pays per call.
WARMUP_RUNS = 3


def timed(call: Callable[[], object], runs: int, warmup: int = WARMUP_RUNS) -> dict:
    """`call()` `warmup` times untimed, then `runs` times each timed with `time.perf_counter`: median, p10, p90,
    min and max in milliseconds, and every run's time."""
    for _ in range(warmup):
        call()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1e3)
    return summary(times)


def summary(times_ms: list[float]) -> dict:
    """Median, p10, p90 (inclusive quantiles; with one run all equal it), min and max of run times in ms."""
    ordered = sorted(times_ms)
    if len(ordered) > 1:
        deciles = statistics.quantiles(ordered, n=10, method="inclusive")
        p10, p90 = deciles[0], deciles[-1]
    else:
        p10 = p90 = ordered[0]
    return {"median_ms": statistics.median(ordered), "p10_ms": p10, "p90_ms": p90, "min_ms": ordered[0],
            "max_ms": ordered[-1], "runs": len(ordered), "times_ms": times_ms}


def reset_peak_rss() -> bool:
    """Start the peak-RSS count again from the current RSS (Linux: writing 5 to /proc/self/clear_refs resets
    VmHWM), so that the peak measured is that of loading and running, not of importing torch. False where the
    kernel offers no reset (then `peak_rss_mb` is the process's peak since it started)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _status_mb(field: str) -> float | None:
    try:
        for line in open("/proc/self/status"):
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024 / 1e6  # kB
    except OSError:
        pass
    return None


def peak_rss_mb() -> float:
    """This process's peak resident set size in MB (10^6 bytes): VmHWM on Linux (reset by `reset_peak_rss`),
    else `ru_maxrss` (KiB on Linux, bytes on macOS)."""
    hwm = _status_mb("VmHWM")
    if hwm is not None:
        return hwm
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak * (1 if sys.platform == "darwin" else 1024) / 1e6


def rss_mb() -> float | None:
    """The current resident set size in MB (Linux), or None."""
    return _status_mb("VmRSS")


def graph_flops(graph: Callable, inputs: tuple) -> int:
    """FLOPs of one eager graph call on `inputs`, counted as `minivlm info` counts them (`python_ref/profile.py`
    `count_flops`: 2 per multiply-add, matmuls and convolutions)."""
    return count_flops(lambda: graph(*inputs))


def tree_bytes(path: Path) -> int:
    """Bytes of a file, or of every file under a folder (a Core ML `.mlpackage`)."""
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def build_files(manifest: dict) -> list[str]:
    """The files that make a build's model, as its manifest names them: each distinct graph file once, then the
    shared weights file if the layout has one (`weights_file`). Goldens, vocabularies, the manifest and
    fp16_range.json are not part of it."""
    files = list(dict.fromkeys(entry["file"] for entry in manifest["graphs"].values()))
    if manifest.get("weights_file"):
        files.append(manifest["weights_file"])
    return files


def build_bytes(folder: Path, manifest: dict) -> dict[str, int]:
    """Bytes of each file of `build_files`, by name."""
    return {name: tree_bytes(folder / name) for name in build_files(manifest)}


__all__ = ["WARMUP_RUNS", "build_bytes", "build_files", "graph_flops", "peak_rss_mb", "reset_peak_rss", "rss_mb", "summary", "timed", "tree_bytes"]
