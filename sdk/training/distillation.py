"""EfficientVLM's general distillation as a training objective (`DistillObjective`): the student's task losses
(`vlm_objectives`) and the distillation terms (`distill_losses`) against a frozen teacher on the same batch,
weighed 0.6 task + 0.4 KD (Wang et al., arXiv 2210.07795).

What is distilled, per step: the image pass (vision hidden states and attention), the caption pass of the
text encoder, and the ITM pass of the cross-modal stack (positives and the student's hard negatives, the
teacher seeing the same pairs), as upstream distils its cross encoder on the ITM passes; and the logits of
ITM, VQA and captioning (KL at T = 1). The student starts from the teacher (`start_from_teacher`).
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch
from torch import nn

from minivlm.errors import ConfigError
from minivlm.python_ref.efficientvlm.config import PRESETS, EfficientVLMConfig
from minivlm.python_ref.efficientvlm.model import EfficientVLM
from minivlm.python_ref.efficientvlm.taps import recording
from minivlm.python_ref.weights import load_weights, read_metadata
from minivlm.training.distill_init import init_student_from_teacher, layer_ratios, teacher_name
from minivlm.training.distill_losses import StackStates, combine, kd_terms, kd_total
from minivlm.training.vlm_data import VLMBatch
from minivlm.training.vlm_objectives import TaskOutputs, VLMObjective


def load_teacher(path: str | Path, student: EfficientVLMConfig) -> EfficientVLM:
    """The frozen EfficientVLM in the weights file `path` (its preset from the file's metadata), in eval mode.
    ConfigError unless it is an EfficientVLM the student can learn from (same widths; `distill_init` checks
    the depths)."""
    preset = read_metadata(path).get("preset", "")
    if preset not in PRESETS:
        raise ConfigError(f"{path} holds a {preset or 'model without a preset'!r}, expected EfficientVLM weights "
                          f"(presets: {', '.join(sorted(PRESETS))})")
    teacher = EfficientVLM(PRESETS[preset]())
    load_weights(teacher, path)
    if teacher.cfg.text.vocab_size != student.text.vocab_size or teacher.cfg.num_answers != student.num_answers:
        raise ConfigError(f"teacher {preset!r} and student {student.name!r} have other vocabularies or answer lists")
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher.eval()


def start_from_teacher(student: EfficientVLM, teacher: EfficientVLM) -> None:
    """The student's layers from the teacher's (student layer i <- teacher layer 2i; everything shared by name
    and shape). A feed-forward layer narrower than the teacher's keeps the teacher's neurons with the largest
    weights (|input row| * |output column|): the closest narrower layer to start from."""
    init_student_from_teacher(student, teacher)
    ratios = layer_ratios(student, teacher)
    source = teacher.state_dict()
    with torch.no_grad():
        for name, module in student.named_modules():
            for first, second in (("mlp_in", "mlp_out"), ("ffn_in", "ffn_out")):  # ViT block, text FFN
                fc_in, fc_out = getattr(module, first, None), getattr(module, second, None)
                if not isinstance(fc_in, nn.Linear):
                    continue
                w_in = source[teacher_name(f"{name}.{first}.weight", ratios)]
                if w_in.shape[0] == fc_in.out_features:
                    continue  # the same width: copied as it is
                w_out = source[teacher_name(f"{name}.{second}.weight", ratios)]
                keep = (w_in.norm(dim=1) * w_out.norm(dim=0)).topk(fc_in.out_features).indices.sort().values
                fc_in.weight.copy_(w_in[keep])
                fc_in.bias.copy_(source[teacher_name(f"{name}.{first}.bias", ratios)][keep])
                fc_out.weight.copy_(w_out[:, keep])


class DistillObjective(nn.Module):
    """0.6 task + 0.4 KD of a student (`VLMObjective`) against a frozen teacher, every term reported by name."""

    def __init__(self, student: VLMObjective, teacher: EfficientVLM) -> None:
        super().__init__()
        self.student = student
        self.teacher = VLMObjective(teacher, student.prompt_length, student.label_smoothing, training_heads=False)

    @property
    def trainable(self) -> nn.Module:
        return self.student

    def forward(self, batch: VLMBatch, generator: torch.Generator) -> dict[str, torch.Tensor]:
        student = self.student.outputs(batch, generator, functools.partial(recording, self.student.model))
        with torch.no_grad():
            teacher = self.teacher.outputs(batch, generator, functools.partial(recording, self.teacher.model),
                                           negatives=student.negatives)
        terms = kd_terms(_stacks(student, batch), _stacks(teacher, batch), student.logits, teacher.logits,
                         {k: v for k, v in student.logit_masks.items() if v is not None})
        task = torch.stack(list(student.losses.values())).sum()
        losses = {f"task_{k}": v.detach() for k, v in student.losses.items()}
        losses.update({f"kd_{k}": v.detach() for k, v in terms.items()})
        losses["loss"] = combine(task, kd_total(terms))
        return losses


def _stacks(out: TaskOutputs, batch: VLMBatch) -> dict[str, StackStates]:
    rec = out.recorded
    return {
        "vision": StackStates(rec.vision.hidden, rec.vision.attention),
        "text": StackStates(rec.text.hidden, rec.text.attention, batch.caption_text.mask),
        "cross": StackStates(rec.cross.hidden, rec.cross.attention, out.itm_mask, rec.cross.cross_attention),
    }


__all__ = ["DistillObjective", "load_teacher", "start_from_teacher"]
