"""Training the demo model on generated scenes, with MiniVLM's recipe (docs/ARCHITECTURE.md §2; arXiv 2012.06946).

Stages, each resumable from its last checkpoint:
1. `detector`  — TEE as a Faster R-CNN: RPN objectness/box losses + box-head classification, class-specific
   regression and attribute (colour) losses, on freshly generated scenes every step.
2. `regions`   — the trained TEE (eval mode, exactly the inference pipeline) turns a pool of scenes into
   region tokens and tags once; fusion training reads them, as OSCAR trains on pre-extracted features.
3. `pretrain`  — fusion pre-training: masked-token loss over text and tags (full attention) + the 2-way
   match loss on [CLS] with tags polluted (swapped with another scene's) half of the time.
4. `finetune`  — caption fine-tuning with the seq2seq mask (masked caption tokens, label smoothing 0.1)
   together with VQA fine-tuning of the answer classifier and the match loss, so that one bundled model
   serves every task (OSCAR fine-tunes one model per task; the demo ships one).

Runs on CPU as it is, and unchanged under `torchrun --nproc_per_node N` (gloo, DistributedDataParallel):
every rank draws its own scene indices, gradients are averaged by DDP, rank 0 writes checkpoints.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Callable

import torch

from minivlm.checkpoints import load_checkpoint, save_weights
from minivlm.errors import ConfigError
from minivlm.python_ref.config import MiniVLMConfig, get_config
from minivlm.python_ref.pipeline import MiniVLM, Pipeline, Vocabularies
from minivlm.python_ref.tokenizer import Tokenizer
from minivlm.training.data import DEMO_VOCABULARIES, RegionCache, build_region_cache, detector_inputs, scene_batch
from minivlm.training.loop import barrier, progress_bar, run_stage, seed_everything, world
from minivlm.training.objectives import DetectorObjective, FusionObjective
from minivlm.training.run_folder import RUN_FILE, open_run_folder
from minivlm.training.settings import STAGES, TrainSettings

__all__ = ["RUN_FILE", "STAGES", "TrainSettings", "model_metadata", "train"]

log = logging.getLogger(__name__)


def model_metadata(cfg: MiniVLMConfig, vocab: Vocabularies, settings: TrainSettings | None) -> dict[str, str]:
    """What a weights file says about itself: preset, vocabularies, and the recipe that made it."""
    meta = {"preset": cfg.name, "vocabularies": json.dumps(dataclasses.asdict(vocab))}
    if settings is not None:
        meta["training"] = json.dumps(dataclasses.asdict(settings))
    return meta


def train(settings: TrainSettings, workdir: str | Path, *, progress: bool = True) -> Path:
    """Run (or resume) every stage in `workdir`; returns the path of the final `model.safetensors`.

    `workdir` must be new, empty, or a folder this function made with the same settings (then the run
    resumes from its checkpoints); it records the settings in `run.json` when it makes it.
    Rank 0 writes the final weights; other ranks return the same path once it exists.
    """
    cfg = get_config(settings.preset)
    if cfg.tee.roi_head.num_classes != len(DEMO_VOCABULARIES.classes):
        raise ConfigError(f"preset {settings.preset!r} predicts {cfg.tee.roi_head.num_classes} classes; the scenes have "
                          f"{len(DEMO_VOCABULARIES.classes)} (with background)")
    workdir = Path(workdir)
    rank, world_size = world()
    open_run_folder(workdir, settings, rank)
    seed_everything(settings.seed)
    model = MiniVLM(cfg)
    tokenizer = Tokenizer.default()
    bar = progress_bar(progress and rank == 0)
    started = time.monotonic()
    stage_seconds: dict[str, float] = {}  # wall time of each stage in this invocation (a resumed stage: its rest)
    resumed = any(workdir.glob("checkpoint-*")) or (workdir / "regions.safetensors").exists()

    def timed(stage: str, run: Callable[[], None]) -> None:
        begin = time.monotonic()
        run()
        stage_seconds[stage] = round(time.monotonic() - begin, 1)

    detector = DetectorObjective(model.tee, settings)

    def detector_batch(step: int, generator: torch.Generator) -> dict:
        images, boxes, labels, attributes = detector_inputs(
            scene_batch(settings.seed, step, settings.detector_batch, rank, world_size), cfg
        )
        return {"images": images, "gt_boxes": boxes, "gt_labels": labels, "gt_attributes": attributes, "generator": generator}

    timed("detector", lambda: run_stage("detector", detector, list(model.tee.parameters()), settings.detector_steps,
                                         settings.detector_lr, settings, workdir, model, detector_batch, bar))
    _load_latest(workdir, "detector", model)

    cache_path = workdir / "regions.safetensors"

    def extract_regions() -> None:
        if rank == 0 and not cache_path.exists():
            pipe = Pipeline.from_model(model, tokenizer, DEMO_VOCABULARIES)
            # Scenes after every index the detector stage could have drawn: fusion sees fresh images.
            first = settings.detector_steps * settings.detector_batch * world_size
            build_region_cache(pipe, settings.seed, first, settings.region_scenes, bar).save(cache_path)
        barrier()

    timed("regions", extract_regions)
    cache = RegionCache.load(cache_path)

    fusion_objective = FusionObjective(model.fusion, tokenizer, settings)
    for stage, steps in (("pretrain", settings.pretrain_steps), ("finetune", settings.finetune_steps)):
        timed(stage, lambda stage=stage, steps=steps: run_stage(
            stage, fusion_objective, list(model.fusion.parameters()), steps, settings.fusion_lr, settings, workdir, model,
            lambda step, gen: {"cache": cache, "stage": stage, "generator": gen}, bar))
        _load_latest(workdir, stage, model)

    final = workdir / "model.safetensors"
    if rank == 0:
        seconds = time.monotonic() - started  # of this invocation: a resumed run counts only its own part
        meta = {**model_metadata(cfg, DEMO_VOCABULARIES, settings), "training_seconds": f"{seconds:.0f}",
                "stage_seconds": json.dumps(stage_seconds), "resumed": json.dumps(resumed)}
        save_weights(model.eval(), final, meta)
        log.info("trained in %.0f s", seconds)
    barrier()
    return final


def _load_latest(workdir: Path, stage: str, model: MiniVLM) -> None:
    """Every rank continues from the stage's final checkpoint (what rank 0 saved)."""
    barrier()
    load_checkpoint(workdir / f"checkpoint-{stage}", model, None)
