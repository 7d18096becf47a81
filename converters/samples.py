"""Real inputs for a build: scikit-image photos and demo scenes, traced through the reference pipeline.

A build exports each graph with inputs the reference actually produced (so MiniVLM's `caption_step` sees a
real key/value cache, `tee_stage2` real proposals), calibrates int8 on them, and stores them with every host
step's inputs and outputs as goldens. `trace` runs the pipeline with its graphs wrapped, and its family's
`record` (`python_ref/family.py`) recomputes each host step from what the graphs saw and checks it against
what the pipeline did, so a golden can never drift from the pipeline it documents.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import torch

from minivlm.python_ref.errors import ConversionError
from minivlm.python_ref.families import family_of
from minivlm.python_ref.scenes import COUNT_QUESTION, Scene, caption_for, generate_scene

from .fp16_range import RangeRecorder
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


def sample_scene(index: int) -> SampleImage:
    """Demo scene `index` of SCENE_STREAM with the question and text the tasks ask about it (its last question,
    and the caption of its leftmost object)."""
    picture, scene = demo_scene(index)
    question = scene.qa[-1][0] if scene.qa else COUNT_QUESTION
    text = caption_for(scene.boxes[:1], scene.labels[:1])  # the leftmost object: short enough for every preset
    return SampleImage(*picture, question, text)


def golden_images() -> list[SampleImage]:
    """The images every build stores goldens for: 2 photos, then 2 demo scenes."""
    return [*(_sample_photo(p) for p in PHOTOS), *(sample_scene(i) for i in GOLDEN_SCENES)]


def calibration_images() -> list[SampleImage]:
    """Images int8 calibration runs on: the golden images and a dozen more scenes."""
    return [*golden_images(), *(sample_scene(i) for i in CALIBRATION_SCENES)]


@dataclass
class Trace:
    """What one image did in the reference pipeline.

    steps: host step -> {"inputs": {name: tensor or JSON value}, "outputs": {...}}, in pipeline order.
    calls: graph name -> every call the pipeline made, in order.
    """

    sample: SampleImage
    steps: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    calls: dict[str, list[Call]] = field(default_factory=lambda: defaultdict(list))


@torch.no_grad()
def trace(pipeline, sample: SampleImage, ranges: RangeRecorder | None = None) -> Trace:
    """Run the tasks of `pipeline`'s family on one image, recording every graph call and host step (the family's
    `record` recomputes each host step from what the graphs saw and checks it against what the pipeline did),
    and with `ranges` the fp16 range of every tensor of every call as it is made (no second run of the graphs)."""
    out = Trace(sample)
    family = family_of(pipeline.cfg)
    traced = recorded(pipeline, out.calls, None if ranges is None else ranges.run)
    out.steps = family.record(traced, out.calls, sample.image, sample.question, sample.text)
    missing = [name for name in family.graph_names if not out.calls[name]]
    if missing:
        raise ConversionError(f"tracing {sample.name} never ran the graphs {missing}")
    return out


__all__ = ["Picture", "SampleImage", "Trace", "calibration_images", "demo_scene", "golden_images", "photo", "sample_scene", "trace"]
