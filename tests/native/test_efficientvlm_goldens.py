"""tests/golden_efficientvlm is what sdk/native/tools/make_efficientvlm_goldens.py writes from python_ref: the same
files, JSON equal, integer arrays equal, float arrays within 1e-5 (torch's float results may move by an ulp with
the thread count or CPU). Regenerate it with that script after changing python_ref's EfficientVLM."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
COMMITTED = REPO / "tests" / "golden_efficientvlm"
SCRIPT = REPO / "sdk" / "native" / "tools" / "make_efficientvlm_goldens.py"
FLOAT_TOL = 1e-5  # float32 graph outputs recomputed by torch: an ulp or two, never more


def _arrays(index: object, found: dict[str, dict]) -> dict[str, dict]:
    """Every {"file", "dtype", "shape"} entry of a goldens index, by file."""
    if isinstance(index, dict):
        if isinstance(index.get("file"), str):
            found[index["file"]] = index
        for value in index.values():
            _arrays(value, found)
    elif isinstance(index, list):
        for value in index:
            _arrays(value, found)
    return found


def test_efficientvlm_goldens_are_regenerated(tmp_path):
    out = tmp_path / "golden_efficientvlm"
    subprocess.run([sys.executable, str(SCRIPT), str(out)], check=True, timeout=600)
    fresh = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert fresh == sorted(p.relative_to(COMMITTED).as_posix() for p in COMMITTED.rglob("*") if p.is_file())
    for name in ("manifest.json", "vocabularies.json", "vocab.txt"):
        assert (out / name).read_bytes() == (COMMITTED / name).read_bytes(), f"{name} is stale: run {SCRIPT.name}"
    index = json.loads((out / "golden" / "index.json").read_text(encoding="utf-8"))
    entries = _arrays(index, {})
    for rel, entry in entries.items():
        dtype = np.dtype(entry["dtype"]).newbyteorder("<")
        new = np.frombuffer((out / "golden" / rel).read_bytes(), dtype=dtype)
        old = np.frombuffer((COMMITTED / "golden" / rel).read_bytes(), dtype=dtype)
        if dtype.kind == "f":
            np.testing.assert_allclose(new, old, rtol=0, atol=FLOAT_TOL, err_msg=rel)
        else:
            assert np.array_equal(new, old), f"{rel} differs: run {SCRIPT.name}"
    committed = json.loads((COMMITTED / "golden" / "index.json").read_text(encoding="utf-8"))
    assert _strip_files(committed) == _strip_files(index)


def _strip_files(value: object) -> object:
    """The index without its arrays' file entries (compared above)."""
    if isinstance(value, dict):
        return {k: _strip_files(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_strip_files(v) for v in value]
    return value


def test_efficientvlm_goldens_are_small():
    for path in COMMITTED.rglob("*"):
        assert not path.is_file() or path.stat().st_size < 100_000, f"{path} is {path.stat().st_size} bytes"
