"""What a command shows on the terminal, and how it stops.

`backend_chatter_hidden` keeps a conversion's stderr to our own progress bars, stage lines, warnings and
errors: the backends' log records and warnings below ERROR, and the INFO/WARNING lines their C++ code writes
straight to file descriptor 2 (absl, torch's glog-style lines, TFLite), are dropped unless `verbose`; their
errors always pass. `signals_interrupt` turns SIGINT, SIGTERM and SIGHUP into `Interrupted`, so that the
work unwinds (a build removes its unfinished folder and stops its workers) before the command exits.

Both change process-wide state (signal handlers, warning filters, file descriptor 2) for the duration of
the block: they are for the command-line entry points, never for library calls.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import select
import signal
import sys
import threading
import warnings
from typing import Iterator

from minivlm.converters.build_folder import Interrupted

TERMINATING = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

# What native code writes to fd 2 below ERROR: absl/glog and torch's own handler ("I0000 00:00:1796034652.485
# 7171 port.cc:153] ...", "W1130 10:31:07.532000 7168 torch/utils/_pytree.py:630] ..."), absl's notice before
# its first such line, and TFLite's INFO lines. Each is dropped up to its end of line wherever it starts: it often
# lands right after a progress bar, which ends with no newline.
NATIVE_CHATTER = re.compile(rb"[IW]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ [^\]\n]*\] "
                            rb"|WARNING: All log messages before absl::InitializeLog\(\) is called"
                            rb"|INFO: (?:Created TensorFlow Lite|Initialized TensorFlow Lite|Replacing \d+ out of \d+ node)")
_END = b"\x00minivlm: end of stderr relay\x00"
_PIPE_SIZE = 1 << 20  # room for native chatter written while the relay thread waits for the GIL
_HOLD_SECONDS = 0.05


class _OursOrErrors(logging.Filter):
    """Passes the SDK's own records (logger `minivlm` and below) and anything at ERROR or above."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR or record.name == "minivlm" or record.name.startswith("minivlm.")


@contextlib.contextmanager
def backend_chatter_hidden(verbose: bool = False) -> Iterator[None]:
    """Hide the backends' messages below ERROR in the block (see the module doc); `verbose` shows them all,
    INFO included. Worker processes started in the block inherit the filtered fd 2, and a build re-emits
    their log records and warnings here, so the same rules apply to them."""
    os.environ.setdefault("TQDM_DISABLE", "1")  # the backends' own progress bars would garble ours
    os.environ.setdefault("LITERT_TORCH_SHOW_PROGRESS", "n")
    root = logging.getLogger()
    if verbose:
        level = root.level
        root.setLevel(min(root.getEffectiveLevel(), logging.INFO))
        try:
            yield
        finally:
            root.setLevel(level)
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow/LiteRT C++ logs: errors only
    ours = _OursOrErrors()
    added = None if root.handlers else logging.StreamHandler()  # no handler: logging's last resort has no filter
    if added is not None:
        added.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
        root.addHandler(added)
    handlers = list(root.handlers)
    for h in handlers:
        h.addFilter(ours)
    try:
        with warnings.catch_warnings(), _native_chatter_dropped():
            warnings.filterwarnings("ignore")
            warnings.filterwarnings("default", module=r"minivlm(\.|$)")
            yield
    finally:
        for h in handlers:
            h.removeFilter(ours)
        if added is not None:
            root.removeHandler(added)


@contextlib.contextmanager
def _native_chatter_dropped() -> Iterator[None]:
    """fd 2 becomes a pipe that a thread copies to the real stderr, dropping NATIVE_CHATTER lines."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    sys.stderr.flush()
    real = os.dup(2)
    read, write = os.pipe()
    with contextlib.suppress(AttributeError, OSError):
        fcntl.fcntl(write, fcntl.F_SETPIPE_SZ, _PIPE_SIZE)
    os.dup2(write, 2)
    relay = threading.Thread(target=_relay, args=(read, real), name="minivlm-stderr", daemon=True)
    relay.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(real, 2)
        os.write(write, _END)  # everything written before it is on the terminal once the relay reaches it
        relay.join(10)
        if not relay.is_alive():
            for fd in (read, write, real):
                os.close(fd)


def _relay(source: int, sink: int) -> None:
    dropping = False  # in a chatter line whose end has not arrived yet
    partial = b""  # the unfinished last line, held back briefly: C stdio writes "INFO: " and its message apart
    while True:
        ready = select.select([source], [], [], _HOLD_SECONDS if partial else None)[0]
        chunk = os.read(source, _PIPE_SIZE) if ready else b""
        end = chunk.find(_END)
        last = end >= 0 or (ready and not chunk)
        *lines, partial = (partial + (chunk if end < 0 else chunk[:end])).split(b"\n")
        pieces = [line + b"\n" for line in lines]
        if not ready or last:  # nothing more came: show the unfinished line (a progress bar, a prompt) as it is
            pieces.append(partial)
            partial = b""
        kept = bytearray()
        for piece in pieces:
            if dropping:
                dropping = not piece.endswith(b"\n")
                continue
            match = NATIVE_CHATTER.search(piece)
            kept += piece if match is None else piece[:match.start()]
            dropping = match is not None and not piece.endswith(b"\n")
        view = memoryview(kept)
        while view:
            view = view[os.write(sink, view):]
        if last:
            return


@contextlib.contextmanager
def signals_interrupt() -> Iterator[None]:
    """SIGINT, SIGTERM and SIGHUP raise `Interrupted` in the block, once: a second Ctrl-C while the work
    cleans up is ignored rather than breaking the clean-up."""
    received: list[int] = []

    def interrupt(signum, frame):
        if received:
            return
        received.append(signum)
        raise Interrupted(signum)

    old = {s: signal.signal(s, interrupt) for s in TERMINATING}
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)



class ConversionBars:
    """One progress bar per graph on stderr, advancing one step per conversion stage (several at once when
    graphs convert in parallel)."""

    def __init__(self) -> None:
        from tqdm import tqdm

        self._tqdm = tqdm
        self._bars: dict[str, tuple[object, tuple[str, ...]]] = {}

    def stage(self, message: str) -> None:
        self._tqdm.write(message, file=sys.stderr)

    def graph_started(self, name: str, steps: tuple[str, ...]) -> None:
        bar = self._tqdm(total=len(steps), desc=f"{name:<14}", file=sys.stderr, disable=False, leave=True,
                         bar_format="{desc} {bar:20} {n_fmt}/{total_fmt} {postfix} [{elapsed}]")
        self._bars[name] = (bar, steps)

    def graph_step(self, name: str, step: str) -> None:
        bar, steps = self._bars[name]
        bar.update(steps.index(step) - bar.n)
        bar.set_postfix_str(step)

    def graph_done(self, result) -> None:
        bar, _ = self._bars.pop(result.name)
        bar.update(bar.total - bar.n)
        bar.set_postfix_str("done")
        bar.close()

    def close(self) -> None:
        """Close the bars of graphs that never finished (the build stopped)."""
        for bar, _ in self._bars.values():
            bar.close()
        self._bars.clear()

__all__ = ["ConversionBars", "NATIVE_CHATTER", "TERMINATING", "backend_chatter_hidden", "signals_interrupt"]
