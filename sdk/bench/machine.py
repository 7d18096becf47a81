"""The machine a bench ran on: CPU model, cores, load, and the versions of every runtime measured."""

from __future__ import annotations

import os
import platform
from importlib import metadata
from pathlib import Path

PACKAGES = ("minivlm", "torch", "executorch", "ai-edge-litert", "onnxruntime", "onnx", "numpy")


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else what `platform` says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def machine_info() -> dict:
    """CPU model, logical cores (and those this process may use), OS, Python, package versions, and the load
    average when the bench started: timings taken on a loaded machine say so."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpu": cpu_model(), "machine": platform.machine(), "logical_cores": os.cpu_count(), "usable_cores": usable,
            "system": f"{platform.system()} {platform.release()}", "python": platform.python_version(),
            "versions": {p: _version(p) for p in PACKAGES}, "load_average_start": list(os.getloadavg())}


__all__ = ["cpu_model", "machine_info"]
