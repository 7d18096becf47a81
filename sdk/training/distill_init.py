"""Initialising an EfficientVLM student from its teacher before general distillation, as EfficientVLM does
(Wang et al., arXiv 2210.07795: the student takes every other teacher layer; upstream swaggy-TN/EfficientVLM
`models/xvlm.py`, `load_params_choose_layers` with the mapper {1: 0, 3: 1, 5: 2, ...}, 0-based teacher -> student).

Student layer i (1-based) takes teacher layer 2i's weights: the layer `distill_losses.layer_map` pairs it
with, so at the start of distillation each student layer computes what its teacher layer does, from its own
input. Everything else (embeddings, ln_pre / ln_post, heads) is copied by name.
"""

from __future__ import annotations

import re

import torch

from minivlm.errors import ConfigError
from minivlm.python_ref.efficientvlm.model import EfficientVLM
from minivlm.training.distill_losses import layer_map

LAYER_KEY = re.compile(r"^(vision\.blocks|text\.layers|cross\.layers)\.(\d+)\.(.+)$")  # a layer's parameter


def _check_compatible(student: EfficientVLM, teacher: EfficientVLM) -> None:
    """One line if a width or head count differs, or a stack of the teacher is not twice the student's."""
    pairs = (("vision width", student.cfg.vision.width, teacher.cfg.vision.width),
             ("vision heads", student.cfg.vision.heads, teacher.cfg.vision.heads),
             ("text width", student.cfg.text.hidden_size, teacher.cfg.text.hidden_size),
             ("text heads", student.cfg.text.heads, teacher.cfg.text.heads))
    for what, s, t in pairs:
        if s != t:
            raise ConfigError(f"the student's {what} {s} differs from the teacher's {t}: layers copy only at the same width and heads")
    for prefix in ("vision.blocks", "text.layers", "cross.layers"):
        try:
            layer_map(len(student.get_submodule(prefix)), len(teacher.get_submodule(prefix)))
        except ConfigError as e:
            raise ConfigError(f"{prefix}: {e}") from None


def teacher_key(name: str, ratio: int = 2) -> str:
    """The teacher parameter a student parameter is copied from: layer k (0-based) of a stack <- teacher layer
    ratio·(k + 1) - 1 (0-based), i.e. 1-based layer i <- 2i for the paper's ratio 2; any other name is the same
    name."""
    m = LAYER_KEY.match(name)
    return name if m is None else f"{m[1]}.{ratio * (int(m[2]) + 1) - 1}.{m[3]}"


def layer_ratios(student: EfficientVLM, teacher: EfficientVLM) -> dict[str, int]:
    """Teacher layers per student layer in each stack (2 for the paper's student; `layer_map` checks them)."""
    return {prefix: len(teacher.get_submodule(prefix)) // max(1, len(student.get_submodule(prefix)))
            for prefix in ("vision.blocks", "text.layers", "cross.layers")}


def teacher_name(name: str, ratios: dict[str, int]) -> str:
    """`teacher_key` with the ratio of the stack `name` is in."""
    m = LAYER_KEY.match(name)
    return name if m is None else teacher_key(name, ratios[m[1]])


def init_student_from_teacher(student: EfficientVLM, teacher: EfficientVLM) -> list[str]:
    """Copy into `student`, in place, every teacher tensor that `teacher_key` names with the same shape.

    Refuses (one line, `ConfigError`) a student whose widths or head counts differ from the teacher's, or
    whose stacks are not each half the teacher's. Returns the student's names left as they were, because the
    teacher has no tensor of that name and shape (a narrower feed-forward layer, another vocabulary)."""
    _check_compatible(student, teacher)
    ratios = layer_ratios(student, teacher)
    source = teacher.state_dict()
    left = []
    with torch.no_grad():
        for name, tensor in student.state_dict().items():  # views of the parameters: copy_ writes the model
            match = source.get(teacher_name(name, ratios))
            if match is None or match.shape != tensor.shape:
                left.append(name)
            else:
                tensor.copy_(match)
    return left


__all__ = ["init_student_from_teacher", "layer_ratios", "teacher_key", "teacher_name"]
