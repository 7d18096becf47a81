"""Procedural scenes: the demo task the bundled `minivlm-demo` is trained and checked on (docs/ARCHITECTURE.md §2).

The grammar is a public contract (tests outside the repo render their own scenes), so every number in it is
a named constant below. Rasterisation is pure NumPy with hard edges, point-sampled at pixel centres: no
anti-aliasing and no PIL, so a scene is the same bytes on every platform for a given NumPy version, and an
object's pixels are exactly its (jittered) colour.

Conventions:
- boxes are `xyxy` float32 in pixels with **exclusive** right/bottom edges: an object whose pixels are columns
  `x1 .. x2-1` and rows `y1 .. y2-1` has box `[x1, y1, x2, y2]`, so `x2 - x1` is its width in pixels. Boxes
  are tight: every edge touches a pixel of the object and no object pixel lies outside.
- objects are listed left to right by box centre x (ties: top first), the order the caption reads them.
- the background is clipped to 170..255 per channel after the noise, so "each channel 170-255" holds for
  every background pixel, and every object colour (each has a channel <= 70) stands apart from it.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from types import MappingProxyType
from typing import Sequence

import numpy as np

from .errors import InputError

CANVAS = 256
BACKGROUND_RANGE = (170, 255)  # inclusive, per channel
MAX_NOISE_SIGMA = 8.0
MIN_OBJECTS, MAX_OBJECTS = 1, 4
MIN_SIZE, MAX_SIZE = 28, 90  # both sides of every tight box, in pixels
COLOUR_JITTER = 10  # +- per channel, uniform integer, one draw per object
# Stricter than "non-overlapping": boxes keep this many pixels apart, so two same-coloured neighbours never
# touch and read as one blob.
BOX_GAP = 4
PLACEMENT_TRIES = 200  # per object; a new size and position each try

COLOUR_RGB = MappingProxyType(
    {
        "red": (220, 40, 40),
        "green": (40, 170, 60),
        "blue": (40, 80, 220),
        "yellow": (235, 200, 40),
        "purple": (140, 60, 170),
        "orange": (245, 140, 30),
    }
)
COLOURS: tuple[str, ...] = tuple(COLOUR_RGB)
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
CLASSES: tuple[str, ...] = tuple(f"{colour} {shape}" for colour in COLOURS for shape in SHAPES)
COUNT_WORDS: tuple[str, ...] = ("one", "two", "three", "four")
ANSWERS: tuple[str, ...] = COUNT_WORDS + COLOURS + SHAPES + ("yes", "no")

COUNT_QUESTION = "how many shapes are there?"


@dataclass(frozen=True, eq=False)  # eq on arrays is ambiguous; compare fields explicitly
class Scene:
    """One rendered scene and its annotations. Arrays are read-only.

    image: (256, 256, 3) uint8 RGB. boxes: (n, 4) float32 xyxy, exclusive x2/y2, left to right.
    labels: n "<colour> <shape>" strings aligned with boxes. caption: one sentence of the grammar.
    qa: (question, answer) pairs, every answer in ANSWERS.
    """

    image: np.ndarray
    boxes: np.ndarray
    labels: tuple[str, ...]
    caption: str
    qa: tuple[tuple[str, str], ...]


# --- rasterisation -------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def _shape_mask(shape: str, size: int) -> np.ndarray:
    """Tight (h, w) bool mask of `shape` whose width is `size` px, sampled at pixel centres (read-only)."""
    centres = np.arange(size) + 0.5
    if shape == "square":
        mask = np.ones((size, size), dtype=bool)
    elif shape == "circle":
        r = size / 2
        mask = (centres[None, :] - r) ** 2 + (centres[:, None] - r) ** 2 <= r * r
    elif shape == "triangle":
        # Upright, apex at the top centre, base `size`, height size*sqrt(3)/2 (equilateral up to rounding).
        height = round(size * math.sqrt(3) / 2)
        rows = np.arange(height) + 0.5
        mask = np.abs(centres[None, :] - size / 2) <= (size / 2) * (rows[:, None] / height)
    else:
        raise InputError(f"unknown shape {shape!r}; known shapes: {', '.join(SHAPES)}")
    # Crop to the drawn pixels: e.g. an even-based triangle has no pixel centre in its first row.
    ys, xs = np.nonzero(mask)
    mask = mask[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    mask.setflags(write=False)
    return mask


def _size_range(shape: str) -> tuple[int, int]:
    """Inclusive range of the drawn width so that both tight sides stay within MIN_SIZE..MAX_SIZE."""
    # A triangle is ~0.87x as tall as wide: its base starts at 33 so its height is >= 28.
    return (33, MAX_SIZE) if shape == "triangle" else (MIN_SIZE, MAX_SIZE)


def _background(rng: np.random.Generator) -> np.ndarray:
    """(256, 256, 3) uint8: a uniform light colour plus Gaussian noise, clipped to the background range."""
    low, high = BACKGROUND_RANGE
    base = rng.integers(low, high + 1, size=3)
    sigma = rng.uniform(0.0, MAX_NOISE_SIGMA)
    # float32 and in place: the noise is most of a scene's cost.
    noisy = rng.standard_normal(size=(CANVAS, CANVAS, 3), dtype=np.float32)
    noisy *= np.float32(sigma)
    noisy += base.astype(np.float32)
    np.rint(noisy, out=noisy)
    np.clip(noisy, low, high, out=noisy)
    return noisy.astype(np.uint8)


def _apart(box: tuple[int, int, int, int], placed: list[tuple[int, int, int, int]]) -> bool:
    """True when `box` keeps BOX_GAP pixels from every placed box on at least one axis."""
    x1, y1, x2, y2 = box
    return all(
        x1 >= px2 + BOX_GAP or px1 >= x2 + BOX_GAP or y1 >= py2 + BOX_GAP or py1 >= y2 + BOX_GAP
        for px1, py1, px2, py2 in placed
    )


def place_shape(rng: np.random.Generator, shape: str, placed: list) -> tuple[tuple[int, int, int, int], np.ndarray] | None:
    """Rejection-sample a size and position for `shape` apart from `placed`; None after PLACEMENT_TRIES."""
    low, high = _size_range(shape)
    for _ in range(PLACEMENT_TRIES):
        mask = _shape_mask(shape, int(rng.integers(low, high + 1)))
        h, w = mask.shape
        x1, y1 = (int(v) for v in rng.integers(0, [CANVAS - w + 1, CANVAS - h + 1]))
        box = (x1, y1, x1 + w, y1 + h)
        if _apart(box, placed):
            return box, mask
    return None


def _left_to_right(boxes: np.ndarray) -> np.ndarray:
    """Indices ordering boxes by centre x, then centre y (two boxes can share a centre x, one above the other)."""
    cx = boxes[:, 0] + boxes[:, 2]  # 2x the centre: same order, no rounding
    cy = boxes[:, 1] + boxes[:, 3]
    return np.lexsort((cy, cx))


def render_scene(rng: np.random.Generator) -> Scene:
    """Draw one scene of the grammar from `rng`.

    The object count is uniform in 1..4. Each object draws its shape, colour and jitter once, then up to
    PLACEMENT_TRIES (size, position) pairs until its box keeps BOX_GAP from the others. An object that
    cannot be placed is dropped, so a scene may hold fewer objects than drawn; the first object always fits,
    and a test checks that four objects always find room.
    """
    image = _background(rng)
    boxes: list[tuple[int, int, int, int]] = []
    labels: list[str] = []
    for _ in range(int(rng.integers(MIN_OBJECTS, MAX_OBJECTS + 1))):
        shape = SHAPES[int(rng.integers(len(SHAPES)))]
        colour = COLOURS[int(rng.integers(len(COLOURS)))]
        rgb = np.asarray(COLOUR_RGB[colour]) + rng.integers(-COLOUR_JITTER, COLOUR_JITTER + 1, size=3)
        spot = place_shape(rng, shape, boxes)
        if spot is None:
            continue
        (x1, y1, x2, y2), mask = spot
        image[y1:y2, x1:x2][mask] = rgb.astype(np.uint8)
        boxes.append((x1, y1, x2, y2))
        labels.append(f"{colour} {shape}")
    box_array = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    order = _left_to_right(box_array)
    box_array = box_array[order]
    ordered = tuple(labels[i] for i in order)
    qa = questions_for(box_array, ordered, rng)
    image.setflags(write=False)
    box_array.setflags(write=False)
    return Scene(image, box_array, ordered, caption_for(box_array, ordered), qa)


def generate_scene(seed: int, index: int) -> Scene:
    """Scene `index` of the stream `seed`; depends on (seed, index) only, so any index can be drawn alone."""
    for name, value in (("seed", seed), ("index", index)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise InputError(f"{name} must be a non-negative integer, got {value!r}")
    return render_scene(np.random.default_rng([int(seed), int(index)]))


# --- language ------------------------------------------------------------------------------------------------


def _checked(boxes: np.ndarray | Sequence, labels: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    """Boxes as (n, 4) float64 and labels as a list, after checking they describe 1..4 known objects."""
    array = np.asarray(boxes, dtype=np.float64)
    if array.ndim != 2 or array.shape[1] != 4 or array.shape[0] != len(labels):
        raise InputError(f"boxes have shape {array.shape}, expected ({len(labels)}, 4) for {len(labels)} labels")
    if not MIN_OBJECTS <= len(labels) <= MAX_OBJECTS:
        raise InputError(f"a scene holds {MIN_OBJECTS}..{MAX_OBJECTS} objects, got {len(labels)}")
    unknown = [label for label in labels if label not in CLASSES]
    if unknown:
        raise InputError(f"unknown labels {unknown}; labels are '<colour> <shape>' from CLASSES")
    return array, list(labels)


def _phrase(label: str, count: int) -> str:
    """One caption item: 'a red circle', 'an orange square', 'two green triangles'."""
    if count == 1:
        return ("an " if label[0] in "aeiou" else "a ") + label
    return f"{COUNT_WORDS[count - 1]} {label}s"


def caption_for(boxes: np.ndarray | Sequence, labels: Sequence[str]) -> str:
    """The grammar's caption: left to right, runs of identical neighbours counted, joined by ", " and " and "."""
    array, labels = _checked(boxes, labels)
    runs: list[list] = []  # [label, count], in reading order
    for i in _left_to_right(array):
        if runs and runs[-1][0] == labels[i]:
            runs[-1][1] += 1
        else:
            runs.append([labels[i], 1])
    phrases = [_phrase(label, count) for label, count in runs]
    return phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]


def _existence_pair(labels: list[str], rng: np.random.Generator) -> list[tuple[str, str]]:
    """One "is there a ...?" question answered yes and one answered no, in random order.

    Half the negatives are near misses (an absent class sharing a colour or a shape with a present object),
    so "no" cannot be answered from colour or shape alone.
    """
    present = sorted(set(labels), key=CLASSES.index)
    absent = [c for c in CLASSES if c not in present]
    near = [c for c in absent if any(c.split()[0] == p.split()[0] or c.split()[1] == p.split()[1] for p in present)]
    positive = present[int(rng.integers(len(present)))]
    pool = near if near and rng.random() < 0.5 else absent
    negative = pool[int(rng.integers(len(pool)))]
    pair = [(f"is there a {positive}?", "yes"), (f"is there a {negative}?", "no")]
    return pair[::-1] if rng.random() < 0.5 else pair


def questions_for(
    boxes: np.ndarray | Sequence, labels: Sequence[str], rng: np.random.Generator
) -> tuple[tuple[str, str], ...]:
    """All grammar questions the scene supports, with answers.

    Always the count question; "what color is the <shape>?" for each shape present exactly once;
    "what shape is the <colour> object?" for each colour present exactly once; then one yes and one no
    "is there a <colour> <shape>?" (the literal article "a", as in the grammar), so yes/no stay balanced.
    """
    _, labels = _checked(boxes, labels)
    pairs = [label.split() for label in labels]
    colours = [colour for colour, _ in pairs]
    shapes = [shape for _, shape in pairs]
    qa = [(COUNT_QUESTION, COUNT_WORDS[len(labels) - 1])]
    qa += [(f"what color is the {s}?", colours[shapes.index(s)]) for s in SHAPES if shapes.count(s) == 1]
    qa += [(f"what shape is the {c} object?", shapes[colours.index(c)]) for c in COLOURS if colours.count(c) == 1]
    qa += _existence_pair(labels, rng)
    return tuple(qa)
