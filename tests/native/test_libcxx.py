"""The native core's ctest suite built against LLVM's libc++, the C++ standard library of the Android NDK and
Xcode (the demo apps' builds), where number parsing and other library corners differ from GCC's libstdc++ that
tests/native/test_native.py builds with."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
from native_ctypes import build_native

pytestmark = pytest.mark.native
CLANG = shutil.which("clang++")


def _libcxx_links(tmp) -> bool:
    source = tmp / "probe.cpp"
    source.write_text("#include <sstream>\nint main() { std::istringstream in(\"1\"); double v; in >> v; return 0; }\n")
    return subprocess.run([CLANG, "-stdlib=libc++", str(source), "-o", str(tmp / "probe")], capture_output=True).returncode == 0


def test_ctest_passes_with_libcxx(tmp_path):
    if not (CLANG and shutil.which("cmake") and shutil.which("ctest")):
        pytest.skip("needs clang++, cmake and ctest (apt-get install -y clang libc++-dev libc++abi-dev)")
    if not _libcxx_links(tmp_path):
        pytest.skip(f"{CLANG} cannot link -stdlib=libc++ (apt-get install -y libc++-dev libc++abi-dev)")
    folder = build_native(tmp_path / "libcxx", f"-DCMAKE_CXX_COMPILER={CLANG}", "-DCMAKE_CXX_FLAGS=-stdlib=libc++",
                          "-DCMAKE_EXE_LINKER_FLAGS=-stdlib=libc++", "-DMINIVLM_BUILD_SHARED=OFF",
                          "-DCMAKE_BUILD_TYPE=Release")
    proc = subprocess.run(["ctest", "--test-dir", str(folder), "--output-on-failure"], capture_output=True, text=True)
    summary = re.search(r"(\d+) tests failed out of (\d+)", proc.stdout)
    assert proc.returncode == 0 and summary and summary.group(1) == "0", proc.stdout[-6000:]
