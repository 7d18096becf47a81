"""A build target for tests that converts nothing, in this process or in worker processes (which import it by
name and inherit the environment). Each graph, in this order:
- leaves an empty file named after its process id in SLOW_TARGET_PIDS (if set), so a test can check that
  the workers are gone;
- with SLOW_TARGET_CHATTER set, says what backends say: a warning and a log record of a backend, one of
  ours, and lines on file descriptor 2 as absl and TFLite write them, one of them an error;
- fails if it is named in SLOW_TARGET_FAIL;
- waits SLOW_TARGET_SECONDS, standing for a backend's C++ pass: Ctrl-C reaches Python only when it ends
  (SIGINT is blocked in the converting thread meanwhile), as with coremltools or litert-torch in the middle
  of a graph;
- writes a few bytes.
"""

import logging
import os
import signal
import time
import warnings
from pathlib import Path

from minivlm.converters.specs import GraphBuild, runtime_io

BACKEND_MODULES = ()
NATIVE_CHATTER = (b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
                  b"I0000 00:00:1796034652.485349    7171 port.cc:153] native chatter from absl\n"
                  b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n"
                  b"W1130 10:31:07.532000 7168 torch/utils/_pytree.py:630] native chatter from torch\n")
NATIVE_ERROR = b"E0000 00:00:1796034652.485349    7171 converter.cc:12] a native error\n"


def calibrates(graph, options) -> bool:
    return False


def steps(options) -> tuple[str, ...]:
    return ("write",)


def manifest_extra(options, graphs) -> dict:
    return {}


def convert_graph(spec, options, folder: Path, step) -> GraphBuild:
    step("write")
    if os.environ.get("SLOW_TARGET_PIDS"):
        (Path(os.environ["SLOW_TARGET_PIDS"]) / str(os.getpid())).touch()
    if os.environ.get("SLOW_TARGET_CHATTER"):
        warnings.warn(f"backend warning from {spec.name}", FutureWarning, stacklevel=1)
        logging.getLogger("coremltools").warning("backend log record from %s", spec.name)
        logging.getLogger("minivlm.converters.slow_target").warning("our warning from %s", spec.name)
        os.write(2, NATIVE_CHATTER + NATIVE_ERROR)
    if spec.name == os.environ.get("SLOW_TARGET_FAIL"):
        raise ValueError(f"{spec.name} has an op no backend knows")
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        time.sleep(float(os.environ.get("SLOW_TARGET_SECONDS", "0")))
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
    (folder / f"{spec.name}.bin").write_bytes(spec.name.encode())
    return GraphBuild(spec.name, f"{spec.name}.bin", runtime_io(spec.inputs), runtime_io(spec.outputs), 1, 0)
