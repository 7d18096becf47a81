"""The build folder: written beside its destination and renamed into place whole, by one process at a time.

`atomic_directory(dest, force=...)` is the policy around `atomic.py`'s folder swap for anything that writes
a folder the user named: it refuses the root, home and current folder, refuses an existing folder unless
`force`, and even then only replaces a folder the SDK wrote (a build whose manifest lists every file in it,
or what the caller's `replaceable` accepts). A `.<name>.lock` beside `dest` keeps a second writer out, and
termination signals unwind the block so nothing half-written stays (docs/ARCHITECTURE.md §9).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import threading
from pathlib import Path
from typing import Callable, Iterator

from minivlm.python_ref.errors import ConversionError

from .atomic import TERMINATING, new_folder, normal_modes, replace_folder, signals_deferred
from .manifest import ADDED_LATER, MANIFEST, SCHEMA_VERSION


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
def fatal_signals_unwind() -> Iterator[None]:
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


__all__ = ["Interrupted", "atomic_directory", "fatal_signals_unwind", "foreign_entry"]
