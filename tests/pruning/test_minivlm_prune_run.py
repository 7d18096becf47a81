"""`minivlm prune` on a MiniVLM (a short run on the bundled demo model): its fusion encoder is pruned for captions
and VQA together, the gates move towards the target (that the Lagrangian holds it there is test_prune_run.py's, on
the same code), the saved whole model (detector unchanged) is physically smaller and records its structure and
report; --task, which is EfficientVLM's, is refused for a MiniVLM."""

import json

import pytest
import torch

import minivlm
from minivlm.errors import ConfigError
from minivlm.python_ref.config import structure
from minivlm.python_ref.pipeline import MiniVLM
from minivlm.python_ref.weights import read_metadata
from minivlm.pruning.fusion_objective import recording
from minivlm.pruning.report import pruning_of
from minivlm.pruning.run import MINIVLM_TASK, PruneSettings, prune_run, task_for

pytestmark = pytest.mark.model  # a whole (short) fine-tuning run of the demo fusion, about a minute

TARGET = 0.5
INITIAL = 0.112  # ŝ of freshly initialised gates on the demo fusion (neurons at log α = 0 keep with P = 0.83)


@pytest.fixture(scope="module")
def pruned_run(tmp_path_factory):
    settings = PruneSettings(model="minivlm-demo", task=MINIVLM_TASK, sparsity=TARGET, steps=12, warmup_steps=2,
                             batch=2, questions_per_scene=1, region_scenes=2, reg_lr=0.2, lambda_lr=0.5,
                             checkpoint_every=6)
    out = tmp_path_factory.mktemp("run") / "run"
    return settings, out, prune_run(settings, out, progress=False)


def test_gates_move_towards_the_target_and_the_model_shrinks(pruned_run):
    _, _, final = pruned_run
    report = pruning_of(final)
    assert report["expected_sparsity"] > INITIAL + 0.02, report["expected_sparsity"]
    assert set(report["sparsity_by_modality"]) == {"fusion"}
    assert report["params_after"] < report["params_before"]


def test_saved_file_is_the_whole_model_with_its_structure(pruned_run):
    _, _, final = pruned_run
    meta = read_metadata(final)
    assert meta["preset"] == "minivlm-demo"
    described = json.loads(meta["structure"])
    assert set(described) == {"fusion"}
    bundled = minivlm.load("minivlm-demo").pipeline.model
    model = minivlm.load(str(final)).pipeline.model  # strict: every key and shape of the restored structure
    assert isinstance(model, MiniVLM) and structure(model.cfg) == described
    assert model.cfg.fusion != bundled.cfg.fusion and model.cfg.tee == bundled.cfg.tee
    for name, tensor in bundled.tee.state_dict().items():  # the detector is the bundled one
        assert torch.equal(model.tee.state_dict()[name], tensor), name
    fusion_params = sum(p.numel() for p in model.fusion.parameters())
    assert fusion_params < sum(p.numel() for p in bundled.fusion.parameters())
    assert json.loads(meta["training"])["task"] == MINIVLM_TASK


def test_finished_run_is_returned_as_it_is(pruned_run):
    settings, out, final = pruned_run
    before = final.stat().st_mtime_ns
    assert prune_run(settings, out, progress=False) == final
    assert final.stat().st_mtime_ns == before


def test_task_is_efficientvlms_alone():
    assert task_for("minivlm-demo", None) == MINIVLM_TASK
    assert task_for("efficientvlm-demo-student", None) == "caption"
    with pytest.raises(ConfigError, match="leave --task out") as err:
        task_for("minivlm-demo", "vqa")
    assert "\n" not in str(err.value)


def test_recording_sees_every_layer_and_leaves_nothing_behind():
    fusion = minivlm.load("minivlm-demo").pipeline.model.fusion
    ids = torch.tensor([[101, 2417, 102]])
    with recording(fusion) as states:
        fusion.encode(ids, torch.zeros_like(ids), torch.ones(1, 3), torch.zeros(1, 10, 262), torch.zeros(1, 10),
                      minivlm.python_ref.fusion.AttentionKind.FULL)
    layers = fusion.cfg.num_layers
    assert len(states.hidden) == layers + 1 and len(states.attention) == layers
    assert states.attention[0].shape == (1, fusion.cfg.num_heads, 13, 13)
    assert all(layer.attn.record is None and not layer._forward_hooks and not layer._forward_pre_hooks
               for layer in fusion.encoder.layers)
