"""EfficientVLM training and distillation on the demo scenes: the training targets, the losses on hand-worked
examples, a few-step run that resumes exactly, and distillation into a copy of the teacher costing nothing."""

import json
import math
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from minivlm.errors import ConfigError
from minivlm.python_ref.efficientvlm.config import PRESETS, vocab_path
from minivlm.python_ref.efficientvlm.generate import prompt_ids
from minivlm.python_ref.efficientvlm.model import EfficientVLM
from minivlm.python_ref.scenes import CANVAS, CLASSES, generate_scene
from minivlm.python_ref.tokenizer import Tokenizer
from minivlm.python_ref.weights import read_metadata
from minivlm.training import loop
from minivlm.training.distillation import DistillObjective, start_from_teacher
from minivlm.training import vlm
from minivlm.training.vlm import train_vlm
from minivlm.training.vlm_data import patch_boxes, patch_labels, patch_masks, vlm_batch
from minivlm.training.vlm_objectives import VisionWarmup, VLMObjective, balanced_patch_loss, giou_loss, soft_contrast
from minivlm.training.vlm_settings import VLMTrainSettings

TINY = "efficientvlm-demo-tiny"
SMOKE = VLMTrainSettings(preset=TINY, vision_steps=2, steps=4, batch=4, checkpoint_every=1)


def test_patch_labels_name_the_object_under_each_patch():
    """Checked against the boxes: a labelled patch overlaps the box of an object of that class; a patch
    inside an object's box at its centre carries that object's class; a patch touching no box is 0."""
    grid = 16
    cell = CANVAS // grid
    for index in range(20):
        scene = generate_scene(5, index)
        labels = patch_labels(scene, grid).reshape(grid, grid)
        boxes = np.asarray(scene.boxes)
        for row in range(grid):
            for col in range(grid):
                x0, y0 = col * cell, row * cell
                touching = [k for k, (a, b, c, d) in enumerate(boxes) if a < x0 + cell and c > x0 and b < y0 + cell and d > y0]
                if not touching:
                    assert labels[row, col] == 0
                elif labels[row, col]:
                    assert CLASSES[labels[row, col] - 1] in [scene.labels[k] for k in touching]
        for (a, b, c, d), name in zip(boxes, scene.labels):
            if c - a >= 2 * cell and d - b >= 2 * cell:  # a patch at the centre of a large object is covered
                row, col = int((b + d) / 2) // cell, int((a + c) / 2) // cell
                assert labels[row, col] == CLASSES.index(name) + 1


def test_patch_boxes_are_the_box_of_the_object_under_each_patch():
    """Checked against the image and the boxes: a patch without object pixels has zeros; any other patch has the
    box (centre, size as canvas fractions) of an object whose box it overlaps; the patch at the centre of a
    large object has that object's box."""
    grid = 8
    cell = CANVAS // grid
    for index in range(20):
        scene = generate_scene(7, index)
        targets = patch_boxes(scene, grid).reshape(grid, grid, 4)
        objects = scene.image.min(axis=2) < 130
        boxes = np.asarray(scene.boxes, dtype=np.float64)
        fractions = [[(a + c) / 2 / CANVAS, (b + d) / 2 / CANVAS, (c - a) / CANVAS, (d - b) / CANVAS] for a, b, c, d in boxes]
        for row in range(grid):
            for col in range(grid):
                y0, x0 = row * cell, col * cell
                if not objects[y0 : y0 + cell, x0 : x0 + cell].any():
                    assert (targets[row, col] == 0).all()
                    continue
                touching = [k for k, (a, b, c, d) in enumerate(boxes) if a < x0 + cell and c > x0 and b < y0 + cell and d > y0]
                assert any(np.allclose(targets[row, col], fractions[k], atol=1e-6) for k in touching)
        for (a, b, c, d), want in zip(boxes, fractions):
            if c - a >= 2 * cell and d - b >= 2 * cell:
                row, col = int((b + d) / 2) // cell, int((a + c) / 2) // cell
                np.testing.assert_allclose(targets[row, col], want, atol=1e-6)


def test_outline_targets_are_the_object_coverage_of_each_sub_cell():
    """Checked against the image itself: a sub-cell's target is the share of its pixels whose darkest channel
    is an object's, and the targets over all patches add up to the objects' area."""
    grid, cells = 8, 8
    size = CANVAS // (grid * cells)  # 4 px per sub-cell
    for index in range(5):
        scene = generate_scene(6, index)
        masks = patch_masks(scene, grid, cells)
        objects = scene.image.min(axis=2) < 130
        assert masks.sum() * size * size == pytest.approx(objects.sum(), rel=1e-6)
        for patch in range(grid * grid):
            for cell in range(cells * cells):
                y = (patch // grid) * cells * size + (cell // cells) * size
                x = (patch % grid) * cells * size + (cell % cells) * size
                assert masks[patch, cell] == pytest.approx(objects[y : y + size, x : x + size].mean())
        assert 0 < masks.max() and (0 < masks).sum() < masks.size  # objects and background both present


def test_giou_loss_on_a_hand_worked_pair():
    # [0,0,2,2] vs [1,1,3,3]: intersection 1, union 4 + 4 - 1 = 7, hull 3 x 3 = 9;
    # GIoU = 1/7 - (9 - 7)/9 = 0.142857 - 0.222222 = -0.079365; loss = 1.079365. Identical boxes: 0.
    a, b = torch.tensor([[0.0, 0, 2, 2]]), torch.tensor([[1.0, 1, 3, 3]])
    assert giou_loss(a, b).item() == pytest.approx(1.079365, abs=1e-6)
    assert giou_loss(a, a).item() == pytest.approx(0.0, abs=1e-7)


def test_object_and_background_patches_weigh_the_same():
    # Three background patches predicted perfectly-ish (logits (0, 0) -> loss log 2 = 0.693147 each) and one
    # object patch with logits (0, 0) too: unweighted mean 0.693147 either way; make the object patch worse,
    # logits (3, 0) for label 1: loss log(1 + e³) = 3.048587. Balanced: (3.048587 + 0.693147) / 2 = 1.870867
    # (the unweighted mean would be (3.048587 + 3 · 0.693147) / 4 = 1.282007).
    logits = torch.tensor([[0.0, 0], [0, 0], [0, 0], [3, 0]])
    labels = torch.tensor([0, 0, 0, 1])
    assert balanced_patch_loss(logits, labels).item() == pytest.approx(1.870867, abs=1e-5)
    assert balanced_patch_loss(logits[:3], labels[:3]).item() == pytest.approx(0.693147, abs=1e-5)  # no object


def test_identical_captions_share_the_contrastive_target():
    # Row 0 has positives {0, 1} (the same caption twice): target (0.5, 0.5, 0). With logits (2, 0, 0),
    # log_softmax = (2, 0, 0) - log(e² + 2) = (2, 0, 0) - 2.239545; loss_0 = -(0.5·(-0.239545) + 0.5·(-2.239545))
    # = 1.239545. Row 1 (same positives, logits (0, 0, 0)): -log(1/3) = 1.098612. Row 2 (itself only, logits
    # (0, 0, 5)): -(5 - log(2 + e⁵)) = -(5 - 5.013386) = 0.013386. Mean: 2.351543 / 3 = 0.783848.
    logits = torch.tensor([[2.0, 0, 0], [0, 0, 0], [0, 0, 5]])
    positives = torch.tensor([[1.0, 1, 0], [1, 1, 0], [0, 0, 1]])
    assert soft_contrast(logits, positives).item() == pytest.approx(0.783848, abs=1e-5)


def _batch(cfg, step=0):
    tokenizer = Tokenizer.from_vocab(vocab_path(cfg))
    return tokenizer, vlm_batch(cfg, tokenizer, 1, step, 4, 0, 1, 2, torch.Generator().manual_seed(0))


def test_a_batch_holds_every_target():
    cfg = PRESETS[TINY]()
    tokenizer, batch = _batch(cfg)
    assert batch.images.shape == (4, 3, 32, 32)
    assert batch.questions.ids.shape[0] == 8 and batch.answers.shape == (8,)
    for text in (batch.caption_text, batch.caption_prompted, batch.questions, batch.phrases):
        assert text.mask[:, -1].any() and text.ids.shape[1] <= cfg.text.max_text_len  # padded to the longest row
    assert batch.patch_labels.shape == (4, 16) and batch.patch_boxes.shape == (4, 16, 4)
    prefix = prompt_ids(tokenizer)
    assert batch.caption_prompted.ids[0, : len(prefix)].tolist() == prefix
    assert tokenizer.decode(batch.caption_prompted.ids[0, len(prefix):].tolist()) == batch.captions[0]
    phrases = [tokenizer.decode(row) for row in batch.phrases.ids.tolist()]
    for phrase, row, box in zip(phrases, batch.phrase_scene.tolist(), batch.phrase_boxes.tolist()):
        scene = generate_scene(1, row)  # step 0, rank 0: scene index = row
        k = list(scene.labels).index(phrase)
        x0, y0, x1, y1 = (v / CANVAS for v in scene.boxes[k])
        assert box == pytest.approx([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0], abs=1e-6)


def test_texts_without_trailing_padding_give_the_padded_states():
    """Batches pad to their longest text, not max_text_len: every real token's fused state (bidirectional and
    causal) is the one the fully padded layout gives."""
    cfg = PRESETS[TINY]()
    torch.manual_seed(0)
    model = EfficientVLM(cfg).eval()
    _, batch = _batch(cfg)
    image = model.encode_image(batch.images)
    text = batch.caption_prompted
    full = cfg.text.max_text_len
    ids = torch.nn.functional.pad(text.ids, (0, full - text.ids.shape[1]))
    mask = torch.nn.functional.pad(text.mask, (0, full - text.mask.shape[1]))
    with torch.no_grad():
        for fuse, encode in ((model.fuse, model.encode_text), (model.fuse_causal, model.text.forward_causal)):
            short = fuse(encode(text.ids, text.mask), text.mask, image)
            padded = fuse(encode(ids, mask), mask, image)[:, : text.ids.shape[1]]
            real = text.mask > 0
            torch.testing.assert_close(short[real], padded[real], rtol=1e-5, atol=1e-5)


def test_distilling_into_a_copy_of_the_teacher_costs_nothing():
    """A student that is the teacher (ratio 1, every layer copied) has every KD term exactly 0; one changed
    weight makes them positive."""
    cfg = PRESETS[TINY]()
    torch.manual_seed(0)
    teacher = EfficientVLM(cfg).eval()
    student = EfficientVLM(cfg)
    start_from_teacher(student, teacher)
    tokenizer, batch = _batch(cfg)
    objective = DistillObjective(VLMObjective(student.eval(), len(prompt_ids(tokenizer))), teacher)
    losses = objective(batch, torch.Generator().manual_seed(1))
    kd = {k: v.item() for k, v in losses.items() if k.startswith("kd_")}
    assert len(kd) == 10 and all(v == 0.0 for v in kd.values()), kd  # 3 stacks x hidden/attention + cross + 3 logits
    with torch.no_grad():
        student.vision.blocks[0].mlp_in.weight.add_(0.05)
    losses = objective(batch, torch.Generator().manual_seed(1))
    assert losses["kd_vision_hidden"].item() > 0 and losses["kd_caption_logits"].item() > 0


def test_the_demo_student_starts_from_the_teacher_with_its_strongest_neurons():
    teacher = EfficientVLM(PRESETS["efficientvlm-demo-teacher"]())
    student = EfficientVLM(PRESETS["efficientvlm-demo-student"]())
    start_from_teacher(student, teacher)
    t_block, s_block = teacher.vision.blocks[3], student.vision.blocks[1]  # student layer 2 <- teacher layer 4
    assert torch.equal(s_block.attn.query.weight, t_block.attn.query.weight)
    strength = t_block.mlp_in.weight.norm(dim=1) * t_block.mlp_out.weight.norm(dim=0)
    keep = strength.topk(s_block.mlp_in.out_features).indices.sort().values
    assert torch.equal(s_block.mlp_in.weight, t_block.mlp_in.weight[keep])
    assert torch.equal(s_block.mlp_out.weight, t_block.mlp_out.weight[:, keep])


@pytest.fixture(scope="module")
def vlm_smoke_run(tmp_path_factory):
    return train_vlm(SMOKE, tmp_path_factory.mktemp("vlm"), progress=False)


def test_a_run_writes_weights_that_say_what_made_them(vlm_smoke_run):
    meta = read_metadata(vlm_smoke_run)
    assert meta["preset"] == TINY and meta["family"] == "efficientvlm"
    assert json.loads(meta["training"])["steps"] == 4 and json.loads(meta["resumed"]) is False
    assert json.loads(meta["stage_seconds"]).keys() == {"vision", "train"}
    assert json.loads(meta["vocabularies"])["answers"][:2] == ["one", "two"]
    weights = load_file(vlm_smoke_run)
    assert not any(k.startswith(("patch_head", "box_head", "mask_head", "patch_box_head")) for k in weights)  # training-only heads stay out
    assert all(torch.isfinite(v).all() for v in weights.values())


def test_the_warmup_trains_the_image_encoder_alone():
    cfg = PRESETS[TINY]()
    tokenizer, batch = _batch(cfg)
    objective = VLMObjective(EfficientVLM(cfg), len(prompt_ids(tokenizer)))
    warmup = VisionWarmup(objective)
    losses = warmup(batch, torch.Generator())
    assert losses.keys() == {"patch", "outline", "patch_box"}
    sum(losses.values()).backward()
    trained = {id(p) for p in warmup.trained()}
    expected = [*objective.model.vision.parameters(), *objective.patch_head.parameters(), *objective.mask_head.parameters(),
                *objective.patch_box_head.parameters()]
    assert trained == {id(p) for p in expected}
    assert all(p.grad is None for p in objective.parameters() if id(p) not in trained)
    assert all(p.grad is not None for p in expected)


def test_the_warmup_runs_from_random_weights_only():
    assert SMOKE.warms_up_vision
    assert not VLMTrainSettings(preset=TINY, teacher="t.safetensors").warms_up_vision
    assert not VLMTrainSettings(preset=TINY, init_from="t.safetensors").warms_up_vision
    assert not VLMTrainSettings(preset=TINY, vision_steps=0).warms_up_vision
    scaled = VLMTrainSettings(vision_steps=600, steps=1500).scaled(0.01)
    assert (scaled.vision_steps, scaled.steps) == (6, 15)
    assert VLMTrainSettings(vision_steps=0).scaled(0.01).vision_steps == 0


@pytest.mark.parametrize("crash_at", [("vlm-vision", 1), ("vlm", 2)])
def test_an_interrupted_run_resumes_to_identical_weights(vlm_smoke_run, tmp_path, monkeypatch, crash_at):
    real_save = loop.save_checkpoint

    def save_then_crash(path, model, optimizer, state):
        real_save(path, model, optimizer, state)
        if (state["stage"], state["step"]) == crash_at:
            raise KeyboardInterrupt

    monkeypatch.setattr(loop, "save_checkpoint", save_then_crash)
    with pytest.raises(KeyboardInterrupt):
        train_vlm(SMOKE, tmp_path, progress=False)
    monkeypatch.setattr(loop, "save_checkpoint", real_save)
    resumed = load_file(train_vlm(SMOKE, tmp_path, progress=False))
    straight = load_file(vlm_smoke_run)
    assert [k for k in straight if not torch.equal(straight[k], resumed[k])] == []


def test_a_finished_run_is_returned_untouched(vlm_smoke_run, monkeypatch):
    before = vlm_smoke_run.read_bytes()
    monkeypatch.setattr(vlm, "run_stage", lambda *a, **k: pytest.fail("a finished run trained again"))
    assert train_vlm(SMOKE, vlm_smoke_run.parent, progress=False) == vlm_smoke_run
    assert vlm_smoke_run.read_bytes() == before


def test_distil_and_no_teacher_runs_start_from_the_teacher(vlm_smoke_run, tmp_path):
    distilled = train_vlm(VLMTrainSettings(preset=TINY, steps=2, batch=4, teacher=str(vlm_smoke_run)), tmp_path / "kd",
                          progress=False)
    alone = train_vlm(VLMTrainSettings(preset=TINY, steps=2, batch=4, init_from=str(vlm_smoke_run)), tmp_path / "alone",
                      progress=False)
    assert json.loads(read_metadata(distilled)["stage_seconds"]).keys() == {"distill"}
    assert json.loads(read_metadata(alone)["stage_seconds"]).keys() == {"train"}
    for path in (distilled, alone):
        assert all(torch.isfinite(v).all() for v in load_file(path).values())


@pytest.mark.parametrize(("settings", "message"), [
    (dict(steps=0), "training setting steps is 0, expected an integer >= 1"),
    (dict(vision_steps=-1), "training setting vision_steps is -1, expected an integer >= 0"),
    (dict(lr=math.nan), "training setting lr is nan"),
    (dict(teacher="a", init_from="b"), "teacher and init_from are both set"),
])
def test_bad_settings_are_one_line(settings, message):
    with pytest.raises(ConfigError, match=message):
        VLMTrainSettings(**settings)


def test_a_teacher_that_is_not_an_efficientvlm_is_refused(tmp_path):
    from minivlm.checkpoints import save_weights

    path = tmp_path / "w.safetensors"
    save_weights(torch.nn.Linear(2, 2), path, {"preset": "minivlm-tiny"})
    with pytest.raises(ConfigError, match="holds a 'minivlm-tiny', expected EfficientVLM weights"):
        train_vlm(VLMTrainSettings(preset=TINY, steps=2, batch=4, teacher=str(path)), tmp_path / "run", progress=False)


@pytest.mark.ddp
def test_two_process_ddp_run(tmp_path):
    script = tmp_path / "ddp.py"
    script.write_text(textwrap.dedent(f"""
        import torch.distributed as dist
        from minivlm.training.vlm import train_vlm
        from minivlm.training.vlm_settings import VLMTrainSettings
        path = train_vlm(VLMTrainSettings(preset={TINY!r}, vision_steps=2, steps=2, batch=2), {str(tmp_path / 'run')!r}, progress=False)
        open({str(tmp_path)!r} + f"/rank{{dist.get_rank()}}.done", "w").write(str(path))
    """))
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                             str(script)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "rank0.done").is_file() and (tmp_path / "rank1.done").is_file()
    assert read_metadata(tmp_path / "run" / "model.safetensors")["preset"] == TINY
