"""A structurally pruned EfficientVLM (uneven heads and widths; in vision, text and cross-modal layers an attention
with 0 heads and a feed-forward with 0 neurons) saved as a weights file converts through `minivlm.convert` like any
model, records its structure in the manifest, and passes `minivlm parity` against the file it came from."""

import json

import pytest
import torch

import minivlm
from minivlm.checkpoints import save_weights
from minivlm.parity import run_parity
from minivlm.python_ref.efficientvlm.config import efficientvlm_demo_tiny, structure, with_structure
from minivlm.python_ref.efficientvlm.model import EfficientVLM
from minivlm.python_ref.efficientvlm.text import OutputBias
from minivlm.python_ref.scenes import ANSWERS

pytestmark = pytest.mark.build  # every test here converts a model

STRUCTURE = {"vision": {"heads": [1, 0], "mlp": [0, 37]},
             "text": {"self_heads": [0, 2, 1, 0], "cross_heads": [2, 0], "ffn": [0, 21, 64, 0]}}
PARITY_SCENES = 2  # with the 4 parity photos: 6 images, every graph and task compared


@pytest.fixture(scope="module")
def pruned_weights(tmp_path_factory):
    """Untrained (seeded) efficientvlm-demo-tiny with STRUCTURE; the bias-only layers' biases off zero, so that the
    builds must carry them."""
    cfg = with_structure(efficientvlm_demo_tiny(), STRUCTURE)
    torch.manual_seed(0)
    model = EfficientVLM(cfg)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, OutputBias):
                module.bias.normal_(std=0.02)
    path = tmp_path_factory.mktemp("weights") / "pruned-demo-tiny.safetensors"
    save_weights(model, path, {"preset": cfg.name, "vocabularies": json.dumps({"answers": list(ANSWERS)}),
                               "structure": json.dumps(structure(cfg))})
    return path


@pytest.mark.parametrize("target", ["executorch", "tflite"])
def test_a_pruned_model_converts_and_passes_parity(pruned_weights, tmp_path, target):
    report = minivlm.convert(str(pruned_weights), target, out=tmp_path / target, jobs=1)
    model = json.loads((report.path / "manifest.json").read_text())["model"]
    assert (model["preset"], model["structure"]) == ("efficientvlm-demo-tiny", STRUCTURE)
    assert model["config"]["vision"]["heads_per_layer"] == [1, 0]
    assert minivlm.load_artifact(report.path).config == minivlm.load(pruned_weights).config
    parity = run_parity(report.path, scenes=PARITY_SCENES)
    failed = [c for c in parity.checks if c.status == "FAIL"]
    assert parity.passed and not failed, failed
    tasks = {(c.name, c.metric): c.value for c in parity.checks if c.kind == "task"}
    assert tasks[("captions", "identical")] == tasks[("answers", "identical")] == 1.0, tasks
    audit = parity.weight_audit  # every constant of the build traced to a tensor of the pruned file, none missing
    assert audit is not None and audit.passed and audit.matched > 0 and not audit.missing, audit.reason()
