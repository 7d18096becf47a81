"""The weight audit on real tiny builds (the build tier: the session's tiny TFLite and ExecuTorch fp32 builds): a
correct build passes; 1024 word-embedding values edited in the middle of `vqa`'s file, with the manifest
re-hashed so that every checksum holds, fail it with one line naming the graph and the tensor. No parity input
needs those words, so only the audit can see the edit."""

import json
import shutil

import numpy as np
import pytest

from minivlm.build_checks import verify_build
from minivlm.converters.manifest import MANIFEST, MANIFEST_DIGEST, file_hashes, manifest_digest
from minivlm.parity.weight_audit import audit_build, audit_check

EDITED = 1024


def _audit(folder, reference):
    manifest = json.loads((folder / MANIFEST).read_text())
    pipe = reference.pipeline
    return audit_build(folder, manifest, pipe.model, pipe.graphs.modules())


def _tamper_word_embeddings(folder, reference, graph_file: str) -> int:
    """Add 0.25 to EDITED consecutive values in the middle of the fp32 word-embedding table stored in
    `graph_file`, then re-hash the manifest as a forger would. Returns the byte offset edited."""
    table = reference.pipeline.model.fusion.encoder.embeddings.word_embeddings.weight.detach().numpy()
    path = folder / graph_file
    raw = bytearray(path.read_bytes())
    start = bytes(raw).find(table.astype(np.float32).tobytes()[:4096])
    assert start >= 0, f"{graph_file} does not store the word embeddings as one fp32 table"
    middle = start + (table.size // 2) * 4
    values = np.frombuffer(bytes(raw[middle:middle + 4 * EDITED]), np.float32) + np.float32(0.25)
    raw[middle:middle + 4 * EDITED] = values.tobytes()
    path.write_bytes(bytes(raw))
    manifest = json.loads((folder / MANIFEST).read_text())
    manifest["files"] = file_hashes(folder)
    manifest[MANIFEST_DIGEST] = manifest_digest(manifest)
    (folder / MANIFEST).write_text(json.dumps(manifest))
    return middle


@pytest.mark.parametrize("fixture", ["tiny_tflite_build", "tiny_executorch_build"])
def test_a_correct_build_passes_the_audit(request, tiny_reference, fixture):
    build = request.getfixturevalue(fixture)
    result = _audit(build.path, tiny_reference)
    assert result.passed, result.reason()
    assert result.matched and result.matched_bytes > 0.99 * result.bytes  # the weights are traced, not excused
    assert audit_check(result).status in ("PASS", "WARN")


@pytest.mark.parametrize("fixture, suffix", [("tiny_tflite_build", ".tflite"), ("tiny_executorch_build", ".pte")])
def test_edited_word_embeddings_with_a_rehashed_manifest_fail_the_audit(request, tmp_path, tiny_reference, fixture, suffix):
    build = request.getfixturevalue(fixture)
    folder = tmp_path / "build"
    shutil.copytree(build.path, folder)
    manifest = json.loads((folder / MANIFEST).read_text())
    _tamper_word_embeddings(folder, tiny_reference, manifest["graphs"]["vqa"]["file"])
    verify_build(folder)  # every checksum holds: the files alone cannot tell
    result = _audit(folder, tiny_reference)
    assert not result.passed
    reason = result.reason()
    assert "\n" not in reason and reason.startswith("vqa tensor") and f"vqa{suffix}" in reason, reason
    assert f"nearest fusion.encoder.embeddings.word_embeddings.weight: {EDITED} of" in reason, reason
    row = audit_check(result)
    assert row.status == "FAIL" and row.where == reason
