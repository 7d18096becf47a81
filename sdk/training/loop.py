"""One stage's optimisation loop (seeded per step, resumable from its checkpoint) and the distributed helpers
it needs, which are the identity on one process."""

from __future__ import annotations

import dataclasses
import logging
import os
import random
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from minivlm.checkpoints import load_checkpoint, save_checkpoint
from minivlm.training.settings import STAGES, TrainSettings
from minivlm.training.vlm_settings import VLMTrainSettings

# Every stage name a run can have, in a fixed order: its index seeds the stage's steps. MiniVLM's stages come
# first, so their seeds are those of runs made before EfficientVLM's stage existed.
SEEDED_STAGES = (*STAGES, "vlm", "vlm-vision", "prune")

log = logging.getLogger(__name__)


def world() -> tuple[int, int]:
    """(rank, world size); initialises gloo once when launched by torchrun."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group("gloo")
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _wrap(module: nn.Module) -> nn.Module:
    return DistributedDataParallel(module, find_unused_parameters=True) if dist.is_initialized() else module


def barrier() -> None:
    """Wait for every rank (nothing to wait for on one process)."""
    if dist.is_initialized():
        dist.barrier()


def _schedule(step: int, total: int, warmup_fraction: float) -> float:
    """Linear warm-up then cosine decay to 5 %."""
    warmup = max(1, int(total * warmup_fraction))
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return float(0.05 + 0.95 * 0.5 * (1 + np.cos(np.pi * progress)))


def _step_seed(seed: int, stage: str, step: int, rank: int) -> int:
    """A seed for one (stage, step, rank), stable across processes (unlike `hash`, which is salted)."""
    return int(np.random.SeedSequence([seed, SEEDED_STAGES.index(stage), step, rank]).generate_state(1, np.uint64)[0] >> 1)


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators (the model's initialisation draws from torch's)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _no_progress(iterable, **_):
    return iterable


def progress_bar(enabled: bool):
    """A tqdm factory for `run_stage` and the region extraction, or the identity when bars are off."""
    if not enabled:
        return _no_progress
    from tqdm import tqdm

    return lambda iterable, **kw: tqdm(iterable, dynamic_ncols=True, mininterval=2.0, **kw)


def run_stage(
    name: str, objective: nn.Module, params: list[nn.Parameter], steps: int, lr: float,
    settings: TrainSettings | VLMTrainSettings, workdir: Path, model: nn.Module, batch_fn: Callable[[int, torch.Generator], dict], progress: Callable,
) -> None:
    """Train `params` on `objective(**batch_fn(step, generator))` for `steps` steps (AdamW, `_schedule`),
    resuming from `workdir/checkpoint-<name>` if it exists; rank 0 checkpoints every `checkpoint_every` steps."""
    rank, _ = world()
    ckpt = workdir / f"checkpoint-{name}"
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=settings.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: _schedule(s, steps, settings.warmup_fraction))
    start = 0
    if ckpt.exists():
        state = load_checkpoint(ckpt, model, optimizer)
        start = state["step"]
        for group in optimizer.param_groups:  # the schedule's value at `start`, as the uninterrupted run had it
            group["lr"] = group["initial_lr"] * _schedule(start, steps, settings.warmup_fraction)
        scheduler.last_epoch = start
        log.info("resuming %s at step %d", name, start)
    wrapped = _wrap(objective)
    wrapped.train()
    bar = progress(range(start, steps), desc=name, initial=start, total=steps) if progress is not _no_progress else range(start, steps)
    for step in bar:
        # Seeded per (stage, step, rank): a resumed run draws exactly what the uninterrupted run would have.
        step_seed = _step_seed(settings.seed, name, step, rank)
        generator = torch.Generator().manual_seed(step_seed)
        torch.manual_seed(step_seed)  # dropout draws from the global generator
        losses = wrapped(**batch_fn(step, generator))
        loss = sum(losses.values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 5.0)
        optimizer.step()
        scheduler.step()
        if hasattr(bar, "set_postfix"):
            bar.set_postfix({k: f"{v.item():.3f}" for k, v in losses.items()}, refresh=False)
        done = step + 1
        if rank == 0 and (done % settings.checkpoint_every == 0 or done == steps):
            save_checkpoint(ckpt, model, optimizer, {"stage": name, "step": done, "settings": dataclasses.asdict(settings)})
        barrier()
    objective.eval()
