"""The settings of a training run (`TrainSettings`) and its stages, in order; validated on construction."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from minivlm.errors import ConfigError

STAGES = ("detector", "regions", "pretrain", "finetune")


@dataclass(frozen=True)
class TrainSettings:
    """Everything that determines a training run; the same settings and seed reproduce the same weights."""

    preset: str = "minivlm-demo"
    seed: int = 1  # scene stream of the training data (evaluation uses other seeds)
    detector_steps: int = 900
    detector_batch: int = 8
    detector_lr: float = 2e-3
    rpn_samples: int = 128  # anchors sampled per image
    roi_samples: int = 32  # proposals sampled per image
    region_scenes: int = 2500  # scenes whose regions feed the fusion stages
    pretrain_steps: int = 300
    finetune_steps: int = 1500
    fusion_batch: int = 32  # scenes per step: pre-training, captions
    vqa_batch: int = 96  # questions per fine-tuning step (short sequences: cheap, and the slowest task to learn)
    match_batch: int = 16  # scenes per fine-tuning step for the match loss (a 2-way task: few examples suffice)
    fusion_lr: float = 1e-3
    mask_probability: float = 0.15  # pre-training masked tokens (OSCAR)
    label_smoothing: float = 0.1
    weight_decay: float = 0.01
    warmup_fraction: float = 0.05
    checkpoint_every: int = 200
    scale: float = 1.0  # the product of the `scaled` factors applied (recorded: a run folder names it)

    def __post_init__(self) -> None:
        counts = ("detector_steps", "detector_batch", "rpn_samples", "roi_samples", "region_scenes", "pretrain_steps",
                  "finetune_steps", "fusion_batch", "vqa_batch", "match_batch", "checkpoint_every")
        # (field, valid, what is expected): checked here so that a bad value fails before a folder is touched
        rules = [(k, lambda v: _is_int(v) and v >= 1, "an integer >= 1") for k in counts] + [
            ("preset", lambda v: isinstance(v, str), "a preset name"),
            ("seed", lambda v: _is_int(v) and 0 <= v < 2**63, "an integer in [0, 2**63)"),
            *((k, lambda v: _is_real(v) and v > 0, "a finite number > 0") for k in ("detector_lr", "fusion_lr", "scale")),
            ("weight_decay", lambda v: _is_real(v) and v >= 0, "a finite number >= 0"),
            ("mask_probability", lambda v: _is_real(v) and 0 < v < 1, "a probability in (0, 1)"),
            ("label_smoothing", lambda v: _is_real(v) and 0 <= v < 1, "a number in [0, 1)"),
            ("warmup_fraction", lambda v: _is_real(v) and 0 <= v <= 1, "a fraction in [0, 1]"),
        ]
        for name, valid, expected in rules:
            if not valid(getattr(self, name)):
                raise ConfigError(f"training setting {name} is {getattr(self, name)!r}, expected {expected}")

    def scaled(self, factor: float) -> "TrainSettings":
        """The same recipe with every step/scene count multiplied by `factor` (smoke runs, longer runs).

        Counts never drop below 2, so a tiny factor gives a run of 2 steps per stage and 2 region scenes
        (not 0, which would have no checkpoint to continue from)."""
        counts = ("detector_steps", "region_scenes", "pretrain_steps", "finetune_steps")
        if not _is_real(factor) or factor <= 0:
            raise ConfigError(f"scale is {factor!r}, expected a finite factor > 0 (e.g. 0.01 for a smoke run)")
        values = {k: getattr(self, k) * factor for k in counts}
        if not all(math.isfinite(v) and math.isfinite(self.scale * factor) for v in values.values()):
            raise ConfigError(f"scale {factor!r} makes the step counts overflow")
        return dataclasses.replace(self, **{k: max(2, int(v)) for k, v in values.items()}, scale=self.scale * factor)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
