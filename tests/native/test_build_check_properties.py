"""mvlm_build_verify's manifest checksum against Python's own (converters/manifest.py manifest_digest) on generated
manifests (hypothesis), through the shared library (ctypes, see conftest.py): a manifest sealed by Python verifies in
the core whatever floats, integers, strings and keys it holds, and any change of a value is refused as an edit."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from native_ctypes import MVLM_BAD_FILE, MVLM_OK  # noqa: E402
from test_reader_properties import JSON_VALUES, _lone_surrogate  # noqa: E402

from minivlm.converters.manifest import MANIFEST_DIGEST, manifest_digest  # noqa: E402

pytestmark = pytest.mark.native
FIXTURE = settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
FILES = {"model.pte": b"graph bytes", "vocab.txt": b"[PAD]\n", "vocabularies.json": b"{}"}
# Floats near the edges of repr's formats and of the doubles: powers of two (where the interval of doubles that
# read back is lopsided), the fixed/scientific switches at 1e-4 and 1e16, subnormals, the largest double.
EDGE_FLOATS = st.sampled_from([2.0 ** k for k in range(-1074, 1024, 7)] + [1e-4, 9.999999999999999e-05, 1e16,
                              9999999999999998.0, 5e-324, 2.225073858507201e-308, 1.7976931348623157e308, 0.1, 1 / 3])


def _manifest(extra) -> dict:
    manifest = {"schema_version": 1, "family": "minivlm", "target": "executorch", "delegate": "xnnpack",
                "tools": {"executorch": "1.5.1"}, "graphs": {"match": {"file": "model.pte"}},
                "tokenizer": {"vocab_file": "vocab.txt"}, "vocabularies_file": "vocabularies.json",
                "files": {name: hashlib.sha256(data).hexdigest() for name, data in FILES.items()}, "extra": extra}
    manifest[MANIFEST_DIGEST] = manifest_digest(manifest)
    return manifest


def _verify(native_api, folder: Path, manifest: dict | str) -> tuple[int, str]:
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in FILES.items():
        (folder / name).write_bytes(data)
    text = manifest if isinstance(manifest, str) else json.dumps(manifest, indent=1, ensure_ascii=False)
    (folder / "manifest.json").write_text(text, encoding="utf-8")
    status = native_api.lib.mvlm_build_verify(str(folder).encode(), b"executorch", b"1.5.0")
    return status, native_api.lib.mvlm_last_error().decode("utf-8", "replace")


@FIXTURE
@given(extra=JSON_VALUES | EDGE_FLOATS | st.lists(EDGE_FLOATS, max_size=6))
def test_a_manifest_python_sealed_verifies_in_the_core(native_api, tmp_path_factory, extra):
    hypothesis.assume(not _lone_surrogate(extra))  # no UTF-8 manifest can hold one
    status, message = _verify(native_api, tmp_path_factory.mktemp("build"), _manifest(extra))
    assert status == MVLM_OK, message


@FIXTURE
@given(value=st.floats(allow_nan=False) | st.integers(-(10**25), 10**25) | st.text(max_size=8))
def test_an_edited_value_is_refused(native_api, tmp_path_factory, value):
    hypothesis.assume(not _lone_surrogate(value))
    manifest = _manifest(value)
    changed = value + 1 if isinstance(value, int) else (value + "!" if isinstance(value, str) else
                                                        (math.nextafter(value, math.inf) if math.isfinite(value) else 0.0))
    hypothesis.assume(json.dumps(changed) != json.dumps(value))
    status, message = _verify(native_api, tmp_path_factory.mktemp("build"), {**manifest, "extra": changed})
    assert status == MVLM_BAD_FILE and "edited after the build" in message, message


def test_a_float_written_as_an_int_is_an_edit(native_api, tmp_path):
    """json.loads reads "2" as an int and "2.0" as a float: Python's digest tells them apart, so must the core's."""
    manifest = _manifest(2.0)
    text = json.dumps(manifest)
    assert '"extra": 2.0' in text
    status, message = _verify(native_api, tmp_path, text.replace('"extra": 2.0', '"extra": 2'))
    assert status == MVLM_BAD_FILE and "edited after the build" in message, message
    assert _verify(native_api, tmp_path, text.replace('"extra": 2.0', '"extra": 2.000e0'))[0] == MVLM_OK
