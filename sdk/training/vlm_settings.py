"""The settings of an EfficientVLM training or distillation run (`VLMTrainSettings`), validated on
construction like `TrainSettings`."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from minivlm.errors import ConfigError

STUDENT_STEPS = 600  # the demo recipe's distilled and no-teacher students (`minivlm distill`, `train --init-from`)


@dataclass(frozen=True)
class VLMTrainSettings:
    """Everything that determines an EfficientVLM run; the same settings and seed reproduce the same weights.

    With `teacher` set, the run distils: the student starts from the teacher's layers (student layer i <-
    teacher layer 2i) and learns 0.6 task + 0.4 KD. With `init_from` set instead, it starts from those
    layers the same way but learns the task alone (what distillation is measured against)."""

    preset: str = "efficientvlm-demo-teacher"
    seed: int = 1  # scene stream of the training data (evaluation uses other seeds)
    vision_steps: int = 600  # image encoder alone on the dense targets first (`VisionWarmup`); runs from random weights only
    steps: int = 1200  # joint steps (a student starting from its teacher's layers: `STUDENT_STEPS`)
    batch: int = 32  # scenes per step
    questions_per_scene: int = 2
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_fraction: float = 0.05
    label_smoothing: float = 0.1
    checkpoint_every: int = 100
    teacher: str = ""  # weights file of the teacher to distil from ("": no distillation)
    init_from: str = ""  # weights file whose layers initialise the student without distilling ("": random init)
    scale: float = 1.0  # the product of the `scaled` factors applied

    def __post_init__(self) -> None:
        counts = ("steps", "batch", "questions_per_scene", "checkpoint_every")
        rules = [(k, lambda v: _is_int(v) and v >= 1, "an integer >= 1") for k in counts] + [
            ("vision_steps", lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
            ("preset", lambda v: isinstance(v, str), "a preset name"),
            ("seed", lambda v: _is_int(v) and 0 <= v < 2**63, "an integer in [0, 2**63)"),
            *((k, lambda v: _is_real(v) and v > 0, "a finite number > 0") for k in ("lr", "scale")),
            ("weight_decay", lambda v: _is_real(v) and v >= 0, "a finite number >= 0"),
            ("warmup_fraction", lambda v: _is_real(v) and 0 <= v <= 1, "a fraction in [0, 1]"),
            ("label_smoothing", lambda v: _is_real(v) and 0 <= v < 1, "a number in [0, 1)"),
            *((k, lambda v: isinstance(v, str), "a path or empty") for k in ("teacher", "init_from")),
        ]
        for name, valid, expected in rules:
            if not valid(getattr(self, name)):
                raise ConfigError(f"training setting {name} is {getattr(self, name)!r}, expected {expected}")
        if self.teacher and self.init_from:
            raise ConfigError("training settings teacher and init_from are both set; a distilled student starts from "
                              "its teacher already, so give one of them")

    @property
    def distils(self) -> bool:
        return bool(self.teacher)

    @property
    def warms_up_vision(self) -> bool:
        """A run from random weights starts with `vision_steps` of the image encoder alone; a student starting
        from its teacher's layers has a trained encoder already."""
        return self.vision_steps > 0 and not (self.teacher or self.init_from)

    def scaled(self, factor: float) -> "VLMTrainSettings":
        """The same recipe with the step counts multiplied by `factor` (at least 2 steps each; a vision warm-up
        of 0 steps stays off)."""
        if not _is_real(factor) or factor <= 0:
            raise ConfigError(f"scale is {factor!r}, expected a finite factor > 0 (e.g. 0.01 for a smoke run)")
        steps = self.steps * factor
        if not math.isfinite(steps) or not math.isfinite(self.scale * factor):
            raise ConfigError(f"scale {factor!r} makes the step counts overflow")
        vision = max(2, int(self.vision_steps * factor)) if self.vision_steps else 0
        return dataclasses.replace(self, steps=max(2, int(steps)), vision_steps=vision, scale=self.scale * factor)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
