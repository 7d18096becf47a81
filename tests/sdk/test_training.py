"""The training pipeline: a few-step smoke run, exact resume after an interruption, and 2-process DDP."""

import dataclasses
import json
import os
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file

import minivlm
from minivlm import training
from minivlm.training import loop
from minivlm.errors import ConfigError, InputError, NoDetectionsWarning
from minivlm.training import TrainSettings, train

SMOKE = TrainSettings(
    detector_steps=3, detector_batch=2, rpn_samples=32, roi_samples=8, region_scenes=4,
    pretrain_steps=2, finetune_steps=3, fusion_batch=4, vqa_batch=4, match_batch=2, checkpoint_every=1,
)


def _same_weights(a: Path, b: Path) -> None:
    wa, wb = load_file(a), load_file(b)
    assert wa.keys() == wb.keys()
    different = [k for k in wa if not (wa[k] == wb[k]).all()]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"


SMOKE_WALL_SECONDS = {}  # the smoke run's wall time, measured around train()


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("smoke")
    begin = time.monotonic()
    weights = train(SMOKE, out, progress=False)
    SMOKE_WALL_SECONDS["smoke"] = time.monotonic() - begin
    return weights


def test_smoke_run_writes_a_loadable_model(smoke_run):
    pipe = minivlm.load(str(smoke_run))
    assert pipe.config.name == "minivlm-demo"
    assert pipe.vocab.classes[1] == "red circle" and "yes" in pipe.vocab.answers
    # Every tensor the run saved is the model that loads, bit for bit (same file, same process).
    saved, state = load_file(smoke_run), pipe.pipeline.model.state_dict()
    assert saved.keys() == state.keys()
    assert all(bool((saved[k] == state[k]).all()) for k in saved), "a loaded tensor differs from the saved one"
    # Blank images: nothing is detected (the warning says so), so the fusion model sees the same empty input and
    # must give the same caption whatever the blank colour; a caption decodes from at most max_caption_tokens ids.
    captions = []
    for value in (0, 128):
        with pytest.warns(NoDetectionsWarning, match="no object detected"):
            captions.append(pipe.caption(np.full((256, 256, 3), value, np.uint8)))
    assert captions[0] == captions[1], captions
    ids = pipe.pipeline.tokenizer.encode(captions[0])
    assert len(ids) <= pipe.config.fusion.max_caption_tokens and pipe.pipeline.tokenizer.decode(ids) == captions[0]
    for stage in training.STAGES:
        if stage != "regions":
            assert (smoke_run.parent / f"checkpoint-{stage}" / "state.json").exists()


def test_weights_record_the_run_time_per_stage(smoke_run, tmp_path, monkeypatch):
    import json

    from minivlm.python_ref.weights import read_safetensors

    _, meta = read_safetensors(smoke_run)
    stages = json.loads(meta["stage_seconds"])
    assert list(stages) == list(training.STAGES)
    # Each stage's own wall time, rounded to 0.1 s: not cumulative, so together they fit in the run's wall time.
    assert all(v >= 0 and v == round(v, 1) for v in stages.values()), stages
    wall = SMOKE_WALL_SECONDS["smoke"]
    assert sum(stages.values()) <= wall + 0.05 * len(stages), (stages, wall)
    assert sum(stages.values()) - 1 <= float(meta["training_seconds"]) <= wall + 0.5, (meta["training_seconds"], wall)
    assert json.loads(meta["resumed"]) is False


def test_interrupted_run_resumes_to_identical_weights(smoke_run, tmp_path, monkeypatch):
    saves = []
    real_save = loop.save_checkpoint

    def save_then_crash(path, model, optimizer, state):
        real_save(path, model, optimizer, state)
        saves.append(state["stage"])
        if state["stage"] == "finetune" and state["step"] == 1:
            raise KeyboardInterrupt  # as if the user pressed Ctrl-C mid-stage

    monkeypatch.setattr(loop, "save_checkpoint", save_then_crash)
    with pytest.raises(KeyboardInterrupt):
        train(SMOKE, tmp_path, progress=False)
    assert not (tmp_path / "model.safetensors").exists()
    monkeypatch.setattr(loop, "save_checkpoint", real_save)
    resumed = train(SMOKE, tmp_path, progress=False)
    _same_weights(resumed, smoke_run)
    from minivlm.python_ref.weights import read_safetensors

    assert read_safetensors(resumed)[1]["resumed"] == "true"  # the README quotes times of one-sitting runs only


# --- run folders and settings: checked before any training step ------------------------------------------------


class Stopped(Exception):
    pass


@pytest.fixture
def interrupted(monkeypatch):
    """`train` stops where its first stage would start: what runs before it (settings, the run folder) is real."""
    def stop(*args, **kwargs):
        raise Stopped

    monkeypatch.setattr(training, "run_stage", stop)


def test_resuming_with_other_settings_is_refused_naming_them(tmp_path, interrupted):
    """A seed-2 run used to "resume" a seed-1 folder in seconds and label the seed-1 weights as seed 2."""
    out = tmp_path / "run"
    with pytest.raises(Stopped):
        train(SMOKE, out, progress=False)
    assert json.loads((out / training.RUN_FILE).read_text()) == {"settings": dataclasses.asdict(SMOKE)}
    expected = (f"{out} holds a run made with other settings: seed 1 (this run: 2); detector_lr 0.002 (this run: 0.001)."
                " Resume with the same settings, or start afresh in another folder (--out)")
    with pytest.raises(ConfigError, match=re.escape(expected)):
        train(dataclasses.replace(SMOKE, seed=2, detector_lr=1e-3), out, progress=False)
    with pytest.raises(Stopped):  # the same settings pass the check: a resume
        train(SMOKE, out, progress=False)


def test_a_run_folder_from_before_the_run_file_is_checked_by_its_checkpoints(tmp_path, interrupted):
    old = {k: v for k, v in dataclasses.asdict(SMOKE).items() if k != "scale"}  # older runs had no scale field
    (tmp_path / "checkpoint-detector").mkdir()
    (tmp_path / "checkpoint-detector" / "state.json").write_text(json.dumps({"stage": "detector", "step": 3, "settings": old}))
    with pytest.raises(ConfigError, match=re.escape("seed 1 (this run: 7)")):
        train(dataclasses.replace(SMOKE, seed=7), tmp_path, progress=False)
    with pytest.raises(Stopped):
        train(SMOKE, tmp_path, progress=False)
    assert json.loads((tmp_path / training.RUN_FILE).read_text())["settings"]["seed"] == 1


def test_cli_resume_with_another_seed_or_scale_is_one_line(tmp_path, interrupted):
    from typer.testing import CliRunner

    from minivlm.cli import app

    runner, out = CliRunner(), str(tmp_path / "r")
    first = runner.invoke(app, ["train", "--out", out, "--scale", "0.01", "--no-progress"])
    assert isinstance(first.exception, Stopped) and (tmp_path / "r" / training.RUN_FILE).is_file(), first.output
    for args, parts in [(["--seed", "2", "--scale", "0.01"], ["seed 1 (this run: 2)"]),
                        (["--scale", "0.02"], ["detector_steps 9 (this run: 18)", "scale 0.01 (this run: 0.02)"])]:
        result = runner.invoke(app, ["train", "--out", out, "--no-progress", *args])
        assert result.exit_code == 2, result.output
        assert len(result.output.strip().splitlines()) == 1 and "another folder (--out)" in result.output
        assert all(p in result.output for p in parts), result.output


def _listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.mark.parametrize(
    "out, message",
    [
        (lambda t: (t / "file").write_text("mine") and t / "file", "file is a file, not a folder"),
        (lambda t: (t / "file").write_text("mine") and t / "file" / "run", "cannot make the run folder .*: Not a directory"),
        (lambda t: (t / "notes").mkdir() or (t / "notes" / "a.txt").write_text("mine") and t / "notes",
         "notes is not empty and holds no training run .no run.json.: train into a new or empty folder"),
        (lambda t: Path("/proc/minivlm-run"), "cannot make the run folder /proc/minivlm-run"),
    ],
)
def test_unusable_out_paths_are_input_errors_and_touch_nothing(tmp_path, interrupted, out, message):
    path = out(tmp_path)
    before = _listing(tmp_path)
    with pytest.raises(InputError, match=message):
        train(SMOKE, path, progress=False)
    assert _listing(tmp_path) == before


def test_a_failed_run_folder_write_leaves_nothing(tmp_path, interrupted, monkeypatch):
    def full_disk(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", full_disk)
    with pytest.raises(InputError, match="cannot make the run folder .*: No space left on device"):
        train(SMOKE, tmp_path / "new" / "run", progress=False)
    assert _listing(tmp_path) == []
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="No space left on device"):
        train(SMOKE, tmp_path / "empty", progress=False)
    assert _listing(tmp_path) == ["empty"]


@pytest.mark.parametrize("scale", ["nan", "inf", "-inf", "-1", "0", "1e308"])
def test_cli_bad_scale_is_one_line(tmp_path, interrupted, scale):
    from typer.testing import CliRunner

    from minivlm.cli import app

    result = CliRunner().invoke(app, ["train", "--out", str(tmp_path / "r"), "--scale", scale, "--no-progress"])
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: scale ") and len(result.output.strip().splitlines()) == 1, result.output
    assert not (tmp_path / "r").exists()


def test_counts_never_reach_zero():
    """A tiny scale clamps every count at 2 (a 2-step stage still checkpoints); 0 steps set by hand is refused."""
    tiny_run = TrainSettings().scaled(1e-9)
    assert (tiny_run.detector_steps, tiny_run.region_scenes, tiny_run.pretrain_steps, tiny_run.finetune_steps) == (2, 2, 2, 2)
    assert tiny_run.scale == 1e-9
    for field, value in [("detector_steps", 0), ("region_scenes", 0), ("checkpoint_every", 0), ("seed", -1),
                         ("fusion_lr", float("nan")), ("mask_probability", 1.0), ("detector_batch", 2.5)]:
        with pytest.raises(ConfigError, match=f"training setting {field} is {value!r}, expected"):
            TrainSettings(**{field: value})


@pytest.mark.ddp
def test_two_process_ddp_run(tmp_path):
    script = tmp_path / "ddp.py"
    script.write_text(textwrap.dedent(f"""
        import torch.distributed as dist
        from minivlm.training import TrainSettings, train
        s = TrainSettings(detector_steps=2, detector_batch=1, rpn_samples=16, roi_samples=4, region_scenes=2,
                          pretrain_steps=1, finetune_steps=2, fusion_batch=2, vqa_batch=2, match_batch=2, checkpoint_every=1)
        path = train(s, {str(tmp_path / 'run')!r}, progress=False)
        # One file per rank: two processes printing to one pipe may interleave their words.
        open({str(tmp_path)!r} + f"/rank{{dist.get_rank()}}-of-{{dist.get_world_size()}}.done", "w").write(str(path))
    """))
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script)],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "rank0-of-2.done").is_file() and (tmp_path / "rank1-of-2.done").is_file(), result.stdout[-2000:]
    assert minivlm.load(str(tmp_path / "run" / "model.safetensors")).config.name == "minivlm-demo"


def test_caption_queries_equal_the_decoding_steps():
    """Every training query must see exactly what the decoder sees when it predicts that position."""
    import torch

    from minivlm.python_ref.config import tiny
    from minivlm.python_ref.fusion import Fusion
    from minivlm.python_ref.packing import pack_inputs
    from minivlm.python_ref.generate import UncachedDecoder
    from minivlm.python_ref.tokenizer import Tokenizer
    from minivlm.training.objectives import caption_query_states

    torch.manual_seed(0)
    cfg = tiny().fusion
    fusion = Fusion(cfg).eval()
    tok = Tokenizer.default()
    inputs = pack_inputs(tok, "a red circle and two blue squares", ["red circle", "blue square"],
                         torch.randn(3, cfg.region_dim), cfg)
    ta = cfg.max_text_len
    text_ids, text_mask = inputs.input_ids[:, :ta], inputs.token_mask[:, :ta]
    with torch.no_grad():
        states = caption_query_states(fusion, tok.mask_id, text_ids, text_mask, *inputs.caption_prefix(ta))
        logits = fusion.mlm_logits(states)[0]  # (Ta-1, V)
        decoder = UncachedDecoder(fusion, tok, inputs, 1)
        length = int(text_mask.sum())  # [CLS] caption [SEP]
        for t in range(1, length):
            expected = decoder.step(text_ids[:, :t])[0]
            torch.testing.assert_close(logits[t - 1], expected, atol=1e-5, rtol=1e-5)


def test_trimmed_segments_give_the_full_layouts_hidden_states():
    """Fine-tuning drops trailing padding: every real token's state must equal the full padded layout's."""
    import torch

    from minivlm.python_ref.config import tiny
    from minivlm.python_ref.fusion import AttentionKind, Fusion
    from minivlm.python_ref.packing import pack_inputs
    from minivlm.python_ref.tokenizer import Tokenizer
    from minivlm.training.objectives import trimmed, full_attention_states

    torch.manual_seed(0)
    cfg = tiny().fusion
    fusion = Fusion(cfg).eval()
    tok = Tokenizer.default()
    batch = [pack_inputs(tok, text, tags, torch.randn(len(tags), cfg.region_dim), cfg)
             for text, tags in (("a red circle", ["red circle"]),
                                ("two blue squares and a green triangle", ["blue square", "blue square", "green triangle"]))]
    full = {k: torch.cat([getattr(b, k) for b in batch]) for k in ("input_ids", "token_type_ids", "token_mask", "regions", "region_mask")}
    ta = cfg.max_text_len
    with torch.no_grad():
        expected = fusion.encode(full["input_ids"], full["token_type_ids"], full["token_mask"], full["regions"],
                                 full["region_mask"], AttentionKind.FULL)
        text = trimmed(full["input_ids"][:, :ta], full["token_mask"][:, :ta])
        tags = trimmed(full["input_ids"][:, ta:], full["token_mask"][:, ta:], full["token_type_ids"][:, ta:])
        regions = trimmed(full["regions"], full["region_mask"])
        got = full_attention_states(fusion, *text, tags[0], tags[2], tags[1], *regions)
    t, g, r = text[0].shape[1], tags[0].shape[1], regions[0].shape[1]
    assert t < ta and g < full["input_ids"].shape[1] - ta and r < full["regions"].shape[1]  # something was trimmed
    keep = torch.cat([torch.arange(t), ta + torch.arange(g), full["input_ids"].shape[1] + torch.arange(r)])
    valid = torch.cat([text[1], tags[1], regions[1]], dim=1) > 0
    torch.testing.assert_close(got[valid], expected[:, keep][valid], atol=1e-5, rtol=1e-5)
