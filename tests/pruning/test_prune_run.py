"""`minivlm prune` on a tiny model: with the task and distillation losses pulling the other way, the Lagrangian
drives the expected sparsity to the target; the saved model is physically smaller, loads back with
`minivlm.load` and carries its report; a finished run is returned as it is, other settings are refused."""

import json

import pytest
import torch

import minivlm
from minivlm.checkpoints import save_weights
from minivlm.errors import ConfigError
from minivlm.python_ref.efficientvlm.config import efficientvlm_demo_tiny
from minivlm.python_ref.efficientvlm.model import EfficientVLM
from minivlm.python_ref.weights import read_metadata
from minivlm.pruning.report import pruning_of
from minivlm.pruning.run import PruneSettings, prune_run
from minivlm.training.vlm import vlm_metadata

pytestmark = pytest.mark.model  # a whole fine-tuning run, if a tiny one (about a minute)

TARGET = 0.5


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory):
    torch.manual_seed(0)
    cfg = efficientvlm_demo_tiny()
    path = tmp_path_factory.mktemp("tiny") / "tiny.safetensors"
    save_weights(EfficientVLM(cfg), path, vlm_metadata(cfg, None))
    return path


@pytest.fixture(scope="module")
def pruned_run(tiny_weights, tmp_path_factory):
    settings = PruneSettings(model=str(tiny_weights), task="vqa", sparsity=TARGET, steps=160, warmup_steps=40,
                             batch=4, questions_per_scene=1, reg_lr=0.1, lambda_lr=0.1, checkpoint_every=80)
    out = tmp_path_factory.mktemp("run") / "run"
    return settings, out, prune_run(settings, out, progress=False)


def test_lagrangian_drives_expected_sparsity_to_target(pruned_run):
    _, _, final = pruned_run
    report = pruning_of(final)
    assert abs(report["expected_sparsity"] - TARGET) < 0.02, report["expected_sparsity"]
    assert abs(report["sparsity"] - TARGET) < 0.1, report["sparsity"]  # few gates per layer: coarse rounding


def test_pruned_model_is_smaller_and_loads_back(pruned_run, tiny_weights):
    _, _, final = pruned_run
    report = pruning_of(final)
    assert report["params_after"] < report["params_before"]
    loaded = minivlm.load(str(final))
    assert sum(p.numel() for p in loaded.pipeline.model.parameters()) == report["params_after"]
    assert read_metadata(final)["preset"] == read_metadata(tiny_weights)["preset"]
    assert json.loads(read_metadata(final)["training"])["sparsity"] == TARGET


def test_finished_run_is_returned_as_it_is(pruned_run):
    settings, out, final = pruned_run
    before = final.stat().st_mtime_ns
    assert prune_run(settings, out, progress=False) == final
    assert final.stat().st_mtime_ns == before


def test_other_settings_in_the_same_folder_are_refused(pruned_run):
    settings, out, _ = pruned_run
    with pytest.raises(ConfigError, match="sparsity"):
        prune_run(PruneSettings(**{**settings.__dict__, "sparsity": 0.3}), out, progress=False)
