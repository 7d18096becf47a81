"""What every target shares: the targets and their options, graph specs from real inputs, the manifest, and
the atomic build folder (docs/ARCHITECTURE.md §6).

`build` is the one entry point: it traces the reference pipeline on real images, hands each graph to the
target's `convert_graph`, writes vocabularies, goldens and `manifest.json` (with the sha256 of every file)
into a temporary folder beside the destination, and renames it into place only when all of it exists.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import importlib
import importlib.metadata
import importlib.util
import json
import logging
import logging.handlers
import multiprocessing
import os
import pickle
import platform
import queue
import shutil
import signal
import sys
import threading
import time
import warnings
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch import nn

from minivlm.python_ref.errors import ConversionError
from minivlm.python_ref.fusion import MASK_VALUE
from minivlm.python_ref.pipeline import GRAPH_NAMES, Pipeline
from minivlm.python_ref.tokenizer import SPECIAL_TOKENS, Tokenizer

from .atomic import TERMINATING, new_folder, normal_modes, replace_folder, signals_deferred
from .fp16_range import RANGE_FILE, check_specs
from .goldens import write_goldens
from .samples import Trace, calibration_images, golden_images, trace
from .targets import TARGETS, BuildOptions, resolve_options
from .tolerances import tolerances_for

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
MANIFEST_DIGEST = "manifest_sha256"  # the manifest's own checksum, over every other entry (see manifest_digest)
VOCAB_FILE = "vocab.txt"
VOCABULARIES_FILE = "vocabularies.json"
GOLDEN_DIR = "golden"
TOOLS = ("minivlm", "torch", "executorch", "coremltools", "litert-torch", "ai-edge-litert", "ai-edge-quantizer",
         "torchao", "numpy")


# --- graph specs ---------------------------------------------------------------------------------------------

# Key/value stacks are (L, B, heads, T, head_dim): their batch axis is 1, every other tensor's is 0.
KV_STACKS = frozenset({"prefix_keys", "prefix_values", "cache_keys", "cache_values", "new_keys", "new_values"})


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]
    dtype: str  # torch dtype name: float32, int64

    @property
    def batch_axis(self) -> int:
        return 1 if self.name in KV_STACKS else 0

    def as_json(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype, "batch_axis": self.batch_axis}


def _tensor_spec(name: str, t: torch.Tensor) -> TensorSpec:
    return TensorSpec(name, tuple(t.shape), str(t.dtype).removeprefix("torch."))


@dataclass(frozen=True)
class GraphSpec:
    """One graph to convert: the eager module, its I/O, a real example input and every real input seen."""

    name: str
    module: nn.Module
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    example_inputs: tuple[torch.Tensor, ...]
    calibration: tuple[tuple[torch.Tensor, ...], ...]

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.inputs)

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.outputs)


def graph_specs(pipeline: Pipeline, traces: list[Trace], calibration: list[Trace]) -> list[GraphSpec]:
    """The six graphs with example inputs from the first traced image (a photo). `caption_step` takes its
    second call, whose cache already holds a token, so export never sees only the empty-cache special case."""
    specs = []
    for name, module in pipeline.graphs.modules().items():
        in_names, out_names = module.input_names, module.output_names
        calls = traces[0].calls[name]
        example_in, example_out = calls[1] if name == "caption_step" and len(calls) > 1 else calls[0]
        seen = [ins for tr in calibration for ins, _ in tr.calls[name]]
        shapes = {tuple(tuple(t.shape) for t in ins) for ins in seen}
        assert len(shapes) == 1, f"{name} was called with several input shapes {shapes}: graphs must be static"
        specs.append(GraphSpec(
            name, module.eval(),
            tuple(_tensor_spec(n, t) for n, t in zip(in_names, example_in, strict=True)),
            tuple(_tensor_spec(n, t) for n, t in zip(out_names, example_out, strict=True)),
            example_in, tuple(seen),
        ))
    return specs


# --- results and progress ------------------------------------------------------------------------------------


@dataclass
class GraphBuild:
    """What a target made of one graph.

    `path` is relative to the build folder (a file, or a folder for `.mlpackage`). `inputs`/`outputs` are
    the graph's TensorSpec JSON plus what the runtime calls and stores each tensor as (`runtime_name`,
    `runtime_dtype`), in the graph's order. `ops` counts delegated vs not, or None where it does not apply.
    """

    name: str
    path: str
    inputs: list[dict]
    outputs: list[dict]
    ops_delegated: int | None = None
    ops_other: int | None = None
    seconds: float = 0.0
    size_bytes: int = 0
    details: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict:
        return {"file": self.path, "inputs": self.inputs, "outputs": self.outputs,
                "ops": {"delegated": self.ops_delegated, "not_delegated": self.ops_other},
                "size_bytes": self.size_bytes, "convert_seconds": round(self.seconds, 2), **self.details}


def runtime_io(specs: tuple[TensorSpec, ...], names: list[str] | None = None,
               dtypes: list[str] | None = None) -> list[dict]:
    """Manifest I/O entries: the graph's spec plus the runtime's name and dtype of each tensor."""
    names = names or [s.name for s in specs]
    dtypes = dtypes or [s.dtype for s in specs]
    return [{**s.as_json(), "runtime_name": n, "runtime_dtype": d} for s, n, d in zip(specs, names, dtypes, strict=True)]


class Progress:
    """Callbacks to follow a build; the default does nothing (library code never prints)."""

    def stage(self, message: str) -> None:
        """A build-wide stage starts (tracing, goldens, manifest)."""

    def graph_started(self, name: str, steps: tuple[str, ...]) -> None:
        """Conversion of one graph starts; it will report `steps` in this order."""

    def graph_step(self, name: str, step: str) -> None:
        """One of the graph's steps starts."""

    def graph_done(self, result: GraphBuild) -> None:
        """The graph is written."""


@dataclass
class BuildReport:
    """A finished build: where it is, what it holds, and how long it took."""

    path: Path
    options: BuildOptions
    model: str
    graphs: list[GraphBuild]
    seconds: float
    golden_bytes: int
    manifest: dict


# --- atomic build folder --------------------------------------------------------------------------------------

# Files that tools add to a finished build (`minivlm parity` writes its report, atomically through a
# `.parity_report.json.*` temporary file): `--force` may replace a build that holds them.
ADDED_LATER = ("parity_report.json",)


class Interrupted(BaseException):
    """A termination signal (SIGTERM, SIGHUP, SIGINT) turned into an exception, so that a build unwinds and
    removes what it started; `signum` is the signal."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _special_folder(dest: Path) -> str | None:
    """What `dest` is if it is a folder no build may replace: the root, home or current folder, or a parent
    of the last two."""
    real = dest.resolve()
    home, cwd = Path.home().resolve(), Path.cwd().resolve()
    if real == Path(real.anchor):
        return "the root folder"
    if real == cwd:
        return "the current folder"
    if real == home:
        return "the home folder"
    if real in cwd.parents or real in home.parents:
        return f"a parent of the {'current' if real in cwd.parents else 'home'} folder"
    return None


def foreign_entry(folder: Path, listed: set[str], allowed: Callable[[str], bool] = lambda rel: False) -> str | None:
    """The first entry of `folder` (sorted, top-down) that is neither a file in `listed` (POSIX paths relative
    to `folder`) nor a folder on the way to one, nor a file `allowed` accepts; None when there is none.
    Symbolic links and special files are always foreign: no writer of this SDK makes them."""
    folders = {p for rel in listed for p in Path(rel).parents if p != Path(".")}
    unreadable: list[OSError] = []
    for root, dirs, files in os.walk(folder, onerror=unreadable.append):
        if unreadable:
            break
        here = Path(root).relative_to(folder)
        for name in sorted(files + dirs):
            path, rel = Path(root) / name, (here / name).as_posix()
            if name in dirs:
                if path.is_symlink() or Path(rel) not in folders:
                    return rel + "/"
            elif path.is_symlink() or not path.is_file() or not (rel in listed or allowed(rel)):
                return rel
        dirs.sort()
    if unreadable:  # a folder we cannot list may hold anything
        return Path(unreadable[0].filename).relative_to(folder).as_posix() + "/"
    return None


def _not_a_build(dest: Path) -> str | None:
    """Why `--force` may not replace the existing folder `dest`, or None: it may if it is empty, or if its
    manifest.json is a build manifest whose `files` (plus the files tools add later) cover all it holds."""
    try:
        if not any(dest.iterdir()):
            return None
    except OSError as err:
        return f"cannot read {dest}: {err.strerror or err}; --force only replaces a folder minivlm-convert wrote"
    try:
        manifest = json.loads((dest / MANIFEST).read_text(encoding="utf-8"))
        files = manifest["files"] if manifest.get("schema_version") == SCHEMA_VERSION else None
        listed = (set(files) if isinstance(files, dict) and all(isinstance(k, str) for k in files)
                  and isinstance(manifest.get("graphs"), dict) else None)
    except (OSError, ValueError, AttributeError, TypeError):
        listed = None
    if listed is None:
        first = MANIFEST if (dest / MANIFEST).exists() else foreign_entry(dest, set())
        why = f"{first} is not a minivlm build manifest" if first == MANIFEST else f"it has no {MANIFEST} and holds {first}"
    else:
        later = lambda rel: rel in ADDED_LATER or any(rel.startswith(f".{n}.") for n in ADDED_LATER)  # noqa: E731
        first = foreign_entry(dest, listed | {MANIFEST}, later)
        if first is None:
            return None
        why = f"{first} is not one of the files in its {MANIFEST}"
    return f"{dest} is not a build folder ({why}); --force only replaces a folder minivlm-convert wrote, so nothing was touched"


def _check_destination(dest: Path, force: bool, replaceable: Callable[[Path], str | None] = _not_a_build) -> None:
    if dest.is_symlink() or (dest.exists() and not dest.is_dir()):
        raise ConversionError(f"{dest} exists and is not a folder; choose another --out")
    if not dest.exists():
        return
    special = _special_folder(dest)
    if special:
        raise ConversionError(f"{dest} is {special}; --out must name a folder of its own for the build")
    if not force:
        raise ConversionError(f"{dest} already exists; pass --force to replace it")
    refused = replaceable(dest)
    if refused:
        raise ConversionError(refused)


@contextlib.contextmanager
def _fatal_signals_unwind() -> Iterator[None]:
    """SIGTERM and SIGHUP, where they would kill the process outright (their default action), first unwind
    the block (so a build removes its temporary folder and stops its workers) and then kill it as before.
    Handlers a caller installed are left alone (the CLI installs its own)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    mine = [s for s in TERMINATING if s != signal.SIGINT and signal.getsignal(s) == signal.SIG_DFL]

    def unwind(signum, frame):
        raise Interrupted(signum)

    for s in mine:
        signal.signal(s, unwind)
    try:
        yield
    except Interrupted as err:
        if err.signum not in mine:
            raise
        for s in mine:
            signal.signal(s, signal.SIG_DFL)
        signal.raise_signal(err.signum)  # dies here, as it would have without the block
        raise
    finally:
        for s in mine:
            signal.signal(s, signal.SIG_DFL)


def _lock(dest: Path) -> int:
    """Take the lock on building `dest`: flock on `.<name>.lock` beside it (see `_unlock`). A second build of
    the same folder fails at once instead of racing the first to the final rename."""
    path = _lock_path(dest)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ConversionError(f"{dest} is being built by another process right now (it holds {path}); "
                                  "wait for it to finish or choose another --out") from None
        try:  # a holder removes the file before unlocking it: make sure we locked the file that is there now
            current = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            current = False
        if current:
            return fd
        os.close(fd)


def _unlock(dest: Path, fd: int) -> None:
    """Remove the lock file, then release it (in this order: see the check in `_lock`)."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(_lock_path(dest))
    os.close(fd)


def _lock_path(dest: Path) -> Path:
    return dest.parent / f".{dest.name}.lock"


@contextlib.contextmanager
def atomic_directory(dest: Path, *, force: bool = False,
                     replaceable: Callable[[Path], str | None] = _not_a_build) -> Iterator[Path]:
    """A temporary folder beside `dest` that becomes `dest` only if the block completes.

    Refuses an existing `dest` unless `force`, and even then refuses the root, home or current folder and
    any folder `replaceable` rejects (default: anything but an empty folder or a build whose manifest lists
    every file in it); with `force` the old folder is removed only after the new one is in place. Only one
    process at a time may build `dest` (a `.<name>.lock` beside it). Any exception, KeyboardInterrupt and
    `Interrupted` included, removes the temporary folder, the lock file and any parent folders this call
    created. The result has the modes new files and folders get under the process umask.
    """
    dest = Path(dest)
    _check_destination(dest, force, replaceable)  # before touching anything
    created = [p for p in (dest.parent, *dest.parent.parents) if not p.exists()]
    try:
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            lock = _lock(dest)
        except OSError as err:
            raise ConversionError(f"cannot write a build under {dest.parent}: {err.strerror or err}") from None
        try:
            _check_destination(dest, force, replaceable)  # again: a build may have finished just before the lock
            tmp = new_folder(dest.parent, f".{dest.name}.partial-")
            try:
                yield tmp
                normal_modes(tmp)
                with signals_deferred():
                    _check_destination(dest, force, replaceable)  # something else may have appeared meanwhile
                    replace_folder(tmp, dest)
            except BaseException:
                with signals_deferred():
                    shutil.rmtree(tmp, ignore_errors=True)
                raise
        finally:
            _unlock(dest, lock)
    except BaseException:
        _remove_empty(created)
        raise


def _remove_empty(folders: list[Path]) -> None:
    for folder in folders:  # deepest first
        with contextlib.suppress(OSError):
            folder.rmdir()


# --- manifest ------------------------------------------------------------------------------------------------


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def manifest_digest(manifest: dict) -> str:
    """sha256 of the manifest's canonical JSON (sorted keys, no spaces) without its `manifest_sha256` entry:
    stored in the manifest, it makes an edit of manifest.json after the build as visible as an edit of a file."""
    body = json.loads(json.dumps({k: v for k, v in manifest.items() if k != MANIFEST_DIGEST}))  # as read back
    text = json.dumps(body, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def file_hashes(folder: Path) -> dict[str, str]:
    """sha256 of every file under `folder` except the manifest, by POSIX relative path, sorted."""
    files = (p for p in sorted(folder.rglob("*")) if p.is_file())
    return {p.relative_to(folder).as_posix(): sha256_file(p) for p in files if p.relative_to(folder).as_posix() != MANIFEST}


def tool_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version(), "platform": platform.platform()}
    for name in TOOLS:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _manifest(pipeline: Pipeline, model_name: str, source: str, options: BuildOptions,
              graphs: list[GraphBuild], extra: dict) -> dict:
    cfg, tok = pipeline.cfg, pipeline.tokenizer
    tee, fusion = cfg.tee, cfg.fusion
    return {
        "schema_version": SCHEMA_VERSION,
        "model": {"name": model_name, "preset": cfg.name, "source": source, "config": dataclasses.asdict(cfg)},
        "target": options.target,
        "delegate": options.delegate,
        "precision": options.precision,
        "compute_units": options.compute_units,
        **extra,
        "graph_order": list(GRAPH_NAMES),
        "graphs": {g.name: g.as_json() for g in graphs},
        "preprocessing": {
            "input": "uint8 RGB (H, W, 3)", "size": tee.image_size, "letterbox": "top-left",
            "scale": "size / max(H, W)", "resized": "floor(H*scale + 0.5) x floor(W*scale + 0.5)",
            "resample": "bilinear, half-pixel centres, no antialias, on float32 0..255",
            "normalise": "(v / 255 - mean) / std", "mean": list(tee.pixel_mean), "std": list(tee.pixel_std),
            "padding": "0 after normalisation", "layout": "NCHW float32",
        },
        "tokenizer": {
            "vocab_file": VOCAB_FILE, "vocab_size": tok.vocab_size, "kind": "BERT uncased WordPiece",
            "lowercase": True, "strip_accents": True, "max_input_chars_per_word": 100,
            "specials": {t: _special_id(tok, t) for t in SPECIAL_TOKENS},
            "special_strings_in_text": "not matched (typed '[SEP]' is three tokens)",
        },
        "vocabularies_file": VOCABULARIES_FILE,
        "fusion_layout": {"max_text_len": fusion.max_text_len, "max_text_tags_len": fusion.max_text_tags_len,
                          "max_regions": fusion.max_regions, "region_dim": fusion.region_dim,
                          "attention_mask_value": MASK_VALUE},
        "postprocessing": {
            "rpn": dataclasses.asdict(tee.rpn), "roi_head": dataclasses.asdict(tee.roi_head),
            "region_geometry": "[x1/W, y1/H, x2/W, y2/H, w/W, h/H] in original-image pixels",
            "caption": {"max_caption_tokens": fusion.max_caption_tokens, "decoding": "greedy (argmax) or beam search",
                        "stop": "[SEP]"},
            "match": "softmax(match_logits)[1]", "answer": "argmax(answer_logits)",
        },
        "tolerances": tolerances_for(options.target, options.precision),
        "tools": tool_versions(),
        "golden_dir": GOLDEN_DIR,
    }


def _special_id(tok: Tokenizer, token: str) -> int:
    return {"[PAD]": tok.pad_id, "[UNK]": tok.unk_id, "[CLS]": tok.cls_id, "[SEP]": tok.sep_id, "[MASK]": tok.mask_id}[token]


def _write_vocabularies(pipeline: Pipeline, folder: Path) -> None:
    tok = pipeline.tokenizer
    lines = [tok.id_to_token(i) for i in range(tok.vocab_size)]
    (folder / VOCAB_FILE).write_text("\n".join(lines) + "\n", encoding="utf-8")
    vocab = dataclasses.asdict(pipeline.vocab)
    (folder / VOCABULARIES_FILE).write_text(json.dumps(vocab, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def _size(path: Path) -> int:
    return path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


# --- converting the graphs: in this process, or in worker processes -------------------------------------------


def _convert_serial(target, specs: list[GraphSpec], options: BuildOptions, folder: Path,
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
            raise _graph_failed(err) from err
        result.seconds = time.perf_counter() - t0
        result.size_bytes = _size(folder / result.path)
        graphs.append(result)
        progress.graph_done(result)
    return graphs


def _graph_failed(err: Exception) -> ConversionError:
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
    result = target.convert_graph(spec, options, Path(folder), lambda step: _worker_events.put(("step", spec.name, step)))
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


class _Workers:
    """Processes converting graphs in parallel. They start (and import torch and the backend) as soon as
    this exists, so that happens while the parent traces the reference; spawned, because fork is unsafe
    with torch's threads. Their log records and warnings are re-emitted here; they ignore SIGINT and SIGHUP
    and are terminated by `close(abort=True)`."""

    def __init__(self, jobs: int, target) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.target = target
        self.events = ctx.Queue()
        self.warned: dict = {}  # the registry of warnings re-emitted here, so two workers' copies show once
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
                meanwhile: Callable[[], Any]) -> tuple[list[GraphBuild], Any]:
        """Convert every graph, longest first; run `meanwhile()` here while the workers convert. Returns the
        builds in `specs` order and what `meanwhile` returned."""
        done: dict[str, GraphBuild] = {}
        started: set[str] = set()
        order = sorted(specs, key=lambda s: s.name not in ("tee_stage1", "caption_step"))
        # Pickled here, by value: the pool's own pickler would share tensors through file descriptors that this
        # process serves from a thread, which prints a traceback when a worker is terminated mid-transfer.
        pending = {self.pool.submit(_worker_convert, self.target.__name__, pickle.dumps(s, pickle.HIGHEST_PROTOCOL), options,
                                    str(folder)) for s in order}
        side = meanwhile()
        while pending:
            finished, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
            self._drain(progress, done, started)
            for future in finished:
                try:
                    result = future.result()
                except BrokenProcessPool as err:
                    raise ConversionError(f"a conversion worker process died ({err}); rerun with --jobs 1 --verbose "
                                          "to see why") from None
                except ConversionError:
                    raise
                except Exception as err:  # a backend's own exception from a worker: one line, not a traceback
                    raise _graph_failed(err) from err
                result.size_bytes = _size(folder / result.path)
                if result.name not in started:
                    progress.graph_started(result.name, self.target.steps(options))
                done[result.name] = result
                progress.graph_done(result)
        self._drain(progress, done, started)
        return [done[s.name] for s in specs], side

    def _drain(self, progress: Progress, done: dict, started: set) -> None:
        while True:
            try:
                kind, name, arg = self.events.get_nowait()
            except queue.Empty:
                return
            if kind == "log":
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


# --- the build -----------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _torch_threads(n: int | None) -> Iterator[None]:
    """torch's intra-op threads set to `n` inside the block (None: unchanged), restored after.

    While worker processes import and convert on every core, the parent's OpenMP threads spin-wait for
    cores they do not get: tracing 4 images took 33 s instead of 0.7 s next to two importing workers."""
    if n is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def load_target(options: BuildOptions):
    """The converter module of a target, after checking that its backend is installed. The check does not
    import the backend (coremltools alone takes ~10 s): the conversions do, here or in worker processes."""
    module = importlib.import_module(options.spec.module)
    for name in module.BACKEND_MODULES:
        if importlib.util.find_spec(name.split(".")[0]) is None:
            raise ConversionError(f"the {options.target} target needs the {name.split('.')[0]} package, which is not installed")
    return module


def build(pipeline: Pipeline, *, model_name: str, source: str, options: BuildOptions, out: str | Path,
          force: bool = False, progress: Progress | None = None, jobs: int = 1) -> BuildReport:
    """Convert `pipeline`'s six graphs for `options` into the self-contained folder `out` (see module doc).

    `jobs` > 1 converts that many graphs at once in worker processes (conversion is single-threaded Python,
    so on a 2-core machine two workers nearly halve the time); 1 converts in this process.
    """
    if pipeline.model is None:
        raise ConversionError("a build needs the eager reference model (Pipeline.from_model), not runtime graphs")
    progress = progress or Progress()
    started = time.perf_counter()
    with _fatal_signals_unwind(), atomic_directory(Path(out), force=force) as tmp:  # checks `out` before slow work
        target = load_target(options)
        workers = None
        try:
            if jobs > 1:
                workers = _Workers(min(jobs, len(GRAPH_NAMES)), target)
            # The workers take every core: the parent traces and writes goldens on one thread.
            with _torch_threads(1 if workers is not None else None):
                progress.stage(f"tracing the reference pipeline on {len(golden_images())} real images")
                traces = [trace(pipeline, s) for s in golden_images()]
                calibration = traces
                if any(target.calibrates(name, options) for name in GRAPH_NAMES):
                    progress.stage("tracing calibration images for int8")
                    calibration = traces + [trace(pipeline, s) for s in calibration_images()[len(traces):]]
                specs = graph_specs(pipeline, traces, calibration)
                progress.stage(f"fp16 range of every tensor on {len(calibration)} calibration images")
                ranges = check_specs(specs, len(calibration))
                # Keep every traced input only where int8 calibrates on them (less to pickle to worker processes).
                specs = [s if target.calibrates(s.name, options) else dataclasses.replace(s, calibration=s.calibration[:1])
                         for s in specs]

                def vocabularies_and_goldens() -> int:
                    _write_vocabularies(pipeline, tmp)
                    io_names = {s.name: (s.input_names, s.output_names) for s in specs}
                    return write_goldens(traces, io_names, pipeline, tmp / GOLDEN_DIR)

                if workers is None:
                    graphs = _convert_serial(target, specs, options, tmp, progress)
                    progress.stage("writing vocabularies, goldens and manifest")
                    golden_bytes = vocabularies_and_goldens()
                else:
                    graphs, golden_bytes = workers.convert(specs, options, tmp, progress, vocabularies_and_goldens)
        except BaseException:
            if workers is not None:
                with signals_deferred():
                    workers.close(abort=True)
            raise
        if workers is not None:
            workers.close()
        (tmp / RANGE_FILE).write_text(json.dumps(ranges.table(), indent=0) + "\n", encoding="utf-8")
        manifest = _manifest(pipeline, model_name, source, options, graphs, target.manifest_extra(options))
        manifest["fp16_range"] = ranges.summary()
        manifest["files"] = file_hashes(tmp)
        manifest[MANIFEST_DIGEST] = manifest_digest(manifest)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return BuildReport(Path(out), options, model_name, graphs, time.perf_counter() - started, golden_bytes, manifest)


__all__ = [
    "ADDED_LATER",
    "BuildOptions",
    "BuildReport",
    "GraphBuild",
    "GraphSpec",
    "Interrupted",
    "MANIFEST",
    "MANIFEST_DIGEST",
    "Progress",
    "TARGETS",
    "TensorSpec",
    "atomic_directory",
    "build",
    "file_hashes",
    "foreign_entry",
    "graph_specs",
    "manifest_digest",
    "new_folder",
    "normal_modes",
    "replace_folder",
    "resolve_options",
    "runtime_io",
    "sha256_file",
]
