"""The knowledge-distillation terms of EfficientVLM's general distillation (Wang et al., "EfficientVLM: Fast and
Accurate Vision-Language Models via Knowledge Distillation and Modal-adaptive Pruning", arXiv 2210.07795;
upstream swaggy-TN/EfficientVLM `GeneralDistill.py`): the student matches the teacher's hidden states,
attention distributions and logits, stack by stack, on a map that pairs student layer i with teacher layer 2i.

The functions read `StackStates` (lists of tensors and a token mask), not the models, so they do not depend on
how the states were recorded (`states_of` adapts python_ref/efficientvlm/taps.py's `Recorded`). Every term is
returned separately, by name, so that a progress bar can show each; `kd_total` sums them and `combine` weighs
the sum against the task losses. The teacher's side is detached: gradients reach the student only.

Where this differs from the upstream code, on purpose: each term is a mean over its mapped layers (upstream
sums them, and scales each attention MSE by the key count), padded positions are left out (upstream averages
over them too), the cross-modal layers' attention to the image is a term of its own (upstream records it but
distils only self-attention), and every stack's terms count once (upstream weighs the image hidden states by
0.1 and skips the student's last image state). A training loop that wants upstream's weights scales or drops
the named terms before `kd_total`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import torch
import torch.nn.functional as F

from minivlm.errors import ConfigError, InputError
from minivlm.python_ref.efficientvlm.taps import Recorded

TASK_WEIGHT = 0.6  # EfficientVLM's general distillation: L = 0.6 L_task + 0.4 L_kd (arXiv 2210.07795;
KD_WEIGHT = 0.4  # upstream GeneralDistill.py, `loss_in_total = 0.6*loss_small + 0.4*loss_kd`)
TEMPERATURE = 1.0  # the logits' softmax temperature (upstream GeneralDistill.py `--temperature`, default 1.0)


def layer_map(student_layers: int, teacher_layers: int) -> list[tuple[int, int]]:
    """(student, teacher) pairs [(0, 0), (1, 2), ..., (S, 2S)] for a student of S layers and a teacher of 2S.

    Read as hidden-state indices, 0 is the embedding output (the paper distils it too) and i the output of
    layer i; read without (0, 0), as 1-based layer numbers, it pairs student layer i's attention with teacher
    layer 2i's (the last layer of each pair of teacher layers, as upstream's `get_cor_teacher`). The paper's
    student has half its teacher's layers; any whole ratio k pairs i with k·i the same way (k = 1: a copy of
    the teacher, whose distillation terms are all zero)."""
    if student_layers < 1 or teacher_layers < student_layers or teacher_layers % student_layers:
        raise ConfigError(f"a teacher of {teacher_layers} layers is not twice (or another whole multiple of) "
                          f"a student of {student_layers} layers")
    ratio = teacher_layers // student_layers
    return [(i, ratio * i) for i in range(student_layers + 1)]


@dataclass(frozen=True)
class StackStates:
    """One stack's states for one pass of a model.

    `hidden`: (B, T, H) each, the stack's input (the embedding output) first, then one per layer.
    `attention`: (B, heads, T, T) self-attention probabilities, one per layer (layer i at index i-1).
    `mask`: (B, T) 0/1, the valid tokens (None: every token valid, as for image tokens).
    `cross_attention`: (B, heads, T, N) probabilities of attention to a context (the cross-modal layers'
    attention to the image tokens), one per layer, or empty; `context_mask`: (B, N) 0/1 or None (all valid)."""

    hidden: Sequence[torch.Tensor]
    attention: Sequence[torch.Tensor]
    mask: torch.Tensor | None = None
    cross_attention: Sequence[torch.Tensor] = ()
    context_mask: torch.Tensor | None = None

    @property
    def layers(self) -> int:
        """Layers of the stack: the attention maps it has (one per layer)."""
        return len(self.attention)


def states_of(rec: Recorded, text_mask: torch.Tensor, image_mask: torch.Tensor | None = None) -> dict[str, StackStates]:
    """The stacks of a `taps.recording`, by name (`vision`, `text`, `cross`; those that ran), under the 0/1
    `text_mask` (B, T) of the pass and, for the cross-attention's keys, `image_mask` (B, N) (None: all valid)."""
    stacks = {
        "vision": StackStates(rec.vision.hidden, rec.vision.attention),
        "text": StackStates(rec.text.hidden, rec.text.attention, text_mask),
        "cross": StackStates(rec.cross.hidden, rec.cross.attention, text_mask, rec.cross.cross_attention, image_mask),
    }
    return {name: s for name, s in stacks.items() if s.hidden}


def _masked_mse(student: torch.Tensor, teacher: torch.Tensor, weight: torch.Tensor | None, what: str) -> torch.Tensor:
    """Mean squared difference over the elements `weight` (0/1, broadcast to the tensors) keeps."""
    if student.shape != teacher.shape:
        raise InputError(f"{what}: the student's {tuple(student.shape)} and the teacher's {tuple(teacher.shape)} differ")
    squared = (student - teacher.detach()).pow(2)
    if weight is None:
        return squared.mean()
    weight = weight.to(squared.dtype).expand_as(squared)
    return (squared * weight).sum() / weight.sum()


def _pairs(student: StackStates, teacher: StackStates) -> list[tuple[int, int]]:
    for side, s in (("student", student), ("teacher", teacher)):
        if len(s.hidden) != s.layers + 1:
            raise InputError(f"the {side} has {len(s.hidden)} hidden states for {s.layers} layers; "
                             f"a stack has one more (its input) than layers")
    return layer_map(student.layers, teacher.layers)


def hidden_mse(student: StackStates, teacher: StackStates) -> torch.Tensor:
    """Mean over the mapped pairs (`layer_map`, embedding output included) of the MSE between student state i
    and teacher state 2i, over the valid tokens of the student's `mask` (both models see the same batch)."""
    pairs = _pairs(student, teacher)
    weight = None if student.mask is None else student.mask[:, :, None]
    return torch.stack([_masked_mse(student.hidden[i], teacher.hidden[j], weight, f"hidden state {i} <-> {j}")
                        for i, j in pairs]).mean()


def _attention_mse(student: Sequence[torch.Tensor], teacher: Sequence[torch.Tensor], pairs: list[tuple[int, int]],
                   query_mask: torch.Tensor | None, key_mask: torch.Tensor | None, what: str) -> torch.Tensor:
    weight = None
    if query_mask is not None or key_mask is not None:
        q = 1.0 if query_mask is None else query_mask[:, None, :, None]
        k = 1.0 if key_mask is None else key_mask[:, None, None, :]
        weight = q * k  # (B, 1, T, S): a padded query row or a padded key column counts nowhere
    return torch.stack([_masked_mse(student[i - 1], teacher[j - 1], weight, f"{what} of layer {i} <-> {j}")
                        for i, j in pairs[1:]]).mean()


def attention_mse(student: StackStates, teacher: StackStates) -> torch.Tensor:
    """Mean over mapped layers (student layer i <-> teacher layer 2i) of the MSE between self-attention
    probabilities, over valid queries and valid keys (the student's `mask` for both)."""
    return _attention_mse(student.attention, teacher.attention, _pairs(student, teacher),
                          student.mask, student.mask, "self-attention")


def cross_attention_mse(student: StackStates, teacher: StackStates) -> torch.Tensor:
    """As `attention_mse`, for the attention to the context: valid queries by `mask`, valid keys by
    `context_mask`."""
    if len(student.cross_attention) != student.layers or len(teacher.cross_attention) != teacher.layers:
        raise InputError("cross-attention maps must number one per layer, on both sides")
    return _attention_mse(student.cross_attention, teacher.cross_attention, _pairs(student, teacher),
                          student.mask, student.context_mask, "cross-attention")


def logit_kl(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor | None = None,
             temperature: float = TEMPERATURE) -> torch.Tensor:
    """KL(softmax(teacher / T) || softmax(student / T)) * T² over the last axis, averaged over the rows:
    logits (B, C) (ITM's 2 ways, VQA's answers) or (B, T, V) (MLM / caption vocabulary) with `mask` (B, T)
    0/1 choosing the rows that count (the masked or caption positions); None counts every row."""
    if student.shape != teacher.shape:
        raise InputError(f"logits: the student's {tuple(student.shape)} and the teacher's {tuple(teacher.shape)} differ")
    log_s = F.log_softmax(student / temperature, dim=-1)
    log_t = F.log_softmax(teacher.detach() / temperature, dim=-1)
    kl = (log_t.exp() * (log_t - log_s)).sum(-1)  # one value per row
    if mask is None:
        return kl.mean() * temperature**2
    mask = mask.to(kl.dtype)
    return (kl * mask).sum() / mask.sum() * temperature**2


def kd_terms(
    student: Mapping[str, StackStates], teacher: Mapping[str, StackStates],
    student_logits: Mapping[str, torch.Tensor] | None = None, teacher_logits: Mapping[str, torch.Tensor] | None = None,
    logit_masks: Mapping[str, torch.Tensor] | None = None, temperature: float = TEMPERATURE,
) -> dict[str, torch.Tensor]:
    """Every distillation term by name: `{stack}_hidden` and `{stack}_attention` for each stack, also
    `{stack}_cross_attention` where the stack has cross-attention, and `{name}_logits` for each logits pair
    (`logit_kl`, with `logit_masks[name]` if given). The two sides must name the same stacks and logits."""
    student_logits, teacher_logits, logit_masks = student_logits or {}, teacher_logits or {}, logit_masks or {}
    for what, s, t in (("stacks", student, teacher), ("logits", student_logits, teacher_logits)):
        if set(s) != set(t):
            raise InputError(f"the student's {what} {sorted(s)} and the teacher's {sorted(t)} differ")
    terms: dict[str, torch.Tensor] = {}
    for name, s in student.items():
        terms[f"{name}_hidden"] = hidden_mse(s, teacher[name])
        terms[f"{name}_attention"] = attention_mse(s, teacher[name])
        if s.cross_attention:
            terms[f"{name}_cross_attention"] = cross_attention_mse(s, teacher[name])
    for name, logits in student_logits.items():
        terms[f"{name}_logits"] = logit_kl(logits, teacher_logits[name], logit_masks.get(name), temperature)
    return terms


def kd_total(terms: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """The distillation loss: the sum of the terms (`kd_terms`)."""
    if not terms:
        raise InputError("no distillation terms to sum")
    return torch.stack(list(terms.values())).sum()


def combine(task: torch.Tensor, kd: torch.Tensor) -> torch.Tensor:
    """EfficientVLM's general-distillation loss: `TASK_WEIGHT` * task + `KD_WEIGHT` * kd (0.6 and 0.4)."""
    return TASK_WEIGHT * task + KD_WEIGHT * kd


__all__ = ["KD_WEIGHT", "StackStates", "TASK_WEIGHT", "TEMPERATURE", "attention_mse", "combine",
           "cross_attention_mse", "hidden_mse", "kd_terms", "kd_total", "layer_map", "logit_kl", "states_of"]
