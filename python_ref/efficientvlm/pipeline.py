"""The EfficientVLM pipeline: python_ref's host steps around the five export graphs (docs/ARCHITECTURE.md §3).

    image ─► preprocess ─► [vision] ─► image tokens ─┬─► greedy loop ⟲ [caption_step]   (caption)
     host      host          graph                   ├─► pack ─► [vqa] ─► argmax        (answer)
                                                     ├─► pack ─► [match] ─► softmax[1]  (match)
    text ─► pack ─► [text_feature] ─► ITC feature    └─► image feature                  (retrieval)

`Pipeline.from_model` runs the eager graph modules (`graphs.py`); a build's runtime passes its own callables with
the same signatures (`Graphs.named`), so a build is driven by exactly this host code. The greedy loop is
`generate.py`'s, one `caption_step` call per token: the tokens so far (prompt "a picture of " first), padded to
`max_text_len`, `token_mask` 1 on them, and the argmax of the logits at the last of them is the next token.
Images are uint8 (H, W, 3) RGB arrays, preprocessed as upstream X-VLM (`preprocess.py`). There is no detector:
`detect` is a ConfigError.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping

import numpy as np
import torch

from ..errors import ConfigError, InputError
from ..pipeline import check_text
from ..tokenizer import Tokenizer
from .config import EfficientVLMConfig
from .generate import prompt_ids
from .graphs import GRAPH_NAMES, export_graphs
from .model import EfficientVLM
from .preprocess import preprocess

Graph = Callable[..., tuple[torch.Tensor, ...]]


@dataclass(frozen=True)
class Vocabularies:
    """Names of the model's outputs: the VQA answers (the demo models': `scenes.ANSWERS`)."""

    answers: tuple[str, ...]

    def check(self, cfg: EfficientVLMConfig) -> None:
        """ConfigError unless there is one answer per VQA logit."""
        if len(self.answers) != cfg.num_answers:
            raise ConfigError(f"answers vocabulary has {len(self.answers)} entries, the model predicts {cfg.num_answers}")

    @classmethod
    def placeholder(cls, cfg: EfficientVLMConfig) -> "Vocabularies":
        """Numbered answers, for presets whose answer list is not shipped."""
        return cls(answers=tuple(f"answer_{i}" for i in range(cfg.num_answers)))


@dataclass(frozen=True)
class Graphs:
    """The five graphs as callables on torch tensors returning tuples (`graphs.py` for their I/O)."""

    vision: Graph
    text_feature: Graph
    match: Graph
    vqa: Graph
    caption_step: Graph

    @classmethod
    def of(cls, model: EfficientVLM) -> "Graphs":
        return cls(**export_graphs(model))

    @classmethod
    def named(cls, graphs: Mapping[str, Graph]) -> "Graphs":
        """From graph name -> callable (every name of GRAPH_NAMES): a build's runtime graphs, or wrapped ones."""
        missing = [n for n in GRAPH_NAMES if n not in graphs]
        if missing:
            raise ValueError(f"graphs {missing} are missing; every one of {list(GRAPH_NAMES)} is needed")
        return cls(**{n: graphs[n] for n in GRAPH_NAMES})

    def modules(self) -> dict[str, Graph]:
        """Graph name -> callable, in GRAPH_NAMES order."""
        return {name: getattr(self, name) for name in GRAPH_NAMES}

    def map(self, wrap: Callable[[str, Graph], Graph]) -> "Graphs":
        """The same graphs, each replaced by `wrap(name, graph)` (to record or redirect their calls)."""
        return Graphs.named({name: wrap(name, g) for name, g in self.modules().items()})


@dataclass(frozen=True)
class ImageEncoding:
    """What the vision graph makes of one image: its tokens (1, N, Dv) and its unit ITC feature (E,)."""

    tokens: torch.Tensor
    feature: torch.Tensor


@dataclass(frozen=True)
class CaptionTokens:
    """A greedy caption: the token ids after the prompt (no [SEP]), and whether [SEP] ended it (else the
    sequence reached max_text_len)."""

    token_ids: tuple[int, ...]
    finished: bool


class Pipeline:
    """The reference pipeline: host steps of python_ref around five graphs (always inference mode)."""

    def __init__(self, cfg: EfficientVLMConfig, tokenizer: Tokenizer, vocab: Vocabularies, graphs: Graphs) -> None:
        vocab.check(cfg)
        if tokenizer.vocab_size > cfg.text.vocab_size:
            raise ConfigError(f"tokenizer has {tokenizer.vocab_size} tokens, the model only {cfg.text.vocab_size}")
        self.cfg = cfg
        self.tokenizer = tokenizer
        self.vocab = vocab
        self.graphs = graphs
        self.model: EfficientVLM | None = None

    @classmethod
    def from_model(cls, model: EfficientVLM, tokenizer: Tokenizer, vocab: Vocabularies) -> "Pipeline":
        pipe = cls(model.cfg, tokenizer, vocab, Graphs.of(model.eval()))
        pipe.model = model
        return pipe

    def preprocess(self, image: np.ndarray) -> torch.Tensor:
        """uint8 (H, W, 3) -> normalised (1, 3, S, S) (`preprocess.preprocess`)."""
        v = self.cfg.vision
        return preprocess(image, v.image_size, v.pixel_mean, v.pixel_std)

    @torch.no_grad()
    def encode(self, image: np.ndarray) -> ImageEncoding:
        """Preprocess one image and run the vision graph."""
        tokens, feature = self.graphs.vision(self.preprocess(image))
        return ImageEncoding(tokens, feature[0])

    def pack(self, text: str, what: str = "text") -> tuple[torch.Tensor, torch.Tensor]:
        """`[CLS] text [SEP]` padded with [PAD] to max_text_len: input_ids (1, T) int64, token_mask (1, T) f32.
        InputError for empty text, text that makes no tokens (only control or zero-width characters), or text
        longer than max_text_len - 2 tokens; the native core (`mvlm_evlm_pack_text`) refuses the same."""
        ids = self.tokenizer.encode(check_text(text, what))
        if not ids:
            raise InputError(f"{what} is {text!r}, expected a non-empty string with words")
        budget = self.cfg.text.max_text_len - 2
        if len(ids) > budget:
            raise InputError(f"{what} is {len(ids)} tokens, the model takes at most {budget} "
                             f"(max_text_len {self.cfg.text.max_text_len} minus [CLS] and [SEP])")
        return self._padded([self.tokenizer.cls_id, *ids, self.tokenizer.sep_id])

    def prompt(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The caption prompt (`generate.prompt_ids`: [CLS] a picture of) padded as `pack` pads: the first
        caption_step's input_ids and token_mask."""
        return self._padded(prompt_ids(self.tokenizer))

    def _padded(self, ids: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        length = self.cfg.text.max_text_len
        input_ids = torch.full((1, length), self.tokenizer.pad_id, dtype=torch.int64)
        input_ids[0, : len(ids)] = torch.tensor(ids, dtype=torch.int64)
        mask = torch.zeros(1, length, dtype=torch.float32)
        mask[0, : len(ids)] = 1.0
        return input_ids, mask

    # --- the tasks, on an image ---

    def detect(self, image: np.ndarray) -> list:
        raise ConfigError(f"{self.cfg.name} has no detector (EfficientVLM encodes the whole image); "
                          f"detect needs a MiniVLM model such as minivlm-demo")

    def caption(self, image: np.ndarray) -> str:
        """The greedy caption (X-VLM's prompt "a picture of " not repeated)."""
        return self.caption_of(self.encode(image))

    def answer(self, image: np.ndarray, question: str) -> str:
        """The most likely answer from the model's answer vocabulary."""
        return self.answer_of(self.encode(image), question)

    def match(self, image: np.ndarray, text: str) -> float:
        """Probability that `text` describes the image (ITM head on the fused [CLS], index 1)."""
        return self.match_of(self.encode(image), text)

    def image_feature(self, image: np.ndarray) -> torch.Tensor:
        """The image's unit ITC feature (E,), for retrieval (`similarity`)."""
        return self.encode(image).feature

    @torch.no_grad()
    def text_feature(self, text: str) -> torch.Tensor:
        """The text's unit ITC feature (E,), for retrieval (`similarity`)."""
        return self.graphs.text_feature(*self.pack(text))[0][0]

    # --- the same tasks on an image already encoded: several questions about one image run the ViT once ---

    def caption_of(self, image: ImageEncoding) -> str:
        return self.tokenizer.decode(list(self.caption_tokens(image).token_ids))

    @torch.no_grad()
    def caption_tokens(self, image: ImageEncoding) -> CaptionTokens:
        """Greedy decoding over `caption_step`, as `generate.greedy_caption_ids` for one image."""
        prefix = prompt_ids(self.tokenizer)
        length = self.cfg.text.max_text_len
        if not 0 < len(prefix) < length:
            raise InputError(f"prompt has {len(prefix)} tokens; it needs 1 to {length - 1} (max_text_len {length})")
        input_ids, mask = self.prompt()  # positions from t on: hidden from t-1 by the causal mask
        tokens: list[int] = []
        for t in range(len(prefix), length):
            mask[0, :t] = 1.0
            logits = self.graphs.caption_step(image.tokens, input_ids, mask)[0]
            token = int(logits[0, t - 1].argmax())
            input_ids[0, t] = token
            if token == self.tokenizer.sep_id:
                return CaptionTokens(tuple(tokens), True)
            tokens.append(token)
        return CaptionTokens(tuple(tokens), False)

    @torch.no_grad()
    def answer_logits_of(self, image: ImageEncoding, question: str) -> torch.Tensor:
        """VQA logits (num_answers,) for a question about the image."""
        return self.graphs.vqa(image.tokens, *self.pack(question, "question"))[0][0]

    def answer_of(self, image: ImageEncoding, question: str) -> str:
        return self.vocab.answers[int(self.answer_logits_of(image, question).argmax())]

    @torch.no_grad()
    def match_of(self, image: ImageEncoding, text: str) -> float:
        logits = self.graphs.match(image.tokens, *self.pack(text))[0]
        return float(torch.softmax(logits, dim=-1)[0, 1])


def similarity(image_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
    """(N, M) cosine similarities of unit image features (N, E) and text features (M, E): X-VLM's ITC ranking
    (its logits divide these by the learned temperature, which changes no order)."""
    return image_features @ text_features.t()


__all__ = ["CaptionTokens", "Graphs", "ImageEncoding", "Pipeline", "Vocabularies", "similarity"]
