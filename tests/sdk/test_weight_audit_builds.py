"""The weight audit on real tiny builds (the build tier: the session's tiny TFLite and ExecuTorch fp32 builds): a
correct build passes; 1024 word-embedding values edited in the middle of `vqa`'s file, with the manifest
re-hashed so that every checksum holds, fail it with one line naming the graph and the tensor. No parity input
needs those words, so only the audit can see the edit."""

import json
import shutil

import pytest

from minivlm.build_checks import verify_build
from minivlm.converters.manifest import MANIFEST
from minivlm.parity.weight_audit import audit_build, audit_check

pytestmark = pytest.mark.build  # the session's tiny builds (requested by name, so conftest cannot see them)


def _audit(folder, reference):
    manifest = json.loads((folder / MANIFEST).read_text())
    pipe = reference.pipeline
    return audit_build(folder, manifest, pipe.model, pipe.graphs.modules())


@pytest.mark.parametrize("fixture", ["tiny_tflite_build", "tiny_executorch_build"])
def test_a_correct_build_passes_the_audit(request, tiny_reference, fixture):
    build = request.getfixturevalue(fixture)
    result = _audit(build.path, tiny_reference)
    assert result.passed, result.reason()
    assert result.matched and result.matched_bytes > 0.99 * result.bytes  # the weights are traced, not excused
    assert audit_check(result).status in ("PASS", "WARN")


@pytest.mark.parametrize("fixture, suffix", [("tiny_tflite_build", ".tflite"), ("tiny_executorch_build", ".ptd")])
def test_edited_word_embeddings_with_a_rehashed_manifest_fail_the_audit(request, tmp_path, tiny_reference, fixture, suffix,
                                                                         tamper_word_embeddings):
    build = request.getfixturevalue(fixture)
    folder = tmp_path / "build"
    shutil.copytree(build.path, folder)
    manifest = json.loads((folder / MANIFEST).read_text())
    # ExecuTorch keeps every graph's weights in its one weights file; TFLite in its one model file
    edited = tamper_word_embeddings(folder, tiny_reference, manifest.get("weights_file") or manifest["graphs"]["vqa"]["file"])
    verify_build(folder)  # every checksum holds: the files alone cannot tell
    result = _audit(folder, tiny_reference)
    assert not result.passed
    reason = result.reason()
    # one line, naming the graphs that read the tensor (the shared word embeddings: every fusion graph) and its file
    assert "\n" not in reason and "vqa" in reason.split(" tensor ")[0].split("/") and f"{suffix} " in reason, reason
    assert f"nearest fusion.encoder.embeddings.word_embeddings.weight: {edited} of" in reason, reason
    row = audit_check(result)
    assert row.status == "FAIL" and row.where == reason


@pytest.mark.parametrize("fixture", ["tiny_tflite_build", "tiny_executorch_build"])
def test_every_bifpn_pointwise_bias_is_traced_through_its_folded_batch_norm(request, tiny_reference, fixture):
    # The tiny BiFPN is the paper's (depthwise -> pointwise with bias -> BN) at 16 channels, below the audit's
    # SMALL, so a bias left untraced would not fail the audit here: each must be covered by a matched constant.
    result = _audit(request.getfixturevalue(fixture).path, tiny_reference)
    biases = [n for n, _ in tiny_reference.pipeline.model.named_parameters() if n.endswith("conv_pw.bias")]
    assert biases and not [n for n in biases if n not in result.covered]
