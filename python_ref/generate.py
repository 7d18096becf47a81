"""Caption decoding: greedy and beam search, over the cached step graph or an uncached reference.

Follows microsoft/Oscar `oscar/modeling/modeling_bert.py` (`BertForImageCaptioning.generate` /
`prepare_inputs_for_generation`: start from [CLS] at position 0, append a [MASK] and predict it, stop at [SEP])
and `oscar/modeling/modeling_utils.py` (`_generate_no_beam_search`, `_generate_beam_search`, `BeamHypotheses`),
simplified to one image at a time and no sampling.

Two interchangeable decoders compute the logits of one step:
- `CachedDecoder` runs `CaptionPrefixGraph` once per image and `CaptionStepGraph` per step, keeping the
  fixed-size caption K/V cache on the host, exactly as a phone does;
- `UncachedDecoder` recomputes the whole seq2seq forward of `[CLS] w1 … w(t-1) [MASK] | tags | regions`
  every step: the reference the cached path must reproduce.

Beam search (`num_beams` > 1), kept simple and documented:
- every step takes the top 2·num_beams (beam, word) continuations by summed log-probability; a continuation
  ending in [SEP] becomes a finished hypothesis, the best num_beams others continue;
- a hypothesis scores sum_logprob / n ** length_penalty, n = generated tokens including its [SEP]
  (HF/OSCAR `BeamHypotheses`, length_penalty 1 by default);
- at max_caption_tokens the running beams become (unfinished) hypotheses, as OSCAR does at max_length;
- the search stops early, as HF with `early_stopping=False`, once num_beams hypotheses exist and the best
  running beam, normalised by its current length, cannot beat the worst of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from .errors import InputError
from .config import FusionConfig
from .fusion import AttentionKind, Fusion
from .fusion_graphs import CaptionPrefixGraph, CaptionStepGraph
from .packing import FusionInputs
from .tokenizer import Tokenizer

DEFAULT_BEAMS = 5  # OSCAR's captioning beam width; builds batch their beam step graph to it


StepHook = Callable[[torch.Tensor, torch.Tensor], None]
"""`on_step(history, logits)`, called once per decoding step: `history` (N, t) holds each row's tokens at
positions 0..t-1 ([CLS] first) and `logits` (N, V) the logits the step graph returned for the [MASK] after them.
Beam search's first step runs all N rows on the same history [CLS] (only row 0 is expanded). Goldens record
whole decodes through it."""


@dataclass(frozen=True)
class Caption:
    """A decoded caption.

    token_ids: generated tokens, without [CLS] and without the final [SEP].
    step_logits: (steps, V) the logits that chose each token of this caption, the [SEP] step included when
        `finished`; for beam search the logits along this hypothesis' own path.
    score: greedy: the sum of the chosen tokens' log-probs; beam: that sum / steps ** length_penalty.
    finished: True if the caption ended with [SEP], False if it was cut at max_caption_tokens.
    """

    token_ids: tuple[int, ...]
    step_logits: torch.Tensor
    score: float
    finished: bool


@dataclass(frozen=True)
class CaptionGraphs:
    """The two caption graphs as callables with the signatures of `CaptionPrefixGraph` / `CaptionStepGraph`.

    `of(fusion)` gives the reference modules; a phone build supplies its runtime's graphs instead.
    """

    cfg: FusionConfig
    prefix: Callable[..., tuple[torch.Tensor, torch.Tensor]]
    step: Callable[..., tuple[torch.Tensor, torch.Tensor, torch.Tensor]]

    @classmethod
    def of(cls, fusion: Fusion) -> "CaptionGraphs":
        return cls(fusion.cfg, CaptionPrefixGraph(fusion), CaptionStepGraph(fusion))


class CachedDecoder:
    """Logits of one step from the prefix/step graphs, with the caption K/V cache kept by the host."""

    def __init__(self, graphs: CaptionGraphs, tokenizer: Tokenizer, inputs: FusionInputs, num_beams: int) -> None:
        cfg = graphs.cfg
        self.mask_id = tokenizer.mask_id
        self.step_graph = graphs.step
        prefix = inputs.caption_prefix(cfg.max_text_len)
        keys, values = graphs.prefix(*prefix)  # (L, 1, cache_heads, P, head_dim): once per image
        self.prefix_keys = keys.expand(-1, num_beams, -1, -1, -1)
        self.prefix_values = values.expand(-1, num_beams, -1, -1, -1)
        self.prefix_mask = torch.cat([prefix[2], prefix[4]], dim=1).expand(num_beams, -1)  # (N, P)
        cache = (cfg.num_layers, num_beams, cfg.cache_heads, cfg.max_text_len, cfg.head_dim)
        self.cache_keys, self.cache_values = torch.zeros(cache), torch.zeros(cache)
        self.cache_mask = torch.zeros(num_beams, cfg.max_text_len)

    def step(self, history: torch.Tensor) -> torch.Tensor:
        """Logits (N, V) of the [MASK] after `history` (N, t) = tokens at positions 0..t-1."""
        n, t = history.shape
        token_ids = torch.stack([history[:, -1], torch.full((n,), self.mask_id)], dim=1)  # (N, 2)
        position_ids = torch.tensor([[t - 1, t]]).expand(n, 2)
        logits, new_keys, new_values = self.step_graph(
            token_ids, position_ids, self.prefix_keys, self.prefix_values, self.prefix_mask,
            self.cache_keys, self.cache_values, self.cache_mask,
        )
        # The token at t-1 is final now: its K/V join the cache (the [MASK]'s never do).
        self.cache_keys[:, :, :, t - 1] = new_keys[:, :, :, 0]
        self.cache_values[:, :, :, t - 1] = new_values[:, :, :, 0]
        self.cache_mask[:, t - 1] = 1.0
        return logits

    def reorder(self, beam_idx: torch.Tensor) -> None:
        """Make beam i continue from beam `beam_idx[i]`."""
        self.cache_keys = self.cache_keys[:, beam_idx]
        self.cache_values = self.cache_values[:, beam_idx]
        self.cache_mask = self.cache_mask[beam_idx]


class UncachedDecoder:
    """Logits of one step by recomputing the full seq2seq forward: the reference for `CachedDecoder`."""

    def __init__(self, fusion: Fusion, tokenizer: Tokenizer, inputs: FusionInputs, num_beams: int) -> None:
        self.fusion, self.mask_id, self.pad_id = fusion, tokenizer.mask_id, tokenizer.pad_id
        text_len = fusion.cfg.max_text_len
        tags, tag_types, tag_mask, regions, region_mask = (
            x.expand(num_beams, *x.shape[1:]) for x in inputs.caption_prefix(text_len)
        )
        self.tags, self.tag_types, self.tag_mask = tags, tag_types, tag_mask
        self.regions, self.region_mask = regions, region_mask

    def step(self, history: torch.Tensor) -> torch.Tensor:
        n, t = history.shape
        text_len = self.fusion.cfg.max_text_len
        text = torch.full((n, text_len), self.pad_id, dtype=torch.int64)
        text[:, :t] = history
        text[:, t] = self.mask_id
        text_mask = (torch.arange(text_len) <= t).float().expand(n, -1)
        hidden = self.fusion.encode(
            torch.cat([text, self.tags], 1),
            torch.cat([torch.zeros_like(text), self.tag_types], 1),
            torch.cat([text_mask, self.tag_mask], 1),
            self.regions,
            self.region_mask,
            AttentionKind.SEQ2SEQ,
        )
        return self.fusion.mlm_logits(hidden[:, t])  # (N, V)

    def reorder(self, beam_idx: torch.Tensor) -> None:
        """Nothing to reorder: every step recomputes from the history."""


def _setup(
    source: Fusion | CaptionGraphs, tokenizer: Tokenizer, inputs: FusionInputs, num_beams: int,
    max_caption_tokens: int | None, cached: bool,
) -> tuple[CachedDecoder | UncachedDecoder, int]:
    cfg = source.cfg
    steps = cfg.max_caption_tokens if max_caption_tokens is None else max_caption_tokens
    if not 1 <= steps <= cfg.max_text_len - 2:
        raise InputError(f"max_caption_tokens is {steps}, it must be in 1..{cfg.max_text_len - 2}")
    if inputs.input_ids.shape != (1, cfg.max_text_tags_len):
        raise InputError(f"inputs have input_ids {tuple(inputs.input_ids.shape)}, expected (1, {cfg.max_text_tags_len})")
    if num_beams < 1 or 2 * num_beams > cfg.vocab_size:
        raise InputError(f"num_beams is {num_beams}, it must be in 1..{cfg.vocab_size // 2}")
    if isinstance(source, CaptionGraphs):
        if not cached:
            raise InputError("the uncached reference path needs the Fusion module, not graphs")
        return CachedDecoder(source, tokenizer, inputs, num_beams), steps
    if cached:
        return CachedDecoder(CaptionGraphs.of(source), tokenizer, inputs, num_beams), steps
    return UncachedDecoder(source, tokenizer, inputs, num_beams), steps


@torch.no_grad()
def greedy(
    fusion: Fusion | CaptionGraphs,
    tokenizer: Tokenizer,
    inputs: FusionInputs,
    *,
    max_caption_tokens: int | None = None,
    cached: bool = True,
    on_step: StepHook | None = None,
) -> Caption:
    """Greedy caption of one packed image (`pack_inputs(..., text="", require_text=False)`).

    Takes the argmax at every step until [SEP] or `max_caption_tokens` (default: the config's).
    `cached=False` recomputes the full sequence every step (the reference path). `on_step(history, logits)`
    sees every step (see `StepHook`).
    """
    decoder, steps = _setup(fusion, tokenizer, inputs, 1, max_caption_tokens, cached)
    history = torch.tensor([[tokenizer.cls_id]])
    logits_seq, score, finished = [], 0.0, False
    for _ in range(steps):
        logits = decoder.step(history)[0]  # (V,)
        if on_step is not None:
            on_step(history, logits[None])
        token = int(logits.argmax())
        logits_seq.append(logits)
        score += float(F.log_softmax(logits, dim=-1)[token])
        if token == tokenizer.sep_id:
            finished = True
            break
        history = torch.cat([history, torch.tensor([[token]])], dim=1)
    return Caption(tuple(history[0, 1:].tolist()), torch.stack(logits_seq), score, finished)


@dataclass
class _Hypotheses:
    """The best `size` hypotheses so far (OSCAR/HF `BeamHypotheses`)."""

    size: int
    length_penalty: float
    items: list[Caption]

    def add(self, tokens: list[int], path_logits: torch.Tensor, sum_logprobs: float, finished: bool) -> None:
        score = sum_logprobs / path_logits.shape[0] ** self.length_penalty
        self.items.append(Caption(tuple(tokens), path_logits, score, finished))
        self.items.sort(key=lambda c: c.score, reverse=True)
        del self.items[self.size :]

    def is_done(self, best_running_sum: float, length: int) -> bool:
        return len(self.items) >= self.size and self.items[-1].score >= best_running_sum / length**self.length_penalty


@torch.no_grad()
def beam_search(
    fusion: Fusion | CaptionGraphs,
    tokenizer: Tokenizer,
    inputs: FusionInputs,
    num_beams: int = DEFAULT_BEAMS,
    *,
    length_penalty: float = 1.0,
    max_caption_tokens: int | None = None,
    cached: bool = True,
    on_step: StepHook | None = None,
) -> Caption:
    """Beam-search caption of one packed image: the best hypothesis by length-normalised log-probability
    (see the module docstring for the exact rules). `cached=False` is the uncached reference path.
    `on_step(history, logits)` sees every step (see `StepHook`)."""
    decoder, steps = _setup(fusion, tokenizer, inputs, num_beams, max_caption_tokens, cached)
    vocab = fusion.cfg.vocab_size
    history = torch.full((num_beams, 1), tokenizer.cls_id)  # (N, t)
    path_logits = torch.zeros(num_beams, 0, vocab)  # (N, t-1, V): logits along each beam's path
    beam_scores = torch.full((num_beams,), -1e9)
    beam_scores[0] = 0.0  # all beams start identical: let only the first one expand at step 1
    hyps = _Hypotheses(num_beams, length_penalty, [])
    for t in range(1, steps + 1):
        logits = decoder.step(history)  # (N, V)
        if on_step is not None:
            on_step(history, logits)
        candidates = (F.log_softmax(logits, dim=-1) + beam_scores[:, None]).view(-1)
        top_scores, top_idx = candidates.topk(2 * num_beams)  # spares for beams that end here
        running: list[tuple[float, int, int]] = []  # (sum_logprobs, parent beam, word)
        for score, idx in zip(top_scores.tolist(), top_idx.tolist()):
            beam, word = divmod(idx, vocab)
            if word == tokenizer.sep_id or t == steps:
                tokens = history[beam, 1:].tolist() + ([] if word == tokenizer.sep_id else [word])
                path = torch.cat([path_logits[beam], logits[beam : beam + 1]])
                hyps.add(tokens, path, score, finished=word == tokenizer.sep_id)
            elif len(running) < num_beams:
                running.append((score, beam, word))
        if t == steps or hyps.is_done(running[0][0], t):
            break
        beam_idx = torch.tensor([b for _, b, _ in running])
        decoder.reorder(beam_idx)
        history = torch.cat([history[beam_idx], torch.tensor([[w] for _, _, w in running])], dim=1)
        path_logits = torch.cat([path_logits[beam_idx], logits[beam_idx, None]], dim=1)
        beam_scores = torch.tensor([s for s, _, _ in running])
    return hyps.items[0]


__all__ = ["DEFAULT_BEAMS", "Caption", "CachedDecoder", "CaptionGraphs", "StepHook", "UncachedDecoder", "beam_search", "greedy"]
