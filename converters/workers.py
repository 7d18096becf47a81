"""Converting the graphs: one after another in this process, or in parallel in worker processes.

A target's `convert_graph` is single-threaded Python around the backend, so `Workers` runs several graphs at
once, each in a spawned process that imported torch and the backend while the parent traced the reference.
Workers report their steps, log records and warnings to the parent, which shows them; they ignore SIGINT and
SIGHUP, and the parent terminates them when a build stops.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import logging.handlers
import multiprocessing
import pickle
import queue
import signal
import sys
import threading
import time
import warnings
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from minivlm.python_ref.errors import ConversionError

from .progress import Progress
from .specs import GraphBuild, GraphSpec
from .targets import BuildOptions

END_WAIT = 10.0  # seconds to wait for a finished graph's last event (it is already on its way)


def graph_size(path: Path) -> int:
    """Bytes of a graph file, or of every file in a graph folder (`.mlpackage`, `.aimodel`)."""
    return path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def convert_serial(target, specs: list[GraphSpec], options: BuildOptions, folder: Path,
                    progress: Progress) -> list[GraphBuild]:
    graphs = []
    for spec in specs:
        progress.graph_started(spec.name, target.steps(options))
        t0 = time.perf_counter()
        try:
            result = target.convert_graph(spec, options, folder, lambda step, n=spec.name: progress.graph_step(n, step))
        except ConversionError:
            raise
        except Exception as err:  # a backend's own exception: one line, as from a worker process
            raise graph_failed(err) from err
        result.seconds = time.perf_counter() - t0
        result.size_bytes = graph_size(folder / result.path)
        graphs.append(result)
        progress.graph_done(result)
    return graphs


def graph_failed(err: Exception) -> ConversionError:
    first = (str(err).splitlines() or [""])[0]
    return ConversionError(f"a graph failed to convert: {type(err).__name__}: {first}")


_worker_events = None  # in a worker process only: the queue its steps are reported on (set by _worker_start)


class _ToParent(logging.handlers.QueueHandler):
    """A worker's log records go to the parent, whose logging configuration decides what is shown."""

    def enqueue(self, record: logging.LogRecord) -> None:
        self.queue.put_nowait(("log", record.name, record))


def _warning_to_parent(message, category, filename, lineno, file=None, line=None) -> None:
    """A worker's warnings go to the parent, whose warning filters decide what is shown."""
    try:
        pickle.dumps(category)
    except Exception:  # a category defined where the parent cannot import it
        category = UserWarning
    module = next((name for name, m in list(sys.modules.items()) if getattr(m, "__file__", None) == filename), None)
    _worker_events.put(("warning", None, (str(message), category, filename, lineno, module)))


def _worker_start(events, module_name: str, log_level: int) -> None:
    global _worker_events
    _worker_events = events
    # Ctrl-C and a closed terminal reach every process of the foreground group: the parent alone decides,
    # and terminates the workers (they would otherwise print tracebacks and finish their graph first).
    for s in (signal.SIGINT, signal.SIGHUP):
        signal.signal(s, signal.SIG_IGN)
    root = logging.getLogger()
    root.handlers[:] = [_ToParent(events)]
    root.setLevel(log_level)
    warnings.resetwarnings()  # every warning once per place; the parent's filters decide
    warnings.simplefilter("default")
    warnings.showwarning = _warning_to_parent
    torch.set_num_threads(1)  # the workers already use every core between them
    try:
        from threadpoolctl import threadpool_limits  # numpy's BLAS threads too (coremltools' passes use numpy)

        threadpool_limits(1)
    except ImportError:
        pass
    for name in importlib.import_module(module_name).BACKEND_MODULES:  # ~10 s, while the parent traces
        importlib.import_module(name)


def _worker_ready() -> None:
    """A no-op task: submitting one per worker makes the pool start them all at once."""


def _worker_convert(module_name: str, pickled_spec: bytes, options: BuildOptions, folder: str) -> GraphBuild:
    target = importlib.import_module(module_name)
    spec = pickle.loads(pickled_spec)
    _worker_events.put(("start", spec.name, target.steps(options)))
    t0 = time.perf_counter()
    try:
        result = target.convert_graph(spec, options, Path(folder), lambda step: _worker_events.put(("step", spec.name, step)))
    finally:  # after every warning and record of this graph: the parent reads up to it before the result
        _worker_events.put(("end", spec.name, None))
    result.seconds = time.perf_counter() - t0
    return result


@contextlib.contextmanager
def _ignoring(signals: tuple[int, ...]) -> Iterator[None]:
    """`signals` ignored in the block (main thread only), so that processes started in it begin with them
    ignored, before they run any code of ours."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {s: signal.signal(s, signal.SIG_IGN) for s in signals}
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


class Workers:
    """Processes converting graphs in parallel. They start (and import torch and the backend) as soon as
    this exists, so that happens while the parent traces the reference; spawned, because fork is unsafe
    with torch's threads. Their log records and warnings are re-emitted here; they ignore SIGINT and SIGHUP
    and are terminated by `close(abort=True)`."""

    def __init__(self, jobs: int, target) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.target = target
        self.events = ctx.Queue()
        self.warned: dict = {}  # the registry of warnings re-emitted here, so two workers' copies show once
        self.ended: set[str] = set()  # graphs whose conversion sent its last event
        self.pool = ProcessPoolExecutor(jobs, mp_context=ctx, initializer=_worker_start,
                                        initargs=(self.events, target.__name__, logging.getLogger().getEffectiveLevel()))
        with _ignoring((signal.SIGINT, signal.SIGHUP)):  # a few ms: the workers start with them ignored
            for _ in range(jobs):
                self.pool.submit(_worker_ready)

    def close(self, *, abort: bool = False) -> None:
        """Stop the workers before the caller removes their folder: wait for them, or with `abort` terminate
        them at once (a graph in the middle of a backend's C++ pass would otherwise finish first)."""
        if abort:
            # ProcessPoolExecutor cannot stop a running task (terminate_workers() is Python 3.14+)
            processes = list((getattr(self.pool, "_processes", None) or {}).values())
            for p in processes:
                p.terminate()
            for p in processes:
                p.join(5)
                if p.is_alive():
                    p.kill()
                    p.join()
        self.pool.shutdown(wait=not abort, cancel_futures=True)
        self.events.close()

    def convert(self, specs: list[GraphSpec], options: BuildOptions, folder: Path, progress: Progress,
                meanwhile: Callable[[], Any], first: tuple[str, ...] = ()) -> tuple[list[GraphBuild], Any]:
        """Convert every graph, the longest ones (`first`, the family's `slowest`) first; run `meanwhile()` here
        while the workers convert. Returns the builds in `specs` order and what `meanwhile` returned."""
        done: dict[str, GraphBuild] = {}
        started: set[str] = set()
        order = sorted(specs, key=lambda s: s.name not in first)
        # Pickled here, by value: the pool's own pickler would share tensors through file descriptors that this
        # process serves from a thread, which prints a traceback when a worker is terminated mid-transfer.
        graph_of = {self.pool.submit(_worker_convert, self.target.__name__, pickle.dumps(s, pickle.HIGHEST_PROTOCOL),
                                     options, str(folder)): s.name for s in order}
        pending = set(graph_of)
        side = meanwhile()
        while pending:
            finished, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
            self._drain(progress, done, started)
            for future in finished:
                # The result comes through another pipe than the graph's warnings and records: read those first,
                # so that a failing graph's own warnings reach the caller before its error does.
                self._drain(progress, done, started, until=graph_of[future])
                try:
                    result = future.result()
                except BrokenProcessPool as err:
                    raise ConversionError(f"a conversion worker process died ({err}); rerun with --jobs 1 --verbose "
                                          "to see why") from None
                except ConversionError:
                    raise
                except Exception as err:  # a backend's own exception from a worker: one line, not a traceback
                    raise graph_failed(err) from err
                result.size_bytes = graph_size(folder / result.path)
                if result.name not in started:
                    progress.graph_started(result.name, self.target.steps(options))
                done[result.name] = result
                progress.graph_done(result)
        self._drain(progress, done, started)
        return [done[s.name] for s in specs], side

    def _drain(self, progress: Progress, done: dict, started: set, until: str | None = None) -> None:
        """Re-emit the workers' events that have arrived; with `until`, also wait (at most END_WAIT seconds)
        for the last event of that graph's conversion."""
        while until is None or until not in self.ended:
            try:
                kind, name, arg = self.events.get(timeout=END_WAIT) if until else self.events.get_nowait()
            except queue.Empty:
                return
            if kind == "end":
                self.ended.add(name)
            elif kind == "log":
                logger = logging.getLogger(name)
                if logger.isEnabledFor(arg.levelno):
                    logger.handle(arg)
            elif kind == "warning":
                message, category, filename, lineno, module = arg
                warnings.warn_explicit(message, category, filename, lineno, module, self.warned)
            elif name in done:  # a late event from a graph whose result already arrived
                continue
            elif kind == "start":
                started.add(name)
                progress.graph_started(name, arg)
            else:
                progress.graph_step(name, arg)


__all__ = ["Workers", "convert_serial", "graph_failed", "graph_size"]
