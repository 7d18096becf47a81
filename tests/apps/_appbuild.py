"""Build helpers of the demo-app checks: compile the native core once per session as position-independent
objects (for the JNI library and the iOS shim link test).

The core is compiled straight from sdk/native/src/*.cpp with the system g++, so these tests depend on the
core's sources and public header only, not on its CMake layout. Objects are cached in
~/.cache/minivlm/native-objects/<hash of sources, flags and compiler> so that a second run links at once.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import os
import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
NATIVE = REPO / "sdk" / "native"
# -ffp-contract=off as sdk/native/CMakeLists.txt: host steps repeat python_ref's float32 operations one by one.
CORE_FLAGS = ["-std=c++17", "-O2", "-fPIC", "-Wall", "-Wextra", "-ffp-contract=off"]
CACHE = Path(os.environ.get("MINIVLM_CACHE", Path.home() / ".cache" / "minivlm"))


def run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    """Run a build command; on failure show its output in the assertion."""
    proc = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


def compile_core(cxx: str) -> list[Path]:
    """The core's sources compiled to -fPIC objects (cached by content)."""
    sources = core_sources()
    assert sources, f"no core sources in {NATIVE / 'src'}"
    key = hashlib.sha256()
    version = subprocess.run([cxx, "--version"], capture_output=True, text=True).stdout
    key.update(version.encode() + " ".join(CORE_FLAGS).encode())
    for path in [*sources, *sorted((NATIVE / "src").glob("*.h*")), *sorted((NATIVE / "include").rglob("*.h"))]:
        key.update(path.name.encode() + path.read_bytes())
    out = CACHE / "native-objects" / key.hexdigest()[:16]
    objects = [out / (s.stem + ".o") for s in sources]
    if all(o.is_file() for o in objects):
        return objects
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)

    def compile_one(source: Path) -> None:
        run([cxx, *CORE_FLAGS, "-I", str(NATIVE / "include"), "-I", str(NATIVE / "src"), "-c", str(source),
             "-o", str(tmp / (source.stem + ".o"))])

    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:  # the machines have 2 cores
        list(pool.map(compile_one, sources))
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)  # complete or absent: an interrupted build never looks cached
    return objects


def core_sources() -> list[Path]:
    return sorted((NATIVE / "src").glob("*.cpp"))
