"""The whole reference pipeline: image -> detections, caption, answer, match score (docs/ARCHITECTURE.md §3).

preprocess -> TEE stage 1 -> proposals -> TEE stage 2 -> region selection -> fusion (+ heads) -> caption
decoding. Every step here is the definition that each phone build and native port is checked against.
Images are uint8 (H, W, 3) RGB arrays; `minivlm.load` accepts paths and PIL images on top of this.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping

import numpy as np
import torch
from torch import nn

from .config import FusionConfig, MiniVLMConfig
from .errors import ConfigError, InputError
from .fusion import Fusion
from .fusion_graphs import ClassifierGraph
from .generate import CaptionGraphs, beam_search, greedy
from .packing import FusionInputs, pack_inputs
from .postprocess import Regions, region_geometry, select_proposals, select_regions
from .preprocess import Letterbox, preprocess
from .rpn import make_anchors
from .tee import TEE
from .tokenizer import Tokenizer, check_unicode

BACKGROUND = "__background__"


@dataclass(frozen=True)
class Vocabularies:
    """Names of the model's outputs: detector classes (index 0 is background), attributes, VQA answers."""

    classes: tuple[str, ...]
    attributes: tuple[str, ...]
    answers: tuple[str, ...]

    def check(self, cfg: MiniVLMConfig) -> None:
        """ConfigError unless every vocabulary has the size its head predicts."""
        sizes = {
            "classes": (len(self.classes), cfg.tee.roi_head.num_classes),
            "attributes": (len(self.attributes), cfg.tee.roi_head.num_attributes),
            "answers": (len(self.answers), cfg.fusion.num_answers),
        }
        for name, (have, need) in sizes.items():
            if have != need:
                raise ConfigError(f"{name} vocabulary has {have} entries, the model predicts {need}")

    @classmethod
    def placeholder(cls, cfg: MiniVLMConfig) -> "Vocabularies":
        """Numbered names, for presets whose label sets are not shipped (e.g. the paper's 1592 VG classes)."""
        roi = cfg.tee.roi_head
        return cls(
            classes=(BACKGROUND, *(f"class_{i}" for i in range(1, roi.num_classes))),
            attributes=tuple(f"attribute_{i}" for i in range(roi.num_attributes)),
            answers=tuple(f"answer_{i}" for i in range(cfg.fusion.num_answers)),
        )


class MiniVLM(nn.Module):
    """The two networks: `tee` (image -> regions) and `fusion` (text + tags + regions -> task heads)."""

    def __init__(self, cfg: MiniVLMConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.tee = TEE(cfg.tee)
        self.fusion = Fusion(cfg.fusion)


@dataclass(frozen=True)
class Detection:
    """One detected region, in original-image pixels."""

    box: tuple[float, float, float, float]  # x1, y1, x2, y2
    label: str
    score: float
    attribute: str


@dataclass(frozen=True)
class ImageRegions:
    """What the detector hands the fusion model for one image."""

    regions: Regions  # boxes in input (letterboxed) pixels
    letterbox: Letterbox
    boxes: torch.Tensor  # (K, 4) in original-image pixels
    tags: tuple[str, ...]  # class names, confidence order
    tokens: torch.Tensor  # (K, D + 6) region tokens: fc7 feature ⊕ geometry in the original image


GRAPH_NAMES = ("tee_stage1", "tee_stage2", "caption_prefix", "caption_step", "vqa", "match")


@dataclass(frozen=True)
class Graphs:
    """The graphs a phone runs, as callables on torch tensors returning tuples (docs/ARCHITECTURE.md §4).

    `of(model)` gives the reference modules; a build's runtime supplies its own with the same signatures.
    """

    tee_stage1: Callable[..., tuple[torch.Tensor, ...]]
    tee_stage2: Callable[..., tuple[torch.Tensor, ...]]
    caption: CaptionGraphs  # caption_prefix + caption_step
    vqa: Callable[..., tuple[torch.Tensor]]
    match: Callable[..., tuple[torch.Tensor]]

    @classmethod
    def of(cls, model: MiniVLM) -> "Graphs":
        return cls(model.tee.stage1(), model.tee.stage2(), CaptionGraphs.of(model.fusion),
                   ClassifierGraph(model.fusion, "vqa"), ClassifierGraph(model.fusion, "match"))

    @classmethod
    def named(cls, caption_cfg: FusionConfig, graphs: Mapping[str, Callable]) -> "Graphs":
        """From graph name -> callable (every name of GRAPH_NAMES): a build's runtime graphs, or wrapped ones."""
        missing = [n for n in GRAPH_NAMES if n not in graphs]
        if missing:
            raise ValueError(f"graphs {missing} are missing; every one of {list(GRAPH_NAMES)} is needed")
        return cls(graphs["tee_stage1"], graphs["tee_stage2"],
                   CaptionGraphs(caption_cfg, graphs["caption_prefix"], graphs["caption_step"]), graphs["vqa"],
                   graphs["match"])

    def modules(self) -> dict[str, Callable]:
        """Graph name -> callable, in GRAPH_NAMES order."""
        return dict(zip(GRAPH_NAMES, (self.tee_stage1, self.tee_stage2, self.caption.prefix, self.caption.step,
                                      self.vqa, self.match)))

    def map(self, wrap: Callable[[str, Callable], Callable]) -> "Graphs":
        """The same graphs, each replaced by `wrap(name, graph)` (to record or redirect their calls)."""
        return Graphs.named(self.caption.cfg, {name: wrap(name, g) for name, g in self.modules().items()})


class Pipeline:
    """The reference pipeline: host steps of python_ref around six graphs (always inference mode).

    `from_model` runs the eager modules; a phone build passes its runtime's graphs and gets the same host code.
    """

    def __init__(self, cfg: MiniVLMConfig, tokenizer: Tokenizer, vocab: Vocabularies, graphs: Graphs) -> None:
        vocab.check(cfg)
        self.cfg = cfg
        self.tokenizer = tokenizer
        self.vocab = vocab
        self.graphs = graphs
        self.anchors, self.level_sizes = make_anchors(cfg.tee.rpn, cfg.tee.image_size, cfg.tee.bifpn.min_level)
        self.model: MiniVLM | None = None

    @classmethod
    def from_model(cls, model: MiniVLM, tokenizer: Tokenizer, vocab: Vocabularies) -> "Pipeline":
        pipe = cls(model.cfg, tokenizer, vocab, Graphs.of(model.eval()))
        pipe.model = model
        return pipe

    @torch.no_grad()
    def regions(self, image: np.ndarray) -> ImageRegions:
        """Run the TEE on one uint8 (H, W, 3) image: detections, tags and region tokens."""
        tee = self.cfg.tee
        pixels, box = preprocess(image, tee.image_size, tee.pixel_mean, tee.pixel_std)
        *levels, objectness, deltas = self.graphs.tee_stage1(pixels)
        proposals, valid = select_proposals(objectness[0], deltas[0], self.anchors, self.level_sizes, tee.rpn, tee.image_size)
        features, class_logits, box_deltas, attribute_logits = self.graphs.tee_stage2(*levels, proposals[None])
        regions = select_regions(
            proposals, valid, class_logits[0], box_deltas[0], attribute_logits[0], features[0], tee.roi_head, tee.image_size
        )
        boxes = box.boxes_to_image(regions.boxes.clone())
        tokens = torch.cat([regions.features, region_geometry(boxes, box.width, box.height)], dim=1)
        tags = tuple(self.vocab.classes[i] for i in regions.labels.tolist())
        return ImageRegions(regions, box, boxes, tags, tokens)

    def detect(self, image: np.ndarray) -> list[Detection]:
        """Detections by descending score: box in image pixels, class name, score, attribute name."""
        return self.detections_of(self.regions(image))

    def caption(self, image: np.ndarray, num_beams: int = 1) -> str:
        """A caption: greedy decoding (num_beams = 1) or beam search, with the cached prefix."""
        return self.caption_of(self.regions(image), num_beams)

    def answer(self, image: np.ndarray, question: str) -> str:
        """The most likely answer from the model's answer vocabulary."""
        return self.answer_of(self.regions(image), question)

    def match(self, image: np.ndarray, text: str) -> float:
        """Probability that `text` describes the image (the 2-way match head on [CLS])."""
        return self.match_of(self.regions(image), text)

    # The same four tasks on regions already extracted: several questions about one image run the TEE once.

    def detections_of(self, found: ImageRegions) -> list[Detection]:
        attributes = found.regions.attribute_logits.argmax(dim=1).tolist() if len(found.regions) else []
        found_all = [
            Detection(tuple(float(v) for v in b), tag, float(s), self.vocab.attributes[a])
            for b, tag, s, a in zip(found.boxes.tolist(), found.tags, found.regions.scores.tolist(), attributes)
        ]
        return sorted(found_all, key=lambda d: -d.score)  # stable: equal scores keep the region order

    @torch.no_grad()
    def caption_of(self, found: ImageRegions, num_beams: int = 1) -> str:
        if not isinstance(num_beams, int) or num_beams < 1:
            raise InputError(f"num_beams is {num_beams!r}, expected an integer >= 1")
        inputs = self.pack(found, "", require_text=False)
        graphs = self.graphs.caption
        result = greedy(graphs, self.tokenizer, inputs) if num_beams == 1 else beam_search(graphs, self.tokenizer, inputs, num_beams)
        return self.tokenizer.decode(list(result.token_ids))

    @torch.no_grad()
    def answer_logits_of(self, found: ImageRegions, question: str) -> torch.Tensor:
        """VQA logits (num_answers,) for a question about the image."""
        inputs = self.pack(found, check_text(question, "question"))
        return self.graphs.vqa(*inputs.as_tuple())[0][0]

    def answer_of(self, found: ImageRegions, question: str) -> str:
        return self.vocab.answers[int(self.answer_logits_of(found, question).argmax())]

    @torch.no_grad()
    def match_of(self, found: ImageRegions, text: str) -> float:
        inputs = self.pack(found, check_text(text, "text"))
        return float(torch.softmax(self.graphs.match(*inputs.as_tuple())[0], dim=-1)[0, 1])

    def pack(self, found: ImageRegions, text: str, *, require_text: bool = True) -> FusionInputs:
        """The fusion inputs `[CLS] text [SEP] tags [SEP] regions` of one image."""
        return pack_inputs(self.tokenizer, text, list(found.tags), found.tokens, self.cfg.fusion, require_text=require_text)


def check_text(text: object, what: str) -> str:
    """InputError unless `text` is a non-empty string that can be encoded as UTF-8."""
    if not isinstance(text, str) or not text.strip():
        raise InputError(f"{what} is {text!r}, expected a non-empty string")
    return check_unicode(text, what)
