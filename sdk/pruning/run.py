"""`minivlm prune`: fine-tune an EfficientVLM, or a MiniVLM's fusion encoder, under hard-concrete gates to one
global sparsity target, then make it physically smaller (`prune_run`).

Per step: fresh demo scenes (`training.vlm_data`), the task loss + KD from the unpruned model + the Lagrangian
(`objective.PruneObjective`); for MiniVLM, scenes of a region cache of its own detections, caption + VQA loss + KD
from the unpruned fusion + the Lagrangian (`fusion_objective.FusionPruneObjective`). Three parameter groups in one AdamW — the model (learning rate with warm-up and
cosine decay, as every training run here), the gates' log α (`reg_lr`, constant) and λ₁, λ₂ (`lambda_lr`,
constant, gradient *ascent*: their gradients are negated, as upstream's negative learning rate does). The target
rises from 0 to `sparsity` over `warmup_steps`. At the end the gates' fixed masks (`gates.deterministic`) are
applied by removing what they zero (`physical.prune`), and the smaller model is saved with its pruning report.

Resumable and DDP-ready as `minivlm train` (`training.loop`): seeded per step, a checkpoint every
`checkpoint_every` steps holds the model, the gates, λ and the optimiser, and `torchrun --nproc_per_node N`
splits each step's scenes across ranks.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from minivlm.checkpoints import load_checkpoint, save_checkpoint, save_weights
from minivlm.errors import ConfigError
from minivlm.python_ref.efficientvlm.config import vocab_path
from minivlm.python_ref.efficientvlm.generate import prompt_ids
from minivlm.python_ref.efficientvlm.model import EfficientVLM
from minivlm.python_ref.fusion import Fusion
from minivlm.python_ref.pipeline import MiniVLM
from minivlm.python_ref.tokenizer import Tokenizer
from minivlm.python_ref.weights import read_metadata
from minivlm.training.loop import _schedule, _step_seed, _wrap, barrier, progress_bar, seed_everything, world
from minivlm.training.run_folder import open_run_folder
from minivlm.training.vlm_data import vlm_batch

from .objective import TASKS, PruneObjective
from .physical import prune
from .report import format_report, pruning_report
from .sparsity import PruningGates, target_at
from .units import prunable_units

log = logging.getLogger(__name__)

STAGE = "prune"  # the checkpoint folder: checkpoint-prune
MAX_SPARSITY = 0.95  # a target above this would leave layers with nothing to learn from; refused
MINIVLM_TASK = "caption+vqa"  # a MiniVLM's pruned fusion keeps both tasks its bundled model serves


@dataclass(frozen=True)
class PruneSettings:
    """Everything that determines a pruning run; the same settings reproduce the same pruned model."""

    model: str  # the weights file (or preset with bundled weights) of the EfficientVLM or MiniVLM to prune
    task: str = "caption"  # the task it keeps: caption, vqa or match (EfficientVLM); MINIVLM_TASK for a MiniVLM
    sparsity: float = 0.25  # t: the fraction of the prunable (head and neuron) parameters to remove
    steps: int = 400
    warmup_steps: int = 150  # the target rises from 0 to t over these steps, then holds for the rest
    batch: int = 32  # scenes per step
    questions_per_scene: int = 2
    lr: float = 2e-4  # the model's peak learning rate (fine-tuning a trained model)
    reg_lr: float = 0.05  # the gates' log α
    lambda_lr: float = 0.05  # λ₁, λ₂ (ascent)
    weight_decay: float = 0.01
    warmup_fraction: float = 0.05  # of the model's learning-rate schedule
    label_smoothing: float = 0.1
    seed: int = 1
    checkpoint_every: int = 100
    region_scenes: int = 1000  # MiniVLM: scenes whose detections (region cache) the fusion is fine-tuned on

    def __post_init__(self) -> None:
        def check(name: str, ok: bool, expected: str) -> None:
            if not ok:
                raise ConfigError(f"pruning setting {name} is {getattr(self, name)!r}, expected {expected}")

        def real(v: object) -> bool:
            return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

        def count(v: object, low: int) -> bool:
            return isinstance(v, int) and not isinstance(v, bool) and v >= low

        check("model", isinstance(self.model, str) and bool(self.model), "a weights file or preset name")
        check("task", self.task in (*TASKS, MINIVLM_TASK), f"one of {', '.join(TASKS)} (EfficientVLM) or {MINIVLM_TASK} (MiniVLM)")
        check("sparsity", real(self.sparsity) and 0 < self.sparsity <= MAX_SPARSITY, f"a fraction in (0, {MAX_SPARSITY}]")
        for name in ("steps", "batch", "questions_per_scene", "checkpoint_every", "region_scenes"):
            check(name, count(getattr(self, name), 1), "an integer >= 1")
        check("warmup_steps", count(self.warmup_steps, 0) and self.warmup_steps < self.steps,
              f"an integer in [0, steps = {self.steps})")
        for name in ("lr", "reg_lr", "lambda_lr"):
            check(name, real(getattr(self, name)) and getattr(self, name) > 0, "a finite number > 0")
        check("weight_decay", real(self.weight_decay) and self.weight_decay >= 0, "a finite number >= 0")
        check("warmup_fraction", real(self.warmup_fraction) and 0 <= self.warmup_fraction <= 1, "a fraction in [0, 1]")
        check("label_smoothing", real(self.label_smoothing) and 0 <= self.label_smoothing < 1, "a number in [0, 1)")
        check("seed", count(self.seed, 0) and self.seed < 2**63, "an integer in [0, 2**63)")


def task_for(model: str, task: str | None) -> str:
    """The `task` setting of a run on `model` (a preset or weights file): `task` for an EfficientVLM (default
    caption); MINIVLM_TASK for a MiniVLM, whose fusion is pruned for every task at once (ConfigError for another)."""
    from minivlm.python_ref.families import PRESET_FAMILIES

    preset = model
    if model not in PRESET_FAMILIES and Path(model).suffix == ".safetensors" and Path(model).is_file():
        preset = read_metadata(model).get("preset", model)
    family = PRESET_FAMILIES.get(preset)
    if family is None or family.name != "minivlm":
        return task or "caption"
    if task not in (None, MINIVLM_TASK):
        raise ConfigError(f"task is {task!r}, but {model!r} is a MiniVLM, whose fusion is pruned for captions and VQA "
                          f"at once: leave --task out")
    return MINIVLM_TASK


def load_prunable(model: str) -> tuple[nn.Module, dict[str, str]]:
    """The model of a weights file or preset (eval mode), EfficientVLM or MiniVLM, and its file's metadata."""
    from minivlm.loading import bundled_weights, load

    loaded = load(model)
    net = loaded.pipeline.model
    if not isinstance(net, (EfficientVLM, MiniVLM)):
        raise ConfigError(f"{model!r} is neither an EfficientVLM nor a MiniVLM; `minivlm prune` prunes those")
    path = Path(model) if Path(model).suffix == ".safetensors" else bundled_weights(model)
    return net, read_metadata(path)


def _optimizer(objective: nn.Module, settings: PruneSettings) -> torch.optim.AdamW:
    for p in objective.lagrangian.parameters():
        p.register_hook(torch.neg)  # ascent: AdamW descends on the negated gradient
    groups = [{"params": list(objective.model.parameters()), "lr": settings.lr, "weight_decay": settings.weight_decay},
              {"params": list(objective.gates.parameters()), "lr": settings.reg_lr, "weight_decay": 0.0},
              {"params": list(objective.lagrangian.parameters()), "lr": settings.lambda_lr, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups)


@dataclass
class _Job:
    """What differs between the families: the objective (an nn.Module with `model`, the module the gates prune,
    `gates` and `lagrangian`, called as `objective(**batch(step, generator), target=t)`), the step's inputs, and
    the whole model to save around the pruned module."""

    objective: nn.Module
    batch: Callable[[int, torch.Generator], dict]
    whole: Callable[[nn.Module], nn.Module]


def _efficientvlm_job(model: EfficientVLM, metadata: dict[str, str], settings: PruneSettings, rank: int,
                      world_size: int, workdir: Path, progress: Callable) -> _Job:
    if settings.task == MINIVLM_TASK:
        raise ConfigError(f"pruning setting task is {settings.task!r}: an EfficientVLM is pruned for one task, "
                          f"one of {', '.join(TASKS)}")
    cfg = model.cfg
    tokenizer = Tokenizer.from_vocab(vocab_path(cfg))
    teacher = copy.deepcopy(model).eval().requires_grad_(False)
    gates = PruningGates(prunable_units(model), torch.Generator().manual_seed(settings.seed))
    objective = PruneObjective(model, teacher, gates, settings.task, len(prompt_ids(tokenizer)), settings.label_smoothing)

    def batch(step: int, generator: torch.Generator) -> dict:
        return {"batch": vlm_batch(cfg, tokenizer, settings.seed, step, settings.batch, rank, world_size,
                                   settings.questions_per_scene, generator), "generator": generator}

    return _Job(objective, batch, lambda pruned: pruned)


def _minivlm_job(model: MiniVLM, metadata: dict[str, str], settings: PruneSettings, rank: int, world_size: int,
                 workdir: Path, progress: Callable) -> _Job:
    """MiniVLM: its fusion encoder is pruned (the detector has no heads or neurons), for captions and VQA at once,
    on a region cache of the model's own detections on `region_scenes` scenes (made once, in the run folder)."""
    from minivlm.python_ref.pipeline import Pipeline, Vocabularies
    from minivlm.python_ref.scenes import ANSWERS
    from minivlm.training.data import RegionCache, build_region_cache

    from .fusion_objective import FusionPruneObjective

    if settings.task != MINIVLM_TASK:
        raise ConfigError(f"pruning setting task is {settings.task!r}: a MiniVLM's fusion is pruned for every task "
                          f"at once (task {MINIVLM_TASK!r}); --task is EfficientVLM's")
    vocab = Vocabularies(**{k: tuple(v) for k, v in json.loads(metadata["vocabularies"]).items()})
    if vocab.answers != ANSWERS:
        raise ConfigError(f"{settings.model!r} answers {len(vocab.answers)} answers that are not the demo scenes' "
                          f"{len(ANSWERS)}: MiniVLM pruning fine-tunes on the demo scenes")
    tokenizer = Tokenizer.default()
    cache_path = workdir / "regions.safetensors"
    if rank == 0 and not cache_path.exists():
        pipe = Pipeline.from_model(model, tokenizer, vocab)
        build_region_cache(pipe, settings.seed, 0, settings.region_scenes, progress).save(cache_path)
    barrier()
    cache = RegionCache.load(cache_path)
    fusion = model.fusion
    teacher = copy.deepcopy(fusion).eval().requires_grad_(False)
    gates = PruningGates(prunable_units(fusion), torch.Generator().manual_seed(settings.seed))
    objective = FusionPruneObjective(fusion, teacher, gates, tokenizer, settings.label_smoothing)
    questions = settings.batch * settings.questions_per_scene

    def batch(step: int, generator: torch.Generator) -> dict:
        return {"cache": cache, "generator": generator, "batch": settings.batch, "questions": questions}

    def whole(pruned: Fusion) -> MiniVLM:
        out = MiniVLM(dataclasses.replace(model.cfg, fusion=pruned.cfg))
        out.tee.load_state_dict(model.tee.state_dict())
        out.fusion.load_state_dict(pruned.state_dict())
        return out.eval()

    return _Job(objective, batch, whole)


def prune_run(settings: PruneSettings, workdir: str | Path, *, progress: bool = True) -> Path:
    """Run (or resume) the pruning run in `workdir`; returns the path of the final, physically pruned
    `model.safetensors` (its metadata holds the pruning report). A finished run is returned as it is.
    An EfficientVLM is pruned whole for `settings.task`; a MiniVLM's fusion encoder for captions and VQA together
    (`settings.task` = MINIVLM_TASK), its detector kept as it is."""
    workdir = Path(workdir)
    rank, world_size = world()
    open_run_folder(workdir, settings, rank)
    final = workdir / "model.safetensors"
    if final.is_file():
        log.info("%s is finished already", final)
        return final
    seed_everything(settings.seed)
    model, metadata = load_prunable(settings.model)
    bar_of = progress_bar(progress and rank == 0)
    make = _minivlm_job if isinstance(model, MiniVLM) else _efficientvlm_job
    job = make(model, metadata, settings, rank, world_size, workdir, bar_of)
    objective, gates, pruned_module = job.objective, job.objective.gates, job.objective.model
    optimizer = _optimizer(objective, settings)
    model_lr = lambda s: _schedule(s, settings.steps, settings.warmup_fraction)  # noqa: E731
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, [model_lr, lambda s: 1.0, lambda s: 1.0])
    ckpt, start, started = workdir / f"checkpoint-{STAGE}", 0, time.monotonic()
    before: float | None = 0.0  # seconds the run took before this process (None: a checkpoint that did not say)
    if ckpt.exists():
        state = load_checkpoint(ckpt, objective, optimizer)
        start, before = state["step"], state.get("seconds")
        optimizer.param_groups[0]["lr"] = settings.lr * model_lr(start)
        scheduler.last_epoch = start
        log.info("resuming the pruning run at step %d", start)
    wrapped = _wrap(objective)
    wrapped.train()
    bar = bar_of(range(start, settings.steps), desc=f"prune {settings.task}", initial=start, total=settings.steps)
    model_params = list(pruned_module.parameters())
    for step in bar:
        seed = _step_seed(settings.seed, STAGE, step, rank)
        generator = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)
        target = target_at(step, settings.sparsity, settings.warmup_steps)
        out = wrapped(**job.batch(step, generator), target=target)
        optimizer.zero_grad(set_to_none=True)
        out["loss"].backward()
        torch.nn.utils.clip_grad_norm_(model_params, 5.0)
        optimizer.step()
        gates.clamp_()
        scheduler.step()
        if hasattr(bar, "set_postfix"):
            bar.set_postfix({"ŝ": f"{out['expected_sparsity'].item():.3f}", "t": f"{target:.3f}",
                             "λ₁": f"{objective.lagrangian.lambda_1.item():.3f}",
                             "λ₂": f"{objective.lagrangian.lambda_2.item():.3f}",
                             "task": f"{out['task'].item():.3f}", "kd": f"{out['kd'].item():.3f}"}, refresh=False)
        done = step + 1
        if rank == 0 and (done % settings.checkpoint_every == 0 or done == settings.steps):
            seconds = None if before is None else before + time.monotonic() - started
            save_checkpoint(ckpt, objective, optimizer, {"stage": STAGE, "step": done, "seconds": seconds,
                                                         "settings": dataclasses.asdict(settings)})
        barrier()
    seconds = load_checkpoint(ckpt, objective, None).get("seconds")  # the steps' time, resumed segments summed
    if rank == 0:
        masks, offset = gates.deterministic(settings.sparsity)
        pruned = prune(pruned_module.eval(), masks)
        expected = float(gates.expected_sparsity().detach()), gates.expected_by_modality()
        report = pruning_report(pruned_module, pruned, settings, expected)
        report["mask_offset"] = offset  # `PruningGates.deterministic`'s calibration of the masks to the target
        log.info("%s", format_report(report))
        whole = job.whole(pruned)
        meta = {k: v for k, v in metadata.items() if k in ("preset", "family", "vocabularies")}
        meta.update(pruned_metadata(whole, report))
        meta.update({"training": json.dumps(dataclasses.asdict(settings)), "resumed": json.dumps(start > 0)})
        if seconds is not None:  # a run resumed from a checkpoint that did not record its time has none
            meta["training_seconds"] = f"{seconds:.0f}"
        save_weights(whole, final, meta)
    barrier()
    return final


def pruned_metadata(pruned: nn.Module, report: dict) -> dict[str, str]:
    """The metadata entries of a pruned model (an EfficientVLM or a whole MiniVLM): its structure (how
    `minivlm.load` rebuilds it, its family's `structure`) and report."""
    from minivlm.python_ref.families import family_of

    return {"structure": json.dumps(family_of(pruned.cfg).structure(pruned.cfg)), "pruning": json.dumps(report)}


__all__ = ["MAX_SPARSITY", "MINIVLM_TASK", "PruneSettings", "STAGE", "load_prunable", "prune_run", "pruned_metadata", "task_for"]
