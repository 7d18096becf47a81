"""The training data of an EfficientVLM on the demo scenes: a step's images, captions, questions, grounding
phrases with their boxes, and the object under each image patch, all from freshly generated scenes.

Every step draws new scenes (`data.scene_batch`: disjoint across steps and ranks, the same after a resume), so
the model never sees a scene twice; a 3 ms render makes that cheaper than any cache.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from minivlm.python_ref.efficientvlm.config import EfficientVLMConfig
from minivlm.python_ref.efficientvlm.generate import prompt_ids
from minivlm.python_ref.efficientvlm.preprocess import preprocess_batch
from minivlm.python_ref.scenes import ANSWERS, CANVAS, CLASSES, Scene
from minivlm.python_ref.tokenizer import Tokenizer
from minivlm.training.data import scene_batch

# A pixel belongs to an object when its darkest channel is below this: every object colour has a channel
# <= 80 (+ jitter 10, noise), every background channel is >= 170 (scenes.py).
OBJECT_DARKEST_CHANNEL = 130
PATCH_COVER = 0.25  # a patch is labelled with an object covering at least this fraction of it
MASK_CELLS = 8  # each patch's outline target: its object coverage on an 8 x 8 grid of sub-cells


@dataclass
class TextBatch:
    """Token ids (B, T) int64 and their 0/1 mask (B, T) float32, T the longest row's length."""

    ids: torch.Tensor
    mask: torch.Tensor


@dataclass
class VLMBatch:
    images: torch.Tensor  # (B, 3, S, S) normalised
    captions: list[str]
    caption_text: TextBatch  # [CLS] caption [SEP]: ITC and ITM
    caption_prompted: TextBatch  # [CLS] a picture of caption [SEP]: captioning
    questions: TextBatch  # (Q, T)
    question_scene: torch.Tensor  # (Q,) the image each question is about
    answers: torch.Tensor  # (Q,) answer index
    phrases: TextBatch  # (G, T) "<colour> <shape>" of an object unique in its scene
    phrase_scene: torch.Tensor  # (G,)
    phrase_boxes: torch.Tensor  # (G, 4) centre x, centre y, width, height, as fractions of the image
    patch_labels: torch.Tensor  # (B, patches) 0 = background, 1 + CLASSES index
    patch_masks: torch.Tensor  # (B, patches, MASK_CELLS²) object coverage of each patch's sub-cells
    patch_boxes: torch.Tensor  # (B, patches, 4) box of the object under each patch (zeros where none is)


def encode_texts(tokenizer: Tokenizer, texts: list[str], length: int, prefix: list[int] | None = None) -> TextBatch:
    """`prefix` (default [CLS]) + tokens + [SEP], truncated to `length` and padded to the longest row.

    Not to `length`: trailing padding is masked from every real token and carries no loss, so leaving it out
    changes no state a loss reads, and halves the text stacks' cost (demo texts fill half of max_text_len)."""
    rows = [(([tokenizer.cls_id] if prefix is None else prefix) + tokenizer.encode(t) + [tokenizer.sep_id])[:length]
            for t in texts]
    longest = max((len(r) for r in rows), default=1)
    ids = torch.full((len(texts), longest), tokenizer.pad_id, dtype=torch.int64)
    mask = torch.zeros(len(texts), longest)
    for row, tokens in enumerate(rows):
        ids[row, : len(tokens)] = torch.tensor(tokens)
        mask[row, : len(tokens)] = 1.0
    return TextBatch(ids, mask)


def object_pixels(scene: Scene) -> np.ndarray:
    """(H, W) bool: the pixels of the scene's objects (`OBJECT_DARKEST_CHANNEL`)."""
    image = scene.image  # np.minimum over the channels: several times faster than min(axis=2) on (H, W, 3)
    return np.minimum(np.minimum(image[..., 0], image[..., 1]), image[..., 2]) < OBJECT_DARKEST_CHANNEL


def patch_masks(scene: Scene, grid: int, cells: int = MASK_CELLS, covered: np.ndarray | None = None) -> np.ndarray:
    """(grid², cells²) float32: for each patch of a grid x grid split of the canvas (row-major, as the ViT's
    patches), the fraction of object pixels in each of its cells x cells sub-cells — the objects' outlines at
    a finer scale than a patch, which is what tells a circle from a square."""
    size = CANVAS // (grid * cells)
    covered = object_pixels(scene) if covered is None else covered
    covered = covered.reshape(grid, cells, size, grid, cells, size).mean(axis=(2, 5))
    return covered.transpose(0, 2, 1, 3).reshape(grid * grid, cells * cells).astype(np.float32)


def patch_labels(scene: Scene, grid: int, covered: np.ndarray | None = None) -> np.ndarray:
    """(grid²,) the class (1 + CLASSES index) of the object covering at least PATCH_COVER of each patch of a
    grid x grid split of the canvas, row-major as the ViT's patches; 0 where none does."""
    covered = object_pixels(scene) if covered is None else covered
    label = np.zeros(covered.shape, np.int64)
    for (x0, y0, x1, y1), name in zip(np.asarray(scene.boxes), scene.labels):
        rows, cols = slice(int(y0), int(np.ceil(y1))), slice(int(x0), int(np.ceil(x1)))
        label[rows, cols][covered[rows, cols]] = CLASSES.index(name) + 1
    cell = CANVAS // grid
    blocks = label.reshape(grid, cell, grid, cell).transpose(0, 2, 1, 3).reshape(grid * grid, cell * cell)
    kinds = 1 + len(CLASSES)
    cells = np.repeat(np.arange(grid * grid), cell * cell) * kinds + blocks.ravel()
    counts = np.bincount(cells, minlength=grid * grid * kinds).reshape(grid * grid, kinds)
    objects = counts[:, 1:]
    return np.where(objects.max(axis=1) >= PATCH_COVER * cell * cell, objects.argmax(axis=1) + 1, 0)


def box_fractions(box) -> list[float]:
    """A scene box (x0, y0, x1, y1) in canvas pixels -> centre x, centre y, width, height as fractions."""
    x0, y0, x1, y1 = (float(v) / CANVAS for v in box)
    return [(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0]


def patch_boxes(scene: Scene, grid: int, covered: np.ndarray | None = None) -> np.ndarray:
    """(grid², 4) float32: for each patch (row-major), the box (`box_fractions`) of the object with the most
    pixels in it; zeros for a patch without object pixels. Where `patch_labels` says what is under a patch,
    this says which object and where it is: what tells two touching objects of one class apart and puts
    objects in left-to-right order."""
    covered = object_pixels(scene) if covered is None else covered
    instance = np.zeros(covered.shape, np.int64)
    for k, (x0, y0, x1, y1) in enumerate(np.asarray(scene.boxes)):
        rows, cols = slice(int(y0), int(np.ceil(y1))), slice(int(x0), int(np.ceil(x1)))
        instance[rows, cols][covered[rows, cols]] = k + 1
    cell, kinds = CANVAS // grid, 1 + len(scene.boxes)
    blocks = instance.reshape(grid, cell, grid, cell).transpose(0, 2, 1, 3).reshape(grid * grid, cell * cell)
    cells = np.repeat(np.arange(grid * grid), cell * cell) * kinds + blocks.ravel()
    objects = np.bincount(cells, minlength=grid * grid * kinds).reshape(grid * grid, kinds)[:, 1:]
    table = np.array([box_fractions(box) for box in scene.boxes], dtype=np.float32).reshape(-1, 4)
    if not len(table):
        return np.zeros((grid * grid, 4), np.float32)
    return np.where(objects.max(axis=1, keepdims=True) > 0, table[objects.argmax(axis=1)], 0.0).astype(np.float32)


def vlm_batch(
    cfg: EfficientVLMConfig, tokenizer: Tokenizer, seed: int, step: int, batch: int, rank: int, world_size: int,
    questions_per_scene: int, generator: torch.Generator,
) -> VLMBatch:
    """The scenes of one step (`data.scene_batch`) as every input and target the objectives need."""
    scenes = scene_batch(seed, step, batch, rank, world_size)
    length = cfg.text.max_text_len
    questions, question_scene, answers = [], [], []
    phrases, phrase_scene, boxes = [], [], []
    for row, scene in enumerate(scenes):
        for k in torch.randint(0, len(scene.qa), (questions_per_scene,), generator=generator).tolist():
            questions.append(scene.qa[k][0])
            question_scene.append(row)
            answers.append(ANSWERS.index(scene.qa[k][1]))
        k = int(torch.randint(0, len(scene.labels), (1,), generator=generator))
        if list(scene.labels).count(scene.labels[k]) == 1:  # a phrase names one object only when it is unique
            phrases.append(scene.labels[k])
            phrase_scene.append(row)
            boxes.append(box_fractions(scene.boxes[k]))
    captions = [s.caption for s in scenes]
    v = cfg.vision  # the inference pipeline's preprocessing, exactly
    grid = v.image_size // v.patch_size
    covered = [object_pixels(s) for s in scenes]
    return VLMBatch(
        images=preprocess_batch([s.image for s in scenes], v.image_size, v.pixel_mean, v.pixel_std),
        captions=captions,
        caption_text=encode_texts(tokenizer, captions, length),
        caption_prompted=encode_texts(tokenizer, captions, length, prompt_ids(tokenizer)),
        questions=encode_texts(tokenizer, questions, length),
        question_scene=torch.tensor(question_scene),
        answers=torch.tensor(answers),
        phrases=encode_texts(tokenizer, phrases, length),
        phrase_scene=torch.tensor(phrase_scene, dtype=torch.int64),
        phrase_boxes=torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        patch_labels=torch.from_numpy(np.stack([patch_labels(s, grid, covered=c) for s, c in zip(scenes, covered)])),
        patch_masks=torch.from_numpy(np.stack([patch_masks(s, grid, covered=c) for s, c in zip(scenes, covered)])),
        patch_boxes=torch.from_numpy(np.stack([patch_boxes(s, grid, covered=c) for s, c in zip(scenes, covered)])),
    )
