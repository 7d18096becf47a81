"""The reference's side of parity: every task on each image with every graph call recorded, computed once and
compared with any number of builds of its model. `run_image` (MiniVLM; EfficientVLM: `efficientvlm_run.py`) also
drives a build, through the same host code; `IMAGE_RUNS` picks one by model family."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

import torch

from minivlm.converters.fp16_range import RangeRecorder, RangeReport
from minivlm.converters.recorder import Call, recorded
from minivlm.errors import ParityError
from minivlm.loading import ReferencePipeline
from minivlm.python_ref.families import family_of
from minivlm.python_ref.generate import greedy
from minivlm.python_ref.pipeline import Detection, Pipeline
from minivlm.python_ref.postprocess import proposal_anchors, select_proposals

from .efficientvlm_run import run_efficientvlm_image
from .images import ParityImage, parity_images


@dataclass
class ImageRun:
    """What one pipeline did on one image: every task's result and the host steps' integer decisions."""

    name: str
    detections: list[Detection]
    tags: tuple[str, ...]
    proposals: torch.Tensor  # (K, 4) kept RPN proposals (host step "proposals")
    valid: torch.Tensor  # (K,) bool
    anchors: torch.Tensor  # (K,) int64 the anchor each proposal came from, -1 on padding rows
    objectness: torch.Tensor  # (N,) the stage-1 objectness logits the proposals were chosen by
    deltas: torch.Tensor  # (N, 4) the stage-1 box deltas
    labels: tuple[int, ...]  # host step "region_selection"
    proposal_indices: tuple[int, ...]
    packed: tuple[tuple[torch.Tensor, ...], ...]  # host step "question_packing", one per question
    caption: tuple[int, ...]
    caption_text: str
    answers: tuple[str, ...]
    match: tuple[float, ...]
    calls: dict[str, list[Call]] = field(repr=False, default_factory=dict)
    # (objectness, deltas) -> (boxes, valid, anchors): this run's proposal step on other graph outputs
    choose_proposals: Callable | None = field(repr=False, default=None)


@torch.no_grad()
def run_image(pipeline: Pipeline, sample: ParityImage, ranges: RangeRecorder | None = None) -> ImageRun:
    """Every task on one image through `pipeline` (reference or build), with its graph calls recorded (and, for
    the eager reference, the range of every tensor into `ranges`)."""
    calls: dict[str, list[Call]] = {}
    measured = None if ranges is None else ranges.run
    traced = recorded(pipeline, calls, measured)
    tee = pipeline.cfg.tee
    found = traced.regions(sample.image)
    (_,), stage1 = calls["tee_stage1"][0]
    objectness, deltas = stage1[-2][0], stage1[-1][0]
    proposals, valid = select_proposals(objectness, deltas, pipeline.anchors, pipeline.level_sizes, tee.rpn, tee.image_size)
    anchors = proposal_anchors(objectness, deltas, pipeline.anchors, pipeline.level_sizes, tee.rpn, tee.image_size)
    caption = greedy(traced.graphs.caption, traced.tokenizer, traced.pack(found, "", require_text=False))
    return ImageRun(
        sample.name, traced.detections_of(found), found.tags, proposals, valid, anchors, objectness, deltas,
        tuple(found.regions.labels.tolist()), tuple(found.regions.proposal_indices.tolist()),
        tuple(traced.pack(found, q).as_tuple() for q in sample.questions),
        tuple(caption.token_ids), traced.tokenizer.decode(list(caption.token_ids)),
        tuple(traced.answer_of(found, q) for q in sample.questions),
        tuple(traced.match_of(found, t) for t in sample.texts), calls,
        lambda o, d: (*select_proposals(o, d, pipeline.anchors, pipeline.level_sizes, tee.rpn, tee.image_size),
                      proposal_anchors(o, d, pipeline.anchors, pipeline.level_sizes, tee.rpn, tee.image_size)),
    )


# How parity runs one image through a pipeline (reference or build), by model family.
IMAGE_RUNS = {"minivlm": run_image, "efficientvlm": run_efficientvlm_image}


def run_image_of(pipeline, sample: ParityImage, ranges: RangeRecorder | None = None):
    """`sample` through `pipeline` by its family's image run (an `ImageRun` for MiniVLM)."""
    return IMAGE_RUNS[family_of(pipeline.cfg).name](pipeline, sample, ranges)


@dataclass
class ReferenceRun:
    """The reference on a set of images, computed once and compared with any number of builds of its model."""

    reference: ReferencePipeline  # or minivlm.efficientvlm_pipeline.EfficientVLMReference
    images: list[ParityImage]
    runs: list  # one ImageRun (MiniVLM) or EfficientVLMImageRun per image
    seconds: float
    fp16_range: RangeReport | None = None  # every tensor's max |value| on these images, if recorded


def run_reference(reference, images: list[ParityImage] | None = None,
                  progress: Callable[[Iterable], Iterable] = lambda it: it, *, fp16_range: bool = False) -> ReferenceRun:
    """Run the reference on `images` (default `parity_images()`), recording every graph call, and with
    `fp16_range` the range of every tensor (what a build computing in fp16 is checked against)."""
    images = parity_images() if images is None else images
    if not images:
        raise ParityError("parity needs at least one image")
    t0 = time.perf_counter()
    ranges = RangeRecorder() if fp16_range else None
    runs = [run_image_of(reference.pipeline, s, ranges) for s in progress(images)]
    report = ranges.report(len(images)) if ranges is not None else None
    return ReferenceRun(reference, images, runs, time.perf_counter() - t0, report)
