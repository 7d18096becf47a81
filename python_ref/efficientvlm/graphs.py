"""EfficientVLM's export graphs: tensors in, a tuple of tensors out, static shapes, fixed names (as MiniVLM's
`fusion_graphs.py`: token ids int64, masks float32 0/1, each graph names its tensors in `input_names` /
`output_names` and gives zero inputs of its exact static shapes with `example_inputs(batch)`).

Each graph holds only the `EfficientVLM` submodules it runs (shared, not copied), registered under the model's
own names so that a build's tensor names read as the model's: torch.export lifts every parameter a module owns.
S = image size, N = image tokens (class token + patches), Dv = vision width, T = `max_text_len`, E = `embed_dim`,
A = `num_answers`, V = vocabulary size (docs/ARCHITECTURE.md §4):

    vision        images (B, 3, S, S)                              -> image_tokens (B, N, Dv), image_feature (B, E)
    text_feature  input_ids (B, T) i64, token_mask (B, T)          -> text_feature (B, E)
    match         image_tokens, input_ids, token_mask              -> match_logits (B, 2), index 1 = match
    vqa           image_tokens, input_ids, token_mask              -> answer_logits (B, A)
    caption_step  image_tokens, input_ids, token_mask              -> token_logits (B, T, V)

`image_feature` and `text_feature` are the ITC head's unit vectors (`heads.ITCHead`); `caption_step` runs the
text and cross-modal layers under the causal mask (`generate.py`) and returns the MLM logits at every position:
the host takes position t-1 as the prediction of token t.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import EfficientVLMConfig
from .model import EfficientVLM

TEXT_INPUT_NAMES = ("input_ids", "token_mask")
FUSED_INPUT_NAMES = ("image_tokens", *TEXT_INPUT_NAMES)


def _text_zeros(cfg: EfficientVLMConfig, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero input_ids (B, T) int64 and token_mask (B, T) float32."""
    t = cfg.text.max_text_len
    return torch.zeros(batch, t, dtype=torch.int64), torch.zeros(batch, t, dtype=torch.float32)


def _fused_zeros(cfg: EfficientVLMConfig, batch: int) -> tuple[torch.Tensor, ...]:
    """Zero image_tokens (B, N, Dv) float32, then `_text_zeros`."""
    return (torch.zeros(batch, cfg.vision.num_tokens, cfg.vision.width, dtype=torch.float32), *_text_zeros(cfg, batch))


class VisionGraph(nn.Module):
    """images (B, 3, S, S) normalised -> image_tokens (B, N, Dv), image_feature (B, E) (`model.encode_image`,
    then the ITC projection of the class token, L2-normalised)."""

    def __init__(self, model: EfficientVLM) -> None:
        super().__init__()
        self.cfg = model.cfg
        self.vision = model.vision
        self.vision_proj = model.heads.itc.vision_proj
        self.input_names = ("images",)
        self.output_names = ("image_tokens", "image_feature")

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = self.vision(images)
        return tokens, F.normalize(self.vision_proj(tokens[:, 0]), dim=-1)  # ITCHead.image_features

    def example_inputs(self, batch: int = 1) -> tuple[torch.Tensor, ...]:
        s = self.cfg.vision.image_size
        return (torch.zeros(batch, 3, s, s, dtype=torch.float32),)


class TextFeatureGraph(nn.Module):
    """input_ids (B, T) int64, token_mask (B, T) -> text_feature (B, E): the text encoder (bidirectional), then
    the ITC projection of [CLS], L2-normalised (`ITCHead.text_features`)."""

    def __init__(self, model: EfficientVLM) -> None:
        super().__init__()
        self.cfg = model.cfg
        self.text = model.text
        self.text_proj = model.heads.itc.text_proj
        self.input_names = TEXT_INPUT_NAMES
        self.output_names = ("text_feature",)

    def forward(self, input_ids: torch.Tensor, token_mask: torch.Tensor) -> tuple[torch.Tensor]:
        states = self.text(input_ids, token_mask)
        return (F.normalize(self.text_proj(states[:, 0]), dim=-1),)

    def example_inputs(self, batch: int = 1) -> tuple[torch.Tensor, ...]:
        return _text_zeros(self.cfg, batch)


# The classifier graphs: graph name -> (the Heads attribute, the output's name).
CLASSIFIER_HEADS = {"match": ("itm_head", "match_logits"), "vqa": ("vqa_head", "answer_logits")}


class ClassifierGraph(nn.Module):
    """image_tokens (B, N, Dv), input_ids (B, T) int64, token_mask (B, T) -> one head on the fused [CLS]:
    `match` outputs match_logits (B, 2) (ITM, index 1 = match), `vqa` answer_logits (B, A)."""

    def __init__(self, model: EfficientVLM, graph: str) -> None:
        super().__init__()
        attribute, output = CLASSIFIER_HEADS[graph]
        self.cfg = model.cfg
        self.text, self.cross = model.text, model.cross
        self.add_module(attribute, getattr(model.heads, attribute))
        self.head_name = attribute
        self.input_names = FUSED_INPUT_NAMES
        self.output_names = (output,)

    def forward(self, image_tokens: torch.Tensor, input_ids: torch.Tensor, token_mask: torch.Tensor) -> tuple[torch.Tensor]:
        image_mask = torch.ones(image_tokens.shape[:2], device=image_tokens.device)  # a whole image
        fused = self.cross(self.text(input_ids, token_mask), token_mask, image_tokens, image_mask)
        return (getattr(self, self.head_name)(fused[:, 0]),)

    def example_inputs(self, batch: int = 1) -> tuple[torch.Tensor, ...]:
        return _fused_zeros(self.cfg, batch)


class CaptionStepGraph(nn.Module):
    """image_tokens (B, N, Dv), input_ids (B, T) int64, token_mask (B, T) -> token_logits (B, T, V): the text and
    cross-modal layers under the causal mask and the MLM head (tied to the word embeddings) at every position.
    One greedy step (`generate.py`): the host feeds the tokens so far with `token_mask` 1 on them and reads
    position t-1; under the causal mask padding after t-1 changes nothing there."""

    def __init__(self, model: EfficientVLM) -> None:
        super().__init__()
        self.cfg = model.cfg
        self.text, self.cross = model.text, model.cross
        self.mlm_head = model.heads.mlm_head
        self.input_names = FUSED_INPUT_NAMES
        self.output_names = ("token_logits",)

    def forward(self, image_tokens: torch.Tensor, input_ids: torch.Tensor, token_mask: torch.Tensor) -> tuple[torch.Tensor]:
        image_mask = torch.ones(image_tokens.shape[:2], device=image_tokens.device)
        text = self.text.forward_causal(input_ids, token_mask)
        fused = self.cross.forward_causal(text, token_mask, image_tokens, image_mask)
        return (self.mlm_head(fused, self.text.embeddings.word_embeddings.weight),)

    def example_inputs(self, batch: int = 1) -> tuple[torch.Tensor, ...]:
        return _fused_zeros(self.cfg, batch)


def export_graphs(model: EfficientVLM) -> dict[str, nn.Module]:
    """The five graphs of `model`, by name, in `GRAPH_NAMES` order."""
    return {"vision": VisionGraph(model), "text_feature": TextFeatureGraph(model),
            "match": ClassifierGraph(model, "match"), "vqa": ClassifierGraph(model, "vqa"),
            "caption_step": CaptionStepGraph(model)}


GRAPH_NAMES = ("vision", "text_feature", "match", "vqa", "caption_step")

__all__ = ["CLASSIFIER_HEADS", "CaptionStepGraph", "ClassifierGraph", "FUSED_INPUT_NAMES", "GRAPH_NAMES",
           "TEXT_INPUT_NAMES", "TextFeatureGraph", "VisionGraph", "export_graphs"]
