"""Parity's run of one image through an EfficientVLM pipeline (reference or build): every task's result with its
graph calls recorded, as `reference.run_image` does for MiniVLM."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from minivlm.converters.fp16_range import RangeRecorder
from minivlm.converters.recorder import Call, recorded
from minivlm.python_ref.efficientvlm.pipeline import Pipeline

from .images import ParityImage


@dataclass
class EfficientVLMImageRun:
    """What one EfficientVLM pipeline did on one image: the greedy caption, the answers, the match probabilities."""

    name: str
    caption: tuple[int, ...]
    caption_text: str
    answers: tuple[str, ...]
    match: tuple[float, ...]
    calls: dict[str, list[Call]] = field(repr=False, default_factory=dict)


@torch.no_grad()
def run_efficientvlm_image(pipeline: Pipeline, sample: ParityImage, ranges: RangeRecorder | None = None) -> EfficientVLMImageRun:
    """Every task on one image through `pipeline` (reference or build), with its graph calls recorded (and, for
    the eager reference, the range of every tensor into `ranges`). The ITC features are compared per graph."""
    calls: dict[str, list[Call]] = {}
    measured = None if ranges is None else ranges.run
    traced = recorded(pipeline, calls, measured)
    image = traced.encode(sample.image)
    caption = traced.caption_tokens(image)
    answers = tuple(traced.answer_of(image, q) for q in sample.questions)
    match = tuple(traced.match_of(image, t) for t in sample.texts)
    for text in sample.texts:
        traced.text_feature(text)
    return EfficientVLMImageRun(sample.name, caption.token_ids, traced.tokenizer.decode(list(caption.token_ids)),
                                answers, match, calls)


__all__ = ["EfficientVLMImageRun", "run_efficientvlm_image"]
