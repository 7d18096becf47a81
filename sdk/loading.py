"""`minivlm.load`: the eager reference pipeline of a preset or a weights file, of any model family, taking any
image a user has (`ReferencePipeline` for MiniVLM, `minivlm.efficientvlm_pipeline.EfficientVLMReference` for
EfficientVLM: `PUBLIC_TYPES`)."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import warnings
from pathlib import Path

import torch

from minivlm.efficientvlm_pipeline import EfficientVLMReference
from minivlm.errors import ConfigError, NoDetectionsWarning, WeightsError
from minivlm.images import ImageLike, load_image, shrink_for_input
from minivlm.python_ref.families import PRESET_FAMILIES, family_of, get_config, known_presets
from minivlm.python_ref.family import Family
from minivlm.python_ref.pipeline import Detection, ImageRegions, Pipeline, check_text
from minivlm.python_ref.postprocess import region_geometry
from minivlm.python_ref.weights import load_weights, read_metadata
from minivlm.public_model import PublicModel

log = logging.getLogger(__name__)

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
DEFAULT_MODEL = "minivlm-demo"
DEFAULT_SEED = 0  # the seed of a random init when none is given (`minivlm-convert --random-init --seed`)


def bundled_weights(preset: str) -> Path | None:
    """The weights file shipped for a preset, if any."""
    path = WEIGHTS_DIR / f"{preset}.safetensors"
    return path if path.is_file() else None


def install_weights(weights: str | Path, preset: str) -> Path:
    """Make the weights file `weights` the one shipped for `preset` (the retraining scripts' --install),
    atomically: the bundled file is either the old one or the whole new one."""
    from minivlm.converters.atomic import atomic_path

    target = WEIGHTS_DIR / f"{preset}.safetensors"
    with atomic_path(target) as tmp:
        shutil.copyfile(weights, tmp)
    return target


class ReferencePipeline(PublicModel):
    """The MiniVLM python_ref pipeline behind the public API: images may be paths, PIL images or uint8 arrays."""

    pipeline: Pipeline

    def regions(self, image: ImageLike) -> ImageRegions:
        """What the detector hands the fusion model, for any image: boxes in its pixels. An image more than
        PRESHRINK_RATIO times the model input is box-reduced first (`minivlm.images.shrink_for_input`), its
        boxes scaled back and its region geometry taken in the original frame (`letterbox` stays that of the
        reduced image the model saw)."""
        pixels = load_image(image)
        small, factor = shrink_for_input(pixels, self.config.tee.image_size)
        found = self.pipeline.regions(small)
        if factor == 1:
            return found
        height, width = pixels.shape[:2]
        boxes = found.boxes * factor
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, width)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, height)
        tokens = torch.cat([found.regions.features, region_geometry(boxes, width, height)], dim=1)
        return dataclasses.replace(found, boxes=boxes, tokens=tokens)

    def detect(self, image: ImageLike) -> list[Detection]:
        """Detections by descending score: (box xyxy in image pixels, label, score, attribute)."""
        return self.pipeline.detections_of(self.regions(image))

    def caption(self, image: ImageLike, num_beams: int = 1) -> str:
        """A caption of the image (greedy, or beam search with `num_beams` > 1). Warns (NoDetectionsWarning)
        when nothing was detected: the caption then comes from no region at all."""
        return self.pipeline.caption_of(self._checked_regions(image, "caption"), num_beams)

    def answer(self, image: ImageLike, question: str) -> str:
        """The answer to a question about the image. InputError unless `question` is a non-empty str that
        can be encoded as UTF-8 (checked before the image is read); NoDetectionsWarning as for `caption`."""
        question = check_text(question, "question")
        return self.pipeline.answer_of(self._checked_regions(image, "answer"), question)

    def match(self, image: ImageLike, text: str) -> float:
        """Probability in [0, 1] that `text` describes the image (`text` checked as `answer`'s question;
        NoDetectionsWarning as for `caption`)."""
        text = check_text(text, "text")
        return self.pipeline.match_of(self._checked_regions(image, "match score"), text)

    def _checked_regions(self, image: ImageLike, result: str) -> ImageRegions:
        found = self.regions(image)
        if not found.tags:
            warnings.warn(f"no object detected in the image: the {result} comes from no region and no tag",
                          NoDetectionsWarning, stacklevel=3)
        return found


# The public API of a model, by family: (python_ref pipeline, source) -> what `load` returns.
PUBLIC_TYPES = {"minivlm": ReferencePipeline, "efficientvlm": EfficientVLMReference}


def _vocabularies(family: Family, metadata: dict[str, str], path: Path):
    try:
        raw = json.loads(metadata["vocabularies"])
        return family.vocabularies_from_json(raw)
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise WeightsError(f"{path} has no readable 'vocabularies' metadata ({type(err).__name__})") from None


def load(model: str = DEFAULT_MODEL, *, random_init: bool = False,
         seed: int | None = None) -> ReferencePipeline | EfficientVLMReference:
    """The reference pipeline of `model`: a preset name of any family (its bundled weights) or a `.safetensors`
    file written by `minivlm train` or `minivlm.checkpoints.save_weights` (its metadata names the preset).
    `random_init=True` builds an untrained preset (e.g. `minivlm-paper`, for which no weights exist) with
    numbered placeholder vocabularies, its weights drawn from torch's generator seeded with `seed` (default
    DEFAULT_SEED; the caller's random state is left as it was): the same seed and torch version give the same
    weights, which is how `minivlm parity` re-creates the reference of a random-init build."""
    model = os.fspath(model) if isinstance(model, os.PathLike) else model
    if not isinstance(model, str):
        raise ConfigError(f"model is {model!r}, expected a preset name or a .safetensors path")
    if seed is not None and not random_init:
        raise ConfigError(f"seed is {seed!r}, but a seed applies only to a random init (--random-init)")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**63):
        raise ConfigError(f"seed is {seed!r}, expected an integer in [0, 2**63)")
    path = Path(model)
    presets = known_presets()
    if model not in PRESET_FAMILIES and path.suffix == ".safetensors":
        return _from_file(weights_config(path), path)
    if model not in PRESET_FAMILIES and (path.suffix or os.sep in model or path.exists()):
        raise WeightsError(f"{model!r} is neither a model preset nor a weights file: a weights file must be a "
                           f".safetensors file written by `minivlm train` (pickled .pt/.bin checkpoints are never "
                           f"loaded); presets: {presets}")
    cfg = get_config(model)  # ConfigError for an unknown name, listing the presets
    if random_init:
        family = family_of(cfg)
        seed = DEFAULT_SEED if seed is None else seed
        with torch.random.fork_rng(devices=[]):  # CPU generator only: the model is built on the CPU
            torch.manual_seed(seed)
            net = family.model(cfg)
        pipeline = family.pipeline(net, family.tokenizer(cfg), family.vocabularies.placeholder(cfg))
        return PUBLIC_TYPES[family.name](pipeline, f"random init (seed {seed})", seed=seed)
    weights = bundled_weights(model)
    if weights is None:
        raise ConfigError(
            f"no weights ship for {model!r}; pass random_init=True for an untrained model of that architecture "
            f"(bundled: {', '.join(sorted(p.stem for p in WEIGHTS_DIR.glob('*.safetensors'))) or 'none'})"
        )
    return _from_file(structured_config(cfg, read_metadata(weights), weights), weights)


def weights_config(path: str | Path):
    """The config of a weights file written by `minivlm train` or `minivlm.checkpoints.save_weights`: the preset
    its metadata names, with the per-layer widths of its "structure" entry if it has one (`structured_config`).
    WeightsError (one line) for a missing file, a folder, or metadata naming no preset this SDK has."""
    path = Path(path)
    if path.is_dir():
        raise WeightsError(f"{str(path)!r} is a directory; --model takes a .safetensors file written by `minivlm train`")
    if not path.is_file():
        raise WeightsError(f"weights file {str(path)!r} does not exist")
    metadata = read_metadata(path)
    preset = metadata.get("preset")
    if preset is None:
        raise WeightsError(f"{path} names no 'preset' in its metadata")
    if preset not in PRESET_FAMILIES:
        raise WeightsError(f"{path} names preset {preset!r} in its metadata, which this SDK does not have "
                           f"(presets: {known_presets()})")
    return structured_config(get_config(preset), metadata, path)


def model_config(model: str):
    """The config of `model`: a preset name of any family (with the structure of its bundled weights, if they
    are structurally pruned, as `load` builds it), or a `.safetensors` weights file (`weights_config`)."""
    if model not in PRESET_FAMILIES and Path(model).suffix == ".safetensors":
        return weights_config(model)
    cfg = get_config(model)  # ConfigError for an unknown name, listing the presets
    weights = bundled_weights(model)
    return cfg if weights is None else structured_config(cfg, read_metadata(weights), weights)


def model_weights(model: str) -> Path | None:
    """The weights file of `model`: the file itself, or the one shipped for a preset (None if none ships)."""
    if model not in PRESET_FAMILIES and Path(model).suffix == ".safetensors":
        return Path(model)
    return bundled_weights(model)


def structured_config(cfg, metadata: dict[str, str], path: Path):
    """The config of a weights file: its preset's `cfg`, with the per-layer widths of its "structure" metadata
    (a structurally pruned model) if it has one. WeightsError (one line) if that entry is not a structure of `cfg`."""
    if "structure" not in metadata:
        return cfg
    try:
        return family_of(cfg).restructured(cfg, json.loads(metadata["structure"]))
    except json.JSONDecodeError as err:
        raise WeightsError(f"{path}: its 'structure' metadata is not JSON ({err.msg} at character {err.pos})") from None
    except ConfigError as err:
        raise WeightsError(f"{path}: its 'structure' metadata does not fit preset {cfg.name}: {err}") from None


def _from_file(cfg, path: Path) -> ReferencePipeline | EfficientVLMReference:
    family = family_of(cfg)
    net = family.model(cfg)
    metadata = load_weights(net, path)
    pipeline = family.pipeline(net, family.tokenizer(cfg), _vocabularies(family, metadata, path))
    return PUBLIC_TYPES[family.name](pipeline, str(path))
