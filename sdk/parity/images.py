"""The images parity runs on: scikit-image photos and demo scenes that no build trained or calibrated on, with
every question and two texts for each (the pixels come from `minivlm.converters.samples`, as the goldens')."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import numpy as np

from minivlm.converters.samples import PHOTO_TEXT, SCENE_STREAM, demo_scene, photo
from minivlm.errors import ParityError
from minivlm.python_ref.scenes import COUNT_QUESTION, caption_for, generate_scene

# Photos: people, food, an animal, a landscape-format object; none resembles a demo scene. The sweep adds every
# other photo scikit-image ships inside its wheel (camera is grayscale, replicated to RGB; logo's alpha dropped).
DEFAULT_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")
ALL_PHOTOS = (*DEFAULT_PHOTOS, "immunohistochemistry", "hubble_deep_field", "retina", "colorwheel", "logo", "camera")
PHOTO_QUESTIONS = (COUNT_QUESTION, "what color is the circle?", "is there a red square?")
# Scenes of the goldens' stream from index 100 on: goldens use 0-1 and int8 calibration 2-13, training stream 1.
PARITY_SCENE_START = 100
DEFAULT_SCENES = 24
SWEEP_SCENES = 200


@dataclass(frozen=True)
class ParityImage:
    """One real input and what the tasks ask about it."""

    name: str
    source: str
    image: np.ndarray  # uint8 (H, W, 3)
    questions: tuple[str, ...]
    texts: tuple[str, ...]


def _photo(name: str) -> ParityImage:
    missing = ParityError("parity on real photos needs scikit-image (pip install scikit-image)")
    return ParityImage(*photo(name, missing), PHOTO_QUESTIONS, (PHOTO_TEXT,))


def _scene(index: int) -> ParityImage:
    picture, scene = demo_scene(index)
    other = generate_scene(SCENE_STREAM, index + 1)
    # The leftmost object (short enough for every preset's text length), and usually a mismatch from the next scene.
    texts = (caption_for(scene.boxes[:1], scene.labels[:1]), caption_for(other.boxes[:1], other.labels[:1]))
    return ParityImage(*picture, tuple(q for q, _ in scene.qa), texts)


def parity_images(scenes: int = DEFAULT_SCENES, photos: Iterable[str] = DEFAULT_PHOTOS) -> list[ParityImage]:
    """Photos first, then `scenes` demo scenes no build trained or calibrated on."""
    if scenes < 0:
        raise ParityError(f"scenes is {scenes}, expected 0 or more")
    return [*(_photo(p) for p in photos), *(_scene(PARITY_SCENE_START + i) for i in range(scenes))]
