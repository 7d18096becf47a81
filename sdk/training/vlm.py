"""Training an EfficientVLM on the demo scenes (`train_vlm`): from random weights, a warm-up of the image encoder
alone on dense patch targets (`VisionWarmup`), then X-VLM-style objectives (`vlm_objectives`) on fresh scenes
every step; or, given a teacher, EfficientVLM's general distillation
(`distillation`): the student starts from the teacher's even layers and learns 0.6 task + 0.4 KD.

Resumable and DDP-ready exactly as `minivlm train` (`loop.run_stage`): seeded per step, checkpoints every
`checkpoint_every` steps, `torchrun --nproc_per_node N` splits each step's scenes across ranks.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path

import torch

from minivlm.checkpoints import load_checkpoint, save_weights
from minivlm.errors import ConfigError
from minivlm.python_ref.efficientvlm.config import PRESETS, EfficientVLMConfig, is_pruned, structure, vocab_path
from minivlm.python_ref.efficientvlm.generate import prompt_ids
from minivlm.python_ref.efficientvlm.model import EfficientVLM
from minivlm.python_ref.scenes import ANSWERS
from minivlm.python_ref.tokenizer import Tokenizer
from minivlm.training.loop import barrier, progress_bar, run_stage, seed_everything, world
from minivlm.training.run_folder import open_run_folder
from minivlm.training.vlm_data import vlm_batch
from minivlm.training.vlm_objectives import VisionWarmup, VLMObjective
from minivlm.training.vlm_settings import VLMTrainSettings

log = logging.getLogger(__name__)

STAGE = "vlm"  # the checkpoint folder's name: checkpoint-vlm
VISION_STAGE = "vlm-vision"  # the image encoder's warm-up before it (`VisionWarmup`): checkpoint-vlm-vision


def vlm_config(preset: str) -> EfficientVLMConfig:
    """The EfficientVLM preset to train; ConfigError unless it answers the demo scenes' questions."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown EfficientVLM preset {preset!r}; known: {', '.join(sorted(PRESETS))}")
    cfg = PRESETS[preset]()
    if cfg.num_answers != len(ANSWERS):
        raise ConfigError(f"preset {preset!r} has {cfg.num_answers} answers; the demo scenes have {len(ANSWERS)}: "
                          "train an efficientvlm-demo-* preset")
    return cfg


def vlm_metadata(cfg: EfficientVLMConfig, settings: VLMTrainSettings | None) -> dict[str, str]:
    """What a weights file says about itself: preset, the answer vocabulary, and the recipe that made it."""
    meta = {"preset": cfg.name, "family": "efficientvlm", "vocabularies": json.dumps({"answers": list(ANSWERS)})}
    if is_pruned(cfg):  # `minivlm.load` rebuilds the per-layer widths from it
        meta["structure"] = json.dumps(structure(cfg))
    if settings is not None:
        meta["training"] = json.dumps(dataclasses.asdict(settings))
    return meta


def train_vlm(settings: VLMTrainSettings, workdir: str | Path, *, progress: bool = True) -> Path:
    """Run (or resume) the run in `workdir`; returns the path of the final `model.safetensors` (rank 0 writes
    it; other ranks return the same path once it exists). `workdir` follows `minivlm train`'s rules; a finished
    run is returned as it is, so a chain that resumes never rewrites (or re-times) its finished stages."""
    from minivlm.training.distillation import DistillObjective, load_teacher, start_from_teacher

    cfg = vlm_config(settings.preset)
    workdir = Path(workdir)
    rank, world_size = world()
    open_run_folder(workdir, settings, rank)  # refuses a folder made with other settings
    final = workdir / "model.safetensors"
    if final.is_file():  # written last, atomically: the run is finished; its weights and recorded times stay
        log.info("%s is finished already", final)
        return final
    seed_everything(settings.seed)
    tokenizer = Tokenizer.from_vocab(vocab_path(cfg))
    model = EfficientVLM(cfg)
    objective = VLMObjective(model, len(prompt_ids(tokenizer)), settings.label_smoothing)
    teacher = None
    source = settings.teacher or settings.init_from
    if source:
        teacher = load_teacher(source, cfg)
        start_from_teacher(model, teacher)
    if settings.distils:
        objective = DistillObjective(objective, teacher)
    started = time.monotonic()
    resumed = any((workdir / f"checkpoint-{name}").exists() for name in (VISION_STAGE, STAGE))

    def batch(step: int, generator: torch.Generator) -> dict:
        return {"batch": vlm_batch(cfg, tokenizer, settings.seed, step, settings.batch, rank, world_size,
                                   settings.questions_per_scene, generator), "generator": generator}

    seconds = {}
    if settings.warms_up_vision:
        warmup = VisionWarmup(objective)
        run_stage(VISION_STAGE, warmup, warmup.trained(), settings.vision_steps, settings.lr, settings, workdir,
                  objective.trainable, batch, progress_bar(progress and rank == 0))
        barrier()
        seconds["vision"] = round(time.monotonic() - started, 1)
    trained = [p for p in objective.parameters() if p.requires_grad]
    run_stage(STAGE, objective, trained, settings.steps, settings.lr, settings, workdir, objective.trainable,
              batch, progress_bar(progress and rank == 0))
    barrier()
    load_checkpoint(workdir / f"checkpoint-{STAGE}", objective.trainable, None)
    if rank == 0:
        total = time.monotonic() - started
        seconds["distill" if settings.distils else "train"] = round(total - seconds.get("vision", 0.0), 1)
        meta = {**vlm_metadata(cfg, settings), "training_seconds": f"{total:.0f}",
                "stage_seconds": json.dumps(seconds), "resumed": json.dumps(resumed)}
        save_weights(model.eval(), final, meta)
        log.info("trained in %.0f s", total)
    barrier()
    return final


__all__ = ["STAGE", "VISION_STAGE", "train_vlm", "vlm_config", "vlm_metadata"]
