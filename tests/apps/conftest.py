"""Session fixtures of the demo-app checks (tests/apps): the C++ compiler and the native core's objects."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from _appbuild import compile_core


@pytest.fixture(scope="session")
def cxx() -> str:
    path = shutil.which(os.environ.get("CXX", "g++"))
    if path is None:
        pytest.skip("no C++ compiler (g++) on PATH")
    return path


@pytest.fixture(scope="session")
def core_objects(cxx: str) -> list[Path]:
    """The core's sources compiled to -fPIC objects, once per session (and cached across runs)."""
    return compile_core(cxx)
