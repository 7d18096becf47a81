"""Real inputs for a build: scikit-image photos and demo scenes, traced through the reference pipeline.

A build exports each graph with inputs the reference actually produced (so `caption_step` sees a real
key/value cache, `tee_stage2` real proposals), calibrates int8 on them, and stores them with every host
step's inputs and outputs as goldens. `trace` runs the public pipeline with its graphs wrapped, then
recomputes each host step from what the graphs saw and checks it against what the pipeline did, so a
golden can never drift from the pipeline it documents.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import torch

from minivlm.python_ref.errors import ConversionError
from minivlm.python_ref.packing import FUSION_INPUT_NAMES
from minivlm.python_ref.generate import greedy
from minivlm.python_ref.pipeline import GRAPH_NAMES, Pipeline
from minivlm.python_ref.postprocess import select_proposals, select_regions
from minivlm.python_ref.preprocess import preprocess
from minivlm.python_ref.scenes import COUNT_QUESTION, Scene, caption_for, generate_scene

from .recorder import Call, recorded

# Two photos that are nothing like the demo scenes (a portrait, and a non-square still life that exercises
# the letterbox), then two scenes from a stream training never draws (it uses stream 1).
PHOTOS = ("astronaut", "coffee")
SCENE_STREAM = 20_000
GOLDEN_SCENES = (0, 1)
CALIBRATION_SCENES = tuple(range(2, 14))  # int8 calibration adds these to the golden images
PHOTO_QUESTION = COUNT_QUESTION
PHOTO_TEXT = "a red circle"


@dataclass(frozen=True)
class SampleImage:
    """One real input: where it comes from, its pixels, and the question/text the tasks ask about it."""

    name: str
    source: str
    image: np.ndarray  # uint8 (H, W, 3)
    question: str
    text: str


class Picture(NamedTuple):
    """A real input: its name in goldens and reports, where it comes from, and its pixels."""

    name: str
    source: str
    image: np.ndarray  # uint8 (H, W, 3), an owned, writable, C-contiguous copy (torch.from_numpy takes it)


def photo(name: str, missing: Exception) -> Picture:
    """scikit-image's photo `name` as RGB: a grayscale photo replicated to three channels, an alpha channel
    dropped. Raises `missing` (each caller says what needed the photo) if scikit-image is not installed."""
    try:
        from skimage import data  # dev dependency; its photos ship inside the wheel (no download)
    except ImportError:
        raise missing from None
    pixels = np.asarray(getattr(data, name)())
    if pixels.ndim == 2:
        pixels = np.repeat(pixels[..., None], 3, axis=2)
    return Picture(f"photo_{name}", f"skimage.data.{name}()", np.array(pixels[..., :3], dtype=np.uint8, order="C"))


def demo_scene(index: int) -> tuple[Picture, Scene]:
    """Scene `index` of SCENE_STREAM (a stream training never draws): its picture, and the scene with its truth."""
    scene = generate_scene(SCENE_STREAM, index)
    pixels = np.array(scene.image)  # a copy: the scene's array is read-only
    return Picture(f"scene_{SCENE_STREAM}_{index}", f"python_ref.scenes.generate_scene({SCENE_STREAM}, {index})",
                   pixels), scene


def _sample_photo(name: str) -> SampleImage:
    missing = ConversionError("real photos for goldens and calibration need scikit-image (pip install scikit-image)")
    return SampleImage(*photo(name, missing), PHOTO_QUESTION, PHOTO_TEXT)


def _sample_scene(index: int) -> SampleImage:
    picture, scene = demo_scene(index)
    question = scene.qa[-1][0] if scene.qa else COUNT_QUESTION
    text = caption_for(scene.boxes[:1], scene.labels[:1])  # the leftmost object: short enough for every preset
    return SampleImage(*picture, question, text)


def golden_images() -> list[SampleImage]:
    """The images every build stores goldens for: 2 photos, then 2 demo scenes."""
    return [*(_sample_photo(p) for p in PHOTOS), *(_sample_scene(i) for i in GOLDEN_SCENES)]


def calibration_images() -> list[SampleImage]:
    """Images int8 calibration runs on: the golden images and a dozen more scenes."""
    return [*golden_images(), *(_sample_scene(i) for i in CALIBRATION_SCENES)]


@dataclass
class Trace:
    """What one image did in the reference pipeline.

    steps: host step -> {"inputs": {name: tensor or JSON value}, "outputs": {...}}, in pipeline order.
    calls: graph name -> every call the pipeline made, in order.
    """

    sample: SampleImage
    steps: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    calls: dict[str, list[Call]] = field(default_factory=lambda: defaultdict(list))


def _same(what: str, a: torch.Tensor, b: torch.Tensor) -> None:
    if a.shape != b.shape or not torch.equal(a, b):
        raise ConversionError(f"golden recomputation of {what} differs from the pipeline's; python_ref changed under the converter")


@torch.no_grad()
def trace(pipeline: Pipeline, sample: SampleImage) -> Trace:
    """Run detect/caption/answer/match on one image, recording every graph call and host step."""
    out = Trace(sample)
    traced = recorded(pipeline, out.calls)
    tee, image = pipeline.cfg.tee, sample.image

    found = traced.regions(image)
    (pixels,), stage1 = out.calls["tee_stage1"][0]
    mine, box = preprocess(image, tee.image_size, tee.pixel_mean, tee.pixel_std)
    _same("preprocess", mine, pixels)
    out.steps["preprocess"] = {
        "inputs": {"image": torch.from_numpy(np.ascontiguousarray(image))},
        "outputs": {"pixels": pixels, "letterbox": {"height": box.height, "width": box.width, "scale": box.scale,
                                                    "resized_height": box.resized_height, "resized_width": box.resized_width}},
    }
    objectness, deltas = stage1[-2][0], stage1[-1][0]
    proposals, valid = select_proposals(objectness, deltas, pipeline.anchors, pipeline.level_sizes, tee.rpn, tee.image_size)
    stage2_in, stage2 = out.calls["tee_stage2"][0]
    _same("proposals", proposals[None], stage2_in[-1])
    out.steps["proposals"] = {"inputs": {"objectness": objectness, "deltas": deltas, "anchors": pipeline.anchors},
                              "outputs": {"proposals": proposals, "valid": valid}}
    features, class_logits, box_deltas, attribute_logits = (t[0] for t in stage2)
    regions = select_regions(proposals, valid, class_logits, box_deltas, attribute_logits, features, tee.roi_head, tee.image_size)
    _same("region selection", regions.boxes, found.regions.boxes)
    out.steps["region_selection"] = {
        "inputs": {"proposals": proposals, "valid": valid, "class_logits": class_logits, "box_deltas": box_deltas,
                   "attribute_logits": attribute_logits, "features": features},
        "outputs": {"boxes": regions.boxes, "labels": regions.labels, "scores": regions.scores,
                    "proposal_indices": regions.proposal_indices},
    }
    out.steps["detections"] = {
        "inputs": {"boxes": regions.boxes, "letterbox_scale": box.scale},
        "outputs": {"boxes": found.boxes, "tags": list(found.tags), "region_tokens": found.tokens},
    }

    caption_inputs = traced.pack(found, "", require_text=False)
    caption = greedy(traced.graphs.caption, traced.tokenizer, caption_inputs)
    out.steps["caption_packing"] = {"inputs": {"tags": list(found.tags), "region_tokens": found.tokens},
                                    "outputs": dict(zip(FUSION_INPUT_NAMES, caption_inputs.as_tuple()))}
    out.steps["greedy_caption"] = {"inputs": {}, "outputs": {
        "token_ids": torch.tensor(caption.token_ids, dtype=torch.int64),
        "caption": traced.tokenizer.decode(list(caption.token_ids)), "finished": caption.finished}}
    question_inputs = traced.pack(found, sample.question)
    out.steps["question_packing"] = {"inputs": {"question": sample.question, "tags": list(found.tags)},
                                     "outputs": dict(zip(FUSION_INPUT_NAMES, question_inputs.as_tuple()))}
    out.steps["answer"] = {"inputs": {"question": sample.question}, "outputs": {"answer": traced.answer_of(found, sample.question)}}
    out.steps["match"] = {"inputs": {"text": sample.text}, "outputs": {"probability": traced.match_of(found, sample.text)}}
    missing = [name for name in GRAPH_NAMES if not out.calls[name]]
    if missing:
        raise ConversionError(f"tracing {sample.name} never ran the graphs {missing}")
    return out


__all__ = ["Picture", "SampleImage", "Trace", "calibration_images", "demo_scene", "golden_images", "photo", "trace"]
