"""An ExecuTorch build keeps its weights in one `weights.ptd` beside program-only `.pte` graphs: the word
embeddings every fusion graph reads are stored there once and in no graph file, and a missing, tampered or
truncated weights file, or a manifest that does not name it, is a one-line ArtifactError."""

import json
import shutil

import pytest
from torch import nn

import minivlm
from minivlm.python_ref.minivlm_family import MINIVLM
from minivlm.converters.manifest import MANIFEST_DIGEST, file_hashes, manifest_digest
from minivlm.errors import ArtifactError

WEIGHTS = "weights.ptd"


def test_the_word_embeddings_are_stored_once_in_the_weights_file_and_in_no_graph(tiny_executorch_build, tiny_reference):
    folder, manifest = tiny_executorch_build.path, tiny_executorch_build.manifest
    assert manifest["weights_file"] == WEIGHTS and WEIGHTS in manifest["files"]
    graphs = MINIVLM.build_graphs  # the six, then the batched caption_step_beam
    assert sorted(p.name for p in folder.glob("*.pt*")) == sorted([f"{g}.pte" for g in graphs] + [WEIGHTS])
    # The reference's own tensor, not what the build says about it: the largest embedding table (the words').
    table = max((m for m in tiny_reference.pipeline.model.modules() if isinstance(m, nn.Embedding)),
                key=lambda m: m.weight.numel())
    chunk = table.weight.detach().contiguous().numpy().tobytes()[:4096]
    assert (folder / WEIGHTS).read_bytes().count(chunk) == 1  # read by every fusion graph
    for graph in graphs:
        assert chunk not in (folder / f"{graph}.pte").read_bytes(), graph


@pytest.fixture
def copy(tiny_executorch_build, tmp_path):
    folder = tmp_path / "build"
    shutil.copytree(tiny_executorch_build.path, folder)
    return folder


def _refused(folder, match):
    with pytest.raises(ArtifactError, match=match) as err:
        minivlm.load_artifact(folder)
    assert "\n" not in str(err.value)


def _reseal(folder, edit=lambda manifest: None):
    """Re-hash every file and the manifest after an edit, as a forger (or a buggy tool) would."""
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["files"] = file_hashes(folder)
    edit(manifest)
    manifest[MANIFEST_DIGEST] = manifest_digest(manifest)
    (folder / "manifest.json").write_text(json.dumps(manifest))


def test_a_tampered_weights_file_fails_its_checksum(copy):
    weights = copy / WEIGHTS
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one weight's bits, in the middle of the tensor data
    weights.write_bytes(bytes(data))
    _refused(copy, rf"{WEIGHTS} fails its sha256 check \(tampered with or corrupt\)")


def test_a_missing_weights_file_is_named(copy):
    (copy / WEIGHTS).unlink()
    _refused(copy, rf"{WEIGHTS} is missing \(listed in manifest\.json\)")


def test_a_truncated_weights_file_with_a_forged_checksum_cannot_load(copy):
    weights = copy / WEIGHTS
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    _reseal(copy)
    _refused(copy, rf"executorch cannot load it \(Failed to load data map from .*{WEIGHTS}")


def test_a_manifest_that_does_not_name_the_weights_file_is_refused(copy):
    _reseal(copy, lambda manifest: manifest.pop("weights_file"))
    _refused(copy, r"lacks weights_file; expected the shared weights file's name in the build folder")


def test_a_weights_file_without_a_checksum_is_refused(copy):
    _reseal(copy, lambda manifest: manifest["files"].pop(WEIGHTS))
    _refused(copy, rf"{WEIGHTS} has no checksum in manifest\.json")
