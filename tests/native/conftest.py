"""Fixtures of the native tests: `native_api` builds libminivlm once per session with CMake in a temporary folder
(tests off, so only the library compiles) and wraps its C API with ctypes (native_ctypes.py)."""

from __future__ import annotations

import shutil

import pytest
from native_ctypes import NativeAPI, build_native


@pytest.fixture(scope="session")
def native_api(tmp_path_factory) -> NativeAPI:
    if not (shutil.which("cmake") and (shutil.which("c++") or shutil.which("g++") or shutil.which("clang++"))):
        pytest.skip("building sdk/native needs cmake and a C++17 compiler (apt install cmake g++)")
    folder = build_native(tmp_path_factory.mktemp("native") / "shared", "-DMINIVLM_BUILD_TESTS=OFF",
                          "-DCMAKE_BUILD_TYPE=Release")
    library = next(p for p in folder.iterdir() if p.name.startswith("libminivlm") and p.suffix in (".so", ".dylib"))
    return NativeAPI(library)
