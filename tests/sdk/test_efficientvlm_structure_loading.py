"""A structurally pruned EfficientVLM through the SDK: its weights file records its structure, `minivlm.load` rebuilds
the same model from preset + structure (and refuses a broken structure in one line), `minivlm info` prints its
per-layer widths, and a build's config check restores the recorded structure while refusing any other change."""

import dataclasses
import json
import re

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import minivlm
from minivlm.build_checks import _config
from minivlm.checkpoints import save_weights
from minivlm.cli import app
from minivlm.errors import ArtifactError, WeightsError
from minivlm.python_ref.efficientvlm.config import efficientvlm_demo_tiny, structure, with_structure
from minivlm.python_ref.efficientvlm.family import EFFICIENTVLM
from minivlm.python_ref.efficientvlm.graphs import export_graphs
from minivlm.python_ref.efficientvlm.model import EfficientVLM
from minivlm.python_ref.efficientvlm.pipeline import Vocabularies
from minivlm.python_ref.efficientvlm.profile import profile_efficientvlm
from minivlm.python_ref.minivlm_family import MINIVLM
from minivlm.python_ref.scenes import generate_scene
from minivlm.training.vlm import vlm_metadata

PRESET = "efficientvlm-demo-tiny"
BASE = efficientvlm_demo_tiny()
STRUCTURE = {"vision": {"heads": [1, 0], "mlp": [0, 37]},
             "text": {"self_heads": [0, 2, 1, 0], "cross_heads": [2, 0], "ffn": [0, 21, 64, 0]}}
PRUNED = with_structure(BASE, STRUCTURE)
runner = CliRunner()


def _metadata(cfg, described=None) -> dict[str, str]:
    meta = {"preset": PRESET, "vocabularies": json.dumps(dataclasses.asdict(Vocabularies.placeholder(cfg)))}
    if described is not None:
        meta["structure"] = described if isinstance(described, str) else json.dumps(described)
    return meta


@pytest.fixture(scope="module")
def pruned_file(tmp_path_factory):
    torch.manual_seed(0)
    model = EfficientVLM(PRUNED)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    path = tmp_path_factory.mktemp("weights") / "pruned.safetensors"
    save_weights(model, path, _metadata(PRUNED, structure(PRUNED)))
    return model.eval(), path


def test_a_pruned_weights_file_loads_as_the_same_model(pruned_file):
    model, path = pruned_file
    loaded = minivlm.load(path)
    assert loaded.config == PRUNED and loaded.pipeline.model.cfg == PRUNED
    g = torch.Generator().manual_seed(2)
    tokens = torch.randn(2, PRUNED.vision.num_tokens, PRUNED.vision.width, generator=g)
    ids = torch.randint(5, PRUNED.text.vocab_size, (2, PRUNED.text.max_text_len), generator=g)
    inputs = {"vision": (torch.randn(2, 3, 32, 32, generator=g),), "text_feature": (ids, torch.ones_like(ids, dtype=torch.float32))}
    want_graphs, got_graphs = export_graphs(model), export_graphs(loaded.pipeline.model)
    with torch.no_grad():
        for name in want_graphs:
            args = inputs.get(name, (tokens, ids, torch.ones_like(ids, dtype=torch.float32)))
            for got, want in zip(got_graphs[name](*args), want_graphs[name](*args)):
                assert torch.equal(got, want), name  # the same weights, the same code, one process
    image = np.array(generate_scene(20_000, 1).image)
    assert isinstance(loaded.caption(image), str) and 0.0 <= loaded.match(image, "a red circle") <= 1.0


@pytest.mark.parametrize("described, message", [
    ("{not json", "its 'structure' metadata is not JSON (Expecting property name enclosed in double quotes at character 1)"),
    ({"vision": STRUCTURE["vision"]}, "its 'structure' metadata does not fit preset efficientvlm-demo-tiny: structure is ['vision']"),
    ({**STRUCTURE, "vision": {"heads": [1, 0, 1], "mlp": [0, 37]}},
     "does not fit preset efficientvlm-demo-tiny: structure: vision.heads_per_layer has 3 entries [1, 0, 1]; expected 2"),
])
def test_a_broken_structure_is_one_line_weights_error(pruned_file, tmp_path, described, message):
    model, _ = pruned_file
    path = tmp_path / "broken.safetensors"
    save_weights(model, path, _metadata(PRUNED, described))
    with pytest.raises(WeightsError) as err:
        minivlm.load(path)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_tensors_of_another_structure_do_not_load(pruned_file, tmp_path):
    model, _ = pruned_file
    path = tmp_path / "mismatch.safetensors"
    other = {**STRUCTURE, "vision": {"heads": [2, 0], "mlp": [0, 37]}}  # the file holds 1 head in block 0
    save_weights(model, path, _metadata(PRUNED, other))
    with pytest.raises(WeightsError, match=re.escape("vision.blocks.0.attn.key.bias is (16,) torch.float32 in the file, "
                                                     "the model needs (32,) torch.float32")):
        minivlm.load(path)
    save_weights(model, path, _metadata(PRUNED))  # no structure: the preset's tensors are expected
    with pytest.raises(WeightsError, match="missing keys"):
        minivlm.load(path)


def test_training_metadata_records_the_structure_of_a_pruned_config_only():
    assert json.loads(vlm_metadata(PRUNED, None)["structure"]) == STRUCTURE
    assert "structure" not in vlm_metadata(BASE, None)
    assert EFFICIENTVLM.pruned(PRUNED) and not EFFICIENTVLM.pruned(BASE)
    assert not MINIVLM.pruned(MINIVLM.config("minivlm-tiny"))


def test_info_of_a_pruned_file_prints_its_widths_per_layer_and_modality(pruned_file):
    _, path = pruned_file
    result = runner.invoke(app, ["info", str(path)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert "vision  heads 1 0 (of 2); MLP 0 37 (of 128)" in lines
    assert "text    heads 0 2 (of 2); FFN 0 21 (of 64)" in lines
    assert "cross   self-attention heads 1 0, cross-attention heads 2 0; FFN 64 0" in lines
    pruned, full = profile_efficientvlm(PRUNED), profile_efficientvlm(BASE)
    params = sum(p.numel() for p in EfficientVLM(PRUNED).parameters())
    assert pruned.total.params == params < full.total.params and pruned.total.flops < full.total.flops
    assert any(line.startswith(f"structurally pruned {PRESET}: parameters {params / 1e6:.3f} M of the preset's "
                               f"{full.total.params / 1e6:.3f} M") for line in lines), result.output
    assert "structurally pruned" not in runner.invoke(app, ["info", PRESET]).output


def _manifest(cfg, described=None) -> dict:
    model = {"name": "pruned", "preset": PRESET, "config": json.loads(json.dumps(dataclasses.asdict(cfg)))}
    if described is not None:
        model["structure"] = described
    return {"family": "efficientvlm", "model": model}


def test_a_build_config_check_restores_the_recorded_structure_and_refuses_any_other_change():
    assert _config(_manifest(PRUNED, STRUCTURE)) == PRUNED
    assert _config(_manifest(BASE)) == BASE
    with pytest.raises(ArtifactError, match="config differs from this SDK's"):
        _config(_manifest(PRUNED))  # the config is pruned, the manifest records no structure
    other = {**STRUCTURE, "vision": {"heads": [2, 0], "mlp": [0, 37]}}
    with pytest.raises(ArtifactError, match="config differs from this SDK's"):
        _config(_manifest(PRUNED, other))  # a structure that is not the config's
    edited = dataclasses.replace(PRUNED, embed_dim=8)
    with pytest.raises(ArtifactError, match="config differs from this SDK's"):
        _config(_manifest(edited, STRUCTURE))
    with pytest.raises(ArtifactError, match=r"model.structure is not one of efficientvlm-demo-tiny: structure: "
                                            r"text.ffn_per_layer\[1\] is 99; expected an int in \[0, 64\]"):
        _config(_manifest(PRUNED, {**STRUCTURE, "text": {**STRUCTURE["text"], "ffn": [0, 99, 64, 0]}}))
