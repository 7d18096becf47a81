"""`minivlm prune`: fine-tune an EfficientVLM under hard-concrete gates to one global sparsity target, then make
it physically smaller (`prune_run`).

Per step: fresh demo scenes (`training.vlm_data`), the task loss + KD from the unpruned model + the Lagrangian
(`objective.PruneObjective`); three parameter groups in one AdamW — the model (learning rate with warm-up and
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

import torch

from minivlm.checkpoints import load_checkpoint, save_checkpoint, save_weights
from minivlm.errors import ConfigError
from minivlm.python_ref.efficientvlm.config import vocab_path
from minivlm.python_ref.efficientvlm.generate import prompt_ids
from minivlm.python_ref.efficientvlm.model import EfficientVLM
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


@dataclass(frozen=True)
class PruneSettings:
    """Everything that determines a pruning run; the same settings reproduce the same pruned model."""

    model: str  # the weights file (or preset with bundled weights) of the EfficientVLM to prune
    task: str = "caption"  # the task it keeps: caption, vqa or match
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

    def __post_init__(self) -> None:
        def check(name: str, ok: bool, expected: str) -> None:
            if not ok:
                raise ConfigError(f"pruning setting {name} is {getattr(self, name)!r}, expected {expected}")

        def real(v: object) -> bool:
            return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

        def count(v: object, low: int) -> bool:
            return isinstance(v, int) and not isinstance(v, bool) and v >= low

        check("model", isinstance(self.model, str) and bool(self.model), "a weights file or preset name")
        check("task", self.task in TASKS, f"one of {', '.join(TASKS)}")
        check("sparsity", real(self.sparsity) and 0 < self.sparsity <= MAX_SPARSITY, f"a fraction in (0, {MAX_SPARSITY}]")
        for name in ("steps", "batch", "questions_per_scene", "checkpoint_every"):
            check(name, count(getattr(self, name), 1), "an integer >= 1")
        check("warmup_steps", count(self.warmup_steps, 0) and self.warmup_steps < self.steps,
              f"an integer in [0, steps = {self.steps})")
        for name in ("lr", "reg_lr", "lambda_lr"):
            check(name, real(getattr(self, name)) and getattr(self, name) > 0, "a finite number > 0")
        check("weight_decay", real(self.weight_decay) and self.weight_decay >= 0, "a finite number >= 0")
        check("warmup_fraction", real(self.warmup_fraction) and 0 <= self.warmup_fraction <= 1, "a fraction in [0, 1]")
        check("label_smoothing", real(self.label_smoothing) and 0 <= self.label_smoothing < 1, "a number in [0, 1)")
        check("seed", count(self.seed, 0) and self.seed < 2**63, "an integer in [0, 2**63)")


def load_prunable(model: str) -> tuple[EfficientVLM, dict[str, str]]:
    """The EfficientVLM of a weights file or preset (eval mode), and its file's metadata."""
    from minivlm.loading import bundled_weights, load

    loaded = load(model)
    net = loaded.pipeline.model
    if not isinstance(net, EfficientVLM):
        raise ConfigError(f"{model!r} is not an EfficientVLM; `minivlm prune` prunes EfficientVLM models")
    path = Path(model) if Path(model).suffix == ".safetensors" else bundled_weights(model)
    return net, read_metadata(path)


def _optimizer(objective: PruneObjective, settings: PruneSettings) -> torch.optim.AdamW:
    for p in objective.lagrangian.parameters():
        p.register_hook(torch.neg)  # ascent: AdamW descends on the negated gradient
    groups = [{"params": list(objective.model.parameters()), "lr": settings.lr, "weight_decay": settings.weight_decay},
              {"params": list(objective.gates.parameters()), "lr": settings.reg_lr, "weight_decay": 0.0},
              {"params": list(objective.lagrangian.parameters()), "lr": settings.lambda_lr, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups)


def prune_run(settings: PruneSettings, workdir: str | Path, *, progress: bool = True) -> Path:
    """Run (or resume) the pruning run in `workdir`; returns the path of the final, physically pruned
    `model.safetensors` (its metadata holds the pruning report). A finished run is returned as it is."""
    workdir = Path(workdir)
    rank, world_size = world()
    open_run_folder(workdir, settings, rank)
    final = workdir / "model.safetensors"
    if final.is_file():
        log.info("%s is finished already", final)
        return final
    seed_everything(settings.seed)
    model, metadata = load_prunable(settings.model)
    teacher = copy.deepcopy(model).eval().requires_grad_(False)
    cfg = model.cfg
    tokenizer = Tokenizer.from_vocab(vocab_path(cfg))
    gates = PruningGates(prunable_units(model), torch.Generator().manual_seed(settings.seed))
    objective = PruneObjective(model, teacher, gates, settings.task, len(prompt_ids(tokenizer)), settings.label_smoothing)
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
    bar = progress_bar(progress and rank == 0)(range(start, settings.steps), desc=f"prune {settings.task}",
                                                initial=start, total=settings.steps)
    model_params = list(model.parameters())
    for step in bar:
        seed = _step_seed(settings.seed, STAGE, step, rank)
        generator = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)
        batch = vlm_batch(cfg, tokenizer, settings.seed, step, settings.batch, rank, world_size,
                          settings.questions_per_scene, generator)
        target = target_at(step, settings.sparsity, settings.warmup_steps)
        out = wrapped(batch, generator, target)
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
        pruned = prune(model.eval(), masks)
        expected = float(gates.expected_sparsity().detach()), gates.expected_by_modality()
        report = pruning_report(model, pruned, settings, expected)
        report["mask_offset"] = offset  # `PruningGates.deterministic`'s calibration of the masks to the target
        log.info("%s", format_report(report))
        meta = {k: v for k, v in metadata.items() if k in ("preset", "family", "vocabularies")}
        meta.update(pruned_metadata(pruned, report))
        meta.update({"training": json.dumps(dataclasses.asdict(settings)), "resumed": json.dumps(start > 0)})
        if seconds is not None:  # a run resumed from a checkpoint that did not record its time has none
            meta["training_seconds"] = f"{seconds:.0f}"
        save_weights(pruned, final, meta)
    barrier()
    return final


def pruned_metadata(pruned: EfficientVLM, report: dict) -> dict[str, str]:
    """The metadata entries of a pruned model: its structure (how `minivlm.load` rebuilds it) and report."""
    from minivlm.python_ref.efficientvlm.config import structure

    return {"structure": json.dumps(structure(pruned.cfg)), "pruning": json.dumps(report)}


__all__ = ["MAX_SPARSITY", "PruneSettings", "STAGE", "load_prunable", "prune_run", "pruned_metadata"]
