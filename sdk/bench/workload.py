"""What a bench run measures on: the reference model, one real image traced through its pipeline (the inputs every
runtime's graphs are timed on, so every runtime computes the same thing), and the build folders to compare.

The image is demo scene 0 of the stream builds record goldens on (`converters/samples.py` `sample_scene`), with
the question and text its tasks ask. Each graph is timed on the call a build exports it with (the family's
`export_call`: MiniVLM's `caption_step` on its second call, with a non-empty cache).
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from minivlm.build_checks import read_manifest
from minivlm.converters.manifest import needs_macos
from minivlm.converters.samples import GOLDEN_SCENES, SampleImage, sample_scene, trace
from minivlm.errors import InputError
from minivlm.loading import load
from minivlm.python_ref.families import family_of

from .measure import graph_flops

# `--random-init` seeds torch with this before building the model, as the tests' tiny builds do
# (tests/conftest.py), so every worker process builds the same untrained weights.
RANDOM_SEED = 0
INPUTS_FILE = "inputs.pt"


def load_reference(model: str, random_init: bool):
    """`minivlm.load(model)`; an untrained model (`random_init`) is seeded with RANDOM_SEED."""
    if random_init:
        torch.manual_seed(RANDOM_SEED)
    return load(model, random_init=random_init)


@dataclass
class Workload:
    """The reference, the traced image, and per graph its recorded inputs, the eager outputs and FLOPs."""

    model: str
    random_init: bool
    reference: object  # what `minivlm.load` returned
    sample: SampleImage
    inputs: dict[str, tuple[torch.Tensor, ...]]
    outputs: dict[str, tuple[torch.Tensor, ...]]
    flops: dict[str, int]

    @property
    def family(self):
        return family_of(self.reference.config)

    def io_names(self) -> dict[str, tuple[list[str], list[str]]]:
        """Each graph's (input names, output names)."""
        graphs = self.reference.pipeline.graphs.modules()
        return {name: (list(g.input_names), list(g.output_names)) for name, g in graphs.items()}

    def spec(self) -> dict:
        """What a worker process needs to rebuild the host side without loading the eager model."""
        return {"model": self.model, "random_init": self.random_init, "preset": self.reference.config.name,
                "vocabularies": {k: list(v) for k, v in dataclasses.asdict(self.reference.vocab).items()},
                "question": self.sample.question, "text": self.sample.text, "io_names": self.io_names()}

    def save(self, folder: Path) -> None:
        """The image and the recorded graph inputs and eager outputs, for the worker processes."""
        torch.save({"image": torch.from_numpy(self.sample.image), "inputs": self.inputs, "outputs": self.outputs},
                   folder / INPUTS_FILE)


def saved(folder: Path) -> dict:
    """What `Workload.save` wrote: image (uint8 array), inputs and outputs by graph."""
    data = torch.load(folder / INPUTS_FILE, weights_only=True)
    data["image"] = data["image"].numpy()
    return data


@torch.no_grad()
def prepare(reference, model: str, random_init: bool) -> Workload:
    """Trace the image through `reference` (what `load_reference(model, random_init)` returned), keep each graph's
    recorded call, count its FLOPs."""
    family = family_of(reference.config)
    sample = sample_scene(GOLDEN_SCENES[0])
    calls = trace(reference.pipeline, sample).calls
    inputs, outputs, flops = {}, {}, {}
    graphs = reference.pipeline.graphs.modules()
    for name in family.graph_names:
        ins, outs = calls[name][min(family.export_call.get(name, 0), len(calls[name]) - 1)]
        inputs[name], outputs[name] = ins, outs
        flops[name] = graph_flops(graphs[name], ins)
    return Workload(model, random_init, reference, sample, inputs, outputs, flops)


def check_build(folder: str | Path, cfg, hint: str | None = None) -> dict:
    """The manifest of a build folder given to `bench` (ArtifactError, one line, if it is not one); InputError if
    it is a build of another model than `cfg`'s, the model it is listed with, ending in `hint` (what to do
    instead; default: pass --model). `cfg` None checks only that it is a build."""
    manifest = read_manifest(Path(folder))
    preset = manifest["model"]["preset"]
    if cfg is not None and preset != cfg.name:
        raise InputError(f"{folder} is a build of {preset}, but the model benchmarked is {cfg.name} "
                         f"({hint or f'pass --model {preset}'})")
    return manifest


def not_runnable(manifest: dict) -> str | None:
    """Why this machine cannot run a build (a Core ML build off macOS), or None."""
    if needs_macos(manifest) and sys.platform != "darwin":
        return f"a {manifest['target']} build with Core ML runs only on macOS/iOS; this is {sys.platform}"
    return None


def image_array(data: dict) -> np.ndarray:
    """The traced image as an owned uint8 (H, W, 3) array."""
    return np.array(data["image"], dtype=np.uint8)


__all__ = ["INPUTS_FILE", "RANDOM_SEED", "Workload", "check_build", "image_array", "load_reference", "not_runnable",
           "prepare", "saved"]
