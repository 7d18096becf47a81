"""The loss of one pruning step (`PruneObjective`): the task loss of the model under freshly sampled gates,
distillation from the unpruned model, and the Lagrangian that holds the expected sparsity at the step's target:

    loss = 0.6 · task + 0.4 · KD + λ₁ (ŝ − t) + λ₂ (ŝ − t)²

as EfficientVLM's task-specific pruning (Wang et al., arXiv 2210.07795; upstream swaggy-TN/EfficientVLM
`Eff_VQA.py`, `Eff_Captioning.py`). The KD terms are `training.distill_losses`' (hidden states, attention, the
task's logits), student layer i against the unpruned model's layer i. Only the passes the task needs run:
`caption` the image and the causal caption pass, `vqa` the image and the question pass, `match` the image,
caption and ITM passes of `training.vlm_objectives` (ITC + ITM).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from minivlm.errors import ConfigError
from minivlm.python_ref.efficientvlm.model import EfficientVLM
from minivlm.python_ref.efficientvlm.taps import Recorded, recording
from minivlm.training.distill_losses import StackStates, combine, kd_terms, kd_total
from minivlm.training.vlm_data import VLMBatch
from minivlm.training.vlm_objectives import IGNORE, VLMObjective

from .sparsity import Lagrangian, PruningGates
from .units import masked

TASKS = ("caption", "vqa", "match")


@dataclass
class _Pass:
    loss: torch.Tensor
    logits: torch.Tensor
    logit_mask: torch.Tensor | None
    stacks: dict[str, StackStates]


def _stacks(rec: Recorded, text_mask: torch.Tensor) -> dict[str, StackStates]:
    return {"vision": StackStates(rec.vision.hidden, rec.vision.attention),
            "text": StackStates(rec.text.hidden, rec.text.attention, text_mask),
            "cross": StackStates(rec.cross.hidden, rec.cross.attention, text_mask, rec.cross.cross_attention)}


def _caption(model: EfficientVLM, batch: VLMBatch, prompt_length: int, smoothing: float) -> _Pass:
    prompted = batch.caption_prompted
    with recording(model) as rec:
        image = model.encode_image(batch.images)
        fused = model.fuse_causal(model.text.forward_causal(prompted.ids, prompted.mask), prompted.mask, image)
    logits = model.mlm_logits(fused[:, prompt_length - 1: -1])  # position t predicts token t + 1
    labels = prompted.ids[:, prompt_length:].masked_fill(prompted.mask[:, prompt_length:] == 0, IGNORE)
    loss = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=IGNORE, label_smoothing=smoothing)
    return _Pass(loss, logits, prompted.mask[:, prompt_length:], _stacks(rec, prompted.mask))


def _vqa(model: EfficientVLM, batch: VLMBatch) -> _Pass:
    q = batch.questions
    with recording(model) as rec:
        image = model.encode_image(batch.images)
        fused = model.fuse(model.encode_text(q.ids, q.mask), q.mask, image[batch.question_scene])
    logits = model.heads.vqa_logits(fused)
    return _Pass(F.cross_entropy(logits, batch.answers), logits, None, _stacks(rec, q.mask))


class PruneObjective(nn.Module):
    """One task's pruning loss of `model` (trained) under `gates`, distilled from the frozen `teacher` (the
    unpruned model). Holds the model, the gates and the Lagrangian, so that one checkpoint keeps them all."""

    def __init__(self, model: EfficientVLM, teacher: EfficientVLM, gates: PruningGates, task: str,
                 prompt_length: int, label_smoothing: float) -> None:
        super().__init__()
        if task not in TASKS:
            raise ConfigError(f"task is {task!r}, expected one of {', '.join(TASKS)}")
        self.task, self.prompt_length, self.label_smoothing = task, prompt_length, label_smoothing
        self.student = VLMObjective(model, prompt_length, label_smoothing, training_heads=False)
        self.gates = gates
        self.lagrangian = Lagrangian()
        self.teacher = [VLMObjective(teacher, prompt_length, label_smoothing, training_heads=False)]  # not a submodule

    @property
    def model(self) -> EfficientVLM:
        return self.student.model

    def _run(self, objective: VLMObjective, batch: VLMBatch, generator: torch.Generator,
             negatives: torch.Tensor | None) -> tuple[_Pass, torch.Tensor | None]:
        if self.task == "caption":
            return _caption(objective.model, batch, self.prompt_length, self.label_smoothing), None
        if self.task == "vqa":
            return _vqa(objective.model, batch), None
        out = objective.outputs(batch, generator, functools.partial(recording, objective.model), negatives=negatives)
        rec = out.recorded
        stacks = {"vision": StackStates(rec.vision.hidden, rec.vision.attention),
                  "text": StackStates(rec.text.hidden, rec.text.attention, batch.caption_text.mask),
                  "cross": StackStates(rec.cross.hidden, rec.cross.attention, out.itm_mask, rec.cross.cross_attention)}
        return _Pass(out.losses["itc"] + out.losses["itm"], out.logits["itm"], None, stacks), out.negatives

    def forward(self, batch: VLMBatch, generator: torch.Generator, target: float) -> dict[str, torch.Tensor]:
        masks = self.gates.sample(generator)
        with masked(self.model, self.gates.units, masks):
            student, negatives = self._run(self.student, batch, generator, None)
        with torch.no_grad():
            teacher, _ = self._run(self.teacher[0], batch, generator, negatives)
        masks_of = {} if student.logit_mask is None else {self.task: student.logit_mask}
        terms = kd_terms(student.stacks, teacher.stacks, {self.task: student.logits}, {self.task: teacher.logits},
                         masks_of)
        expected = self.gates.expected_sparsity()
        lagrangian = self.lagrangian(expected, target)
        return {"loss": combine(student.loss, kd_total(terms)) + lagrangian,
                "task": student.loss.detach(), "kd": kd_total(terms).detach(), "lagrangian": lagrangian.detach(),
                "expected_sparsity": expected.detach()}


__all__ = ["PruneObjective", "TASKS"]
