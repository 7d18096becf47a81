"""Core AI builds broken on purpose: each sabotage is caught on Linux, and a perturbed layer is named as the first
layer where the build leaves the reference (the per-layer rows of `minivlm parity`, minivlm/parity/layers.py). A
reference of other weights is refused for Core AI as for ExecuTorch (test_parity.py).

The demo model's Core AI fp32 build is held to its full parity row with the other default builds
(test_parity.py, parity_models.py); this file breaks copies of it."""

import copy
import json
import shutil

import pytest
import torch
from torch import nn

from minivlm.converters.build import build
from minivlm.converters.manifest import MANIFEST, MANIFEST_DIGEST, file_hashes, manifest_digest
from minivlm.converters.targets import resolve_options
from minivlm.errors import ArtifactError
from minivlm.parity import REPORT_FILE, check_parity
from minivlm.python_ref.pipeline import Pipeline

ASSET = "model.aimodel"


@pytest.fixture
def coreai_copy(demo_build, tmp_path):
    folder = tmp_path / "coreai"
    shutil.copytree(demo_build("coreai", "fp32").path, folder)
    (folder / REPORT_FILE).unlink(missing_ok=True)
    return folder


def _reseal(folder):
    """Re-hash every file into the manifest and the manifest's own checksum, as a forger would."""
    manifest = json.loads((folder / MANIFEST).read_text())
    manifest["files"] = file_hashes(folder)
    manifest[MANIFEST_DIGEST] = manifest_digest(manifest)
    (folder / MANIFEST).write_text(json.dumps(manifest))


def _vqa_head_layer(graph):
    """The vqa head's last linear layer and its qualified name in the vqa graph module."""
    name, layer = [(n, m) for n, m in graph.named_modules() if isinstance(m, nn.Linear) and n.startswith(graph.head_name)][-1]
    return name, layer


def test_a_perturbed_weight_fails_its_graph_and_the_layer_is_named(coreai_copy, demo, reference_run, tmp_path):
    """One weight row of the vqa head moved: the vqa graph rows and its layer row fail, the first divergent layer is
    that linear layer, and no other graph or layer row fails."""
    model = copy.deepcopy(demo.pipeline.model)
    perturbed = Pipeline.from_model(model, demo.pipeline.tokenizer, demo.pipeline.vocab)
    name, layer = _vqa_head_layer(perturbed.graphs.vqa)
    with torch.no_grad():
        layer.weight[0] += 0.25  # answer 0's logit moves on every input
    other = build(perturbed, model_name="minivlm-demo", source="perturbed", options=resolve_options("coreai"),
                  out=tmp_path / "perturbed", jobs=2)
    shutil.rmtree(coreai_copy / ASSET)
    shutil.copytree(other.path / ASSET, coreai_copy / ASSET)
    _reseal(coreai_copy)  # its goldens are still the real model's: only the asset is other

    report = check_parity(coreai_copy, reference_run)
    failed = {(c.kind, c.name) for c in report.failures}
    assert ("graph", "vqa") in failed and ("layer", "vqa") in failed, report.verdict()
    assert {kind_name for kind_name in failed if kind_name[0] in ("graph", "layer")} == {("graph", "vqa"), ("layer", "vqa")}
    row = next(c for c in report.failures if (c.kind, c.name) == ("layer", "vqa"))
    assert f"module {name}" in row.where, row.where
    table = report.as_json()["layers"]["vqa"]
    first = next(r for r in table["rows"] if r["node"] == table["first_divergent"])
    assert first["module"] == name and first["psnr_db"] < 40
    # Every layer before it is the reference's.
    before = table["rows"][:table["rows"].index(first)]
    assert before and all(r["psnr_db"] == "inf" or r["psnr_db"] >= 60 for r in before)


def test_swapped_outputs_are_refused_before_anything_runs(coreai_copy, reference_run):
    manifest = json.loads((coreai_copy / MANIFEST).read_text())
    outputs = manifest["graphs"]["caption_step"]["outputs"]
    outputs[1], outputs[2] = outputs[2], outputs[1]  # new_keys <-> new_values: same shape and dtype
    manifest[MANIFEST_DIGEST] = manifest_digest(manifest)
    (coreai_copy / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match=r"graph caption_step outputs are \['mask_logits', 'new_values', 'new_keys'\]"):
        check_parity(coreai_copy, reference_run)


def test_an_asset_edited_without_resealing_is_refused(coreai_copy, reference_run):
    bytecode = next((coreai_copy / ASSET).glob("*.mlirb"))
    data = bytearray(bytecode.read_bytes())
    data[len(data) // 2] ^= 0xFF
    bytecode.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="fails its sha256 check"):
        check_parity(coreai_copy, reference_run)
