"""The training data: a step's scenes for the detector, and the region cache the fusion stages read."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from minivlm.converters.atomic import atomic_path
from minivlm.python_ref.config import MiniVLMConfig
from minivlm.python_ref.packing import pack_inputs
from minivlm.python_ref.pipeline import BACKGROUND, Pipeline, Vocabularies
from minivlm.python_ref.preprocess import preprocess
from minivlm.python_ref.scenes import ANSWERS, CLASSES, COLOURS, Scene, generate_scene

DEMO_VOCABULARIES = Vocabularies(classes=(BACKGROUND, *CLASSES), attributes=COLOURS, answers=ANSWERS)


def scene_batch(seed: int, step: int, batch: int, rank: int, world_size: int) -> list[Scene]:
    """The scenes of one step: disjoint across ranks and steps, independent of how the run was resumed."""
    first = (step * world_size + rank) * batch
    return [generate_scene(seed, first + i) for i in range(batch)]


def detector_inputs(scenes: list[Scene], cfg: MiniVLMConfig) -> tuple[torch.Tensor, list, list, list]:
    """Preprocessed images (B, 3, S, S) and, per scene, its boxes in input pixels, class ids (0 is background)
    and colour ids."""
    tee = cfg.tee
    images, boxes, labels, attributes = [], [], [], []
    for scene in scenes:
        pixels, box = preprocess(scene.image, tee.image_size, tee.pixel_mean, tee.pixel_std)
        images.append(pixels)
        boxes.append(torch.from_numpy(np.array(scene.boxes, dtype=np.float32)) * box.scale)
        labels.append(torch.tensor([CLASSES.index(lab) + 1 for lab in scene.labels]))
        attributes.append(torch.tensor([COLOURS.index(lab.split()[0]) for lab in scene.labels]))
    return torch.cat(images), boxes, labels, attributes


@dataclass
class RegionCache:
    """Pre-extracted fusion inputs of a pool of scenes (tensors stacked over scenes)."""

    regions: torch.Tensor  # (N, R, region_dim)
    region_mask: torch.Tensor  # (N, R)
    tag_ids: torch.Tensor  # (N, Tb) tags segment [+ SEP], padded
    tag_types: torch.Tensor  # (N, Tb)
    tag_mask: torch.Tensor  # (N, Tb)
    caption_ids: torch.Tensor  # (N, Ta) [CLS] caption [SEP], padded
    caption_mask: torch.Tensor  # (N, Ta)
    question_ids: torch.Tensor  # (Q, Ta)
    question_mask: torch.Tensor  # (Q, Ta)
    question_scene: torch.Tensor  # (Q,) the scene each question is about
    answers: torch.Tensor  # (Q,) answer index

    def save(self, path: Path) -> None:
        from safetensors.torch import save_file

        with atomic_path(path) as tmp:
            save_file({k: v.contiguous() for k, v in dataclasses.asdict(self).items()}, str(tmp))

    @classmethod
    def load(cls, path: Path) -> "RegionCache":
        from safetensors.torch import load_file

        return cls(**load_file(str(path)))


@torch.no_grad()
def build_region_cache(pipe: Pipeline, seed: int, first: int, count: int, progress: Callable) -> RegionCache:
    """Run the reference TEE on scenes [first, first + count) of stream `seed` and pack their fusion inputs."""
    cfg = pipe.cfg.fusion
    rows: dict[str, list] = {k.name: [] for k in dataclasses.fields(RegionCache)}
    for index in progress(range(first, first + count), desc="regions"):
        scene = generate_scene(seed, index)
        found = pipe.regions(scene.image)
        packed = pipe.pack(found, scene.caption)
        text, tags = slice(0, cfg.max_text_len), slice(cfg.max_text_len, None)
        rows["regions"].append(packed.regions[0])
        rows["region_mask"].append(packed.region_mask[0])
        rows["tag_ids"].append(packed.input_ids[0, tags])
        rows["tag_types"].append(packed.token_type_ids[0, tags])
        rows["tag_mask"].append(packed.token_mask[0, tags])
        rows["caption_ids"].append(packed.input_ids[0, text])
        rows["caption_mask"].append(packed.token_mask[0, text])
        for question, answer in scene.qa:
            q = pack_inputs(pipe.tokenizer, question, [], torch.zeros(0, cfg.region_dim), cfg)
            rows["question_ids"].append(q.input_ids[0, text])
            rows["question_mask"].append(q.token_mask[0, text])
            rows["question_scene"].append(torch.tensor(index - first))
            rows["answers"].append(torch.tensor(ANSWERS.index(answer)))
    return RegionCache(**{k: torch.stack(v) for k, v in rows.items()})
