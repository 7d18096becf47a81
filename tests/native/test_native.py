"""The native core (sdk/native): configured and built with CMake in a temporary folder, normally and with
ASan/UBSan, and its ctest suite run on both. ctest replays the committed host goldens (tests/golden/) and a
converted build's golden/ (the session's tiny ExecuTorch build), and feeds malformed input; a last test pipes
every Unicode code point through the native tokenizer and compares with python_ref's."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from minivlm.python_ref.tokenizer import DEFAULT_VOCAB, Tokenizer

REPO = Path(__file__).resolve().parents[2]
NATIVE = REPO / "sdk" / "native"
CMAKE, CTEST = shutil.which("cmake"), shutil.which("ctest")
CXX = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")
JOBS = os.environ.get("MINIVLM_NATIVE_JOBS", "2")  # the CI machines have 2 cores
CTEST_TESTS = 11  # 5 on tests/golden/ + 5 on the build (its golden/, its files) + EfficientVLM on tests/golden_efficientvlm/

pytestmark = pytest.mark.skipif(not (CMAKE and CTEST and CXX),
                                reason="building sdk/native needs cmake, ctest and a C++17 compiler (apt install cmake g++)")


def _run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))} exited {proc.returncode}\n{proc.stdout[-6000:]}\n{proc.stderr[-4000:]}"
    return proc


def _build(folder: Path, build_folder: Path, *options: str) -> Path:
    generator = ["-G", "Ninja"] if shutil.which("ninja") else []
    started = time.perf_counter()
    _run([CMAKE, "-S", str(NATIVE), "-B", str(folder), *generator, f"-DCMAKE_CXX_COMPILER={CXX}",
          f"-DMINIVLM_BUILD_FOLDER={build_folder}", *options])
    _run([CMAKE, "--build", str(folder), "--parallel", JOBS])
    print(f"built {folder.name} in {time.perf_counter() - started:.0f} s")
    return folder


@pytest.fixture(scope="module")
def build_folder(tiny_executorch_build) -> Path:
    return tiny_executorch_build.path


@pytest.fixture(scope="module")
def native(tmp_path_factory, build_folder) -> Path:
    return _build(tmp_path_factory.mktemp("native") / "release", build_folder)


@pytest.fixture(scope="module")
def sanitized(tmp_path_factory, build_folder) -> Path:
    return _build(tmp_path_factory.mktemp("native") / "asan", build_folder, "-DMINIVLM_SANITIZE=ON",
                  "-DCMAKE_BUILD_TYPE=Debug")  # -O0: half the compile time of -O2, and the tests stay quick


def _ctest(folder: Path) -> str:
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=1:abort_on_error=1", UBSAN_OPTIONS="print_stacktrace=1")
    out = _run([CTEST, "--test-dir", str(folder), "--output-on-failure", "-V"], env=env).stdout
    summary = re.search(r"(\d+)% tests passed, (\d+) tests failed out of (\d+)", out)
    assert summary and summary.group(2) == "0" and int(summary.group(3)) == CTEST_TESTS, out[-3000:]
    for bad in ("runtime error:", "AddressSanitizer", "LeakSanitizer"):
        assert bad not in out, out[out.index(bad) - 2000:out.index(bad) + 2000]
    return out


def test_ctest_replays_goldens_and_rejects_malformed_input(native):
    out = _ctest(native)
    assert "beam-search decodes checked: 4" in out  # tests/golden/ has a beam decode per image


def test_ctest_under_address_and_undefined_behaviour_sanitizers(sanitized):
    _ctest(sanitized)


def test_ctest_replays_the_goldens_of_a_pruned_model(tmp_path_factory, tiny_pruned_executorch_build):
    """A structurally pruned fusion (caption caches of fewer heads than the model's, a layer without heads): the
    core sizes every cache from the manifest and decodes the build's recorded captions."""
    folder = _build(tmp_path_factory.mktemp("native") / "pruned", tiny_pruned_executorch_build.path)
    _ctest(folder)


def test_tokenizer_matches_python_ref_on_every_code_point(native):
    """Each code point (surrogates aside) between two letters and alone, 256 to a line, plus runs of 120."""
    tok = Tokenizer.default()
    points = [c for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF and c != 0x0A]
    lines = ["".join(f"a{chr(c)}b {chr(c)} " for c in points[i:i + 256]) for i in range(0, len(points), 256)]
    lines += ["".join(chr(c) for c in points[i:i + 120]) for i in range(0, len(points), 120)]  # combining runs, long words
    proc = subprocess.run([str(native / "tokenize_lines"), str(DEFAULT_VOCAB)], input="\n".join(lines) + "\n",
                          capture_output=True, text=True, encoding="utf-8")
    assert proc.returncode == 0, proc.stderr
    got = proc.stdout.split("\n")[:-1]
    assert len(got) == len(lines)
    for line, out in zip(lines, got):
        expected = " ".join(map(str, tok.encode(line)))
        if out != expected:
            first = next(c for c in line if " ".join(map(str, tok.encode(f"a{c}b {c} "))) != _one(native, f"a{c}b {c} "))
            pytest.fail(f"native tokenizer differs from python_ref on U+{ord(first):04X} ({first!r})")


def _one(native: Path, text: str) -> str:
    proc = subprocess.run([str(native / "tokenize_lines"), str(DEFAULT_VOCAB)], input=text + "\n", capture_output=True,
                          text=True, encoding="utf-8")
    return proc.stdout.rstrip("\n")
