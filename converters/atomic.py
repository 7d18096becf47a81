"""All-or-nothing writes: a file or a folder appears complete, or not at all, and nothing else is touched.

Every writer in the SDK goes through here (docs/ARCHITECTURE.md §9):
- `atomic_file(path)` writes a file through a uniquely named temporary sibling, renamed over `path` only when
  the block completes; any exception (KeyboardInterrupt included) removes the temporary file and leaves an
  existing `path` as it was.
- `new_folder` + `replace_folder` do the same for a folder (a build, a golden set, a training checkpoint):
  `path` is at every moment either the old folder or the new one.
- What appears has the mode a new file or folder gets under the process umask (0644/0755 under 022), never
  the 0600/0700 that `tempfile` uses.

The build folder's policy (what `--force` may replace, the lock, the checks) is in `build_folder.py`.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import stat
import threading
from pathlib import Path
from typing import IO, Iterator

class FolderNotWritable(OSError):
    """The temporary file or folder of an atomic write could not be created: nothing was written. Its
    `strerror` says why (a missing folder, no permission, a read-only or full file system)."""


def _create(path: Path) -> int:
    try:
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except OSError as err:
        raise FolderNotWritable(err.errno, err.strerror, str(path.parent)) from None


TERMINATING = tuple(getattr(signal, s) for s in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, s))


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold SIGINT/SIGTERM/SIGHUP in the block, so that a signal cannot land between two renames or halfway
    through a removal; they arrive when the block ends (main thread only: elsewhere this does nothing)."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "pthread_sigmask"):
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, TERMINATING)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _temporary_name(path: Path) -> Path:
    return path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"


@contextlib.contextmanager
def atomic_file(path: str | Path, mode: str = "wb", encoding: str | None = None) -> Iterator[IO]:
    """An open file (`mode` "wb" or "w") that becomes `path` only if the block completes.

    The temporary file is a sibling of `path` (same file system, so the final rename is atomic) created with
    O_EXCL and mode 0666, which the umask reduces as for any new file. If it cannot be created this raises
    `FolderNotWritable` (the caller turns that into its own one-line error); any exception in the block
    removes it and re-raises.
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_file mode is {mode!r}, expected 'wb' or 'w'")
    path = Path(path)
    tmp = _temporary_name(path)
    fd = _create(tmp)
    try:
        with os.fdopen(fd, mode, encoding=encoding if mode == "w" else None) as file:
            yield file
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary sibling path for writers that take a file name (safetensors' `save_file`, `torch.save`),
    renamed to `path` if the block completes and removed if not; the same guarantees as `atomic_file`."""
    path = Path(path)
    tmp = _temporary_name(path)
    os.close(_create(tmp))  # reserves the name, with the umask's mode
    try:
        yield tmp
        mode = stat.S_IMODE(os.stat(tmp).st_mode)
        os.replace(tmp, path)
        os.chmod(path, mode)  # a writer that recreated the file (safetensors does) got its own mode
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def new_folder(parent: Path, prefix: str) -> Path:
    """A new, uniquely named folder in `parent` with the mode any new folder gets under the process umask
    (tempfile.mkdtemp's is always 0700)."""
    for _ in range(100):
        path = parent / f"{prefix}{secrets.token_hex(4)}"
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise FileExistsError(f"no free name for a temporary folder {prefix}* in {parent}")


def normal_modes(folder: Path) -> None:
    """Give every folder and file under `folder` the mode it would have had if made normally under the process
    umask (0755/0644 under 022): backends write some with 0700/0600. `folder` must come from `new_folder`."""
    dir_mode = stat.S_IMODE(folder.stat().st_mode)  # made with 0777 minus the umask
    file_mode = dir_mode & 0o666
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = Path(root) / name
            st = path.lstat()
            if stat.S_ISDIR(st.st_mode):
                want = dir_mode
            elif stat.S_ISREG(st.st_mode):
                want = file_mode | (dir_mode & 0o111 if st.st_mode & 0o111 else 0)
            else:
                continue
            if stat.S_IMODE(st.st_mode) != want:
                os.chmod(path, want)


def replace_folder(tmp: Path, dest: Path) -> None:
    """Rename the finished folder `tmp` to `dest`; a folder already there is moved aside first and deleted
    last, so `dest` is at every moment either the old folder or the new one."""
    with signals_deferred():
        if not dest.exists():
            os.rename(tmp, dest)
            return
        old = new_folder(dest.parent, f".{dest.name}.old-")
        os.rename(dest, old / dest.name)
        try:
            os.rename(tmp, dest)
        except BaseException:
            os.rename(old / dest.name, dest)
            shutil.rmtree(old, ignore_errors=True)
            raise
        shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def atomic_folder(dest: Path) -> Iterator[Path]:
    """A new temporary folder beside `dest` that replaces `dest` (see `replace_folder`) if the block completes
    and is removed if not. No checks of `dest`: callers that may meet a folder they did not make use
    `build_folder.atomic_directory`, which refuses one."""
    dest = Path(dest)
    tmp = new_folder(dest.parent, f".{dest.name}.partial-")
    try:
        yield tmp
        normal_modes(tmp)
        replace_folder(tmp, dest)
    except BaseException:
        with signals_deferred():
            shutil.rmtree(tmp, ignore_errors=True)
        raise


__all__ = ["FolderNotWritable", "TERMINATING", "atomic_file", "atomic_folder", "atomic_path", "new_folder", "normal_modes",
           "replace_folder", "signals_deferred"]
