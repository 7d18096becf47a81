"""The weight audit of a Core AI build (the build tier: the session's tiny Core AI fp32 build, `tiny_coreai_build`):
a clean build passes with every weight traced; 1024 word-embedding values edited in the asset's bytecode, with
`main.hash` and the manifest re-hashed so that every checksum holds, fail it naming the tensor; and the asset
holds one copy of each weight, which the bytes of the file show independently of the reader."""

import hashlib
import json
import shutil

import numpy as np
import pytest

from minivlm.build_checks import verify_build
from minivlm.converters.manifest import MANIFEST, MANIFEST_DIGEST, file_hashes, manifest_digest
from minivlm.parity.coreai_constants import coreai_constants
from minivlm.parity.weight_audit import audit_build, audit_check

pytestmark = pytest.mark.build  # converts the tiny model (tests/parity also gives it the parity marker)

BYTECODE = "model.aimodel/main.mlirb"
WORD_EMBEDDINGS = "fusion.encoder.embeddings.word_embeddings.weight"
FUSION_GRAPHS = {"caption_prefix", "caption_step", "caption_step_beam", "vqa", "match"}


def _audit(folder, reference):
    manifest = json.loads((folder / MANIFEST).read_text())
    pipe = reference.pipeline
    return audit_build(folder, manifest, pipe.model, pipe.graphs.modules())


def _rehash(folder):
    """What a forger does after editing the bytecode: the asset's own hash, then the manifest's."""
    (folder / "model.aimodel/main.hash").write_bytes(hashlib.sha256((folder / BYTECODE).read_bytes()).digest())
    manifest = json.loads((folder / MANIFEST).read_text())
    manifest["files"] = file_hashes(folder)
    manifest[MANIFEST_DIGEST] = manifest_digest(manifest)
    (folder / MANIFEST).write_text(json.dumps(manifest))


def test_a_clean_coreai_build_passes_the_audit(tiny_coreai_build, tiny_reference):
    result = _audit(tiny_coreai_build.path, tiny_reference)
    assert result.passed, result.reason()
    assert result.matched and result.matched_bytes > 0.99 * result.bytes  # the weights are traced, not excused
    assert audit_check(result).status == "PASS"


def test_edited_weights_in_the_bytecode_with_rehashed_files_fail_the_audit(tmp_path, tiny_coreai_build, tiny_reference,
                                                                          tamper_word_embeddings):
    folder = tmp_path / "build"
    shutil.copytree(tiny_coreai_build.path, folder)
    edited = tamper_word_embeddings(folder, tiny_reference, BYTECODE)
    _rehash(folder)
    verify_build(folder)  # every checksum holds: the files alone cannot tell
    result = _audit(folder, tiny_reference)
    assert not result.passed
    reason = result.reason()
    graphs = set(reason.split(" tensor ")[0].split("/"))
    assert "\n" not in reason and graphs == FUSION_GRAPHS and "model.aimodel resource " in reason, reason
    assert f"nearest {WORD_EMBEDDINGS}: {edited} of" in reason, reason
    assert audit_check(result).status == "FAIL"


def test_the_asset_holds_one_copy_of_every_weight(tiny_coreai_build, tiny_reference):
    folder = tiny_coreai_build.path
    raw = (folder / BYTECODE).read_bytes()
    params = {n: p.detach().numpy().astype(np.float32).tobytes() for n, p in tiny_reference.pipeline.model.named_parameters()
              if p.numel() >= 256}
    # The raw bytes, whatever the reader says: a weight stored as the model holds it is there once (one folded
    # with its BatchNorm, or transposed, is not there as such).
    counts = {n: raw.count(data) for n, data in params.items()}
    assert counts[WORD_EMBEDDINGS] == 1 and max(counts.values()) == 1, {n: c for n, c in counts.items() if c > 1}

    stored = coreai_constants(folder, json.loads((folder / MANIFEST).read_text()))
    embeddings = [s for s in stored if s.values.astype(np.float32).tobytes() == params[WORD_EMBEDDINGS]]
    assert len(embeddings) == 1 and {g for g, _ in embeddings[0].users} == FUSION_GRAPHS
    result = _audit(folder, tiny_reference)
    assert not result.duplicates, result.duplicates
