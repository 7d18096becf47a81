"""EfficientVLM's text encoder: BERT embeddings and the first `text_layers` (text-only) layers of X-VLM's BERT.

Mirrors zengyan-97/X-VLM `models/xbert.py` (`BertEmbeddings`, `BertSelfAttention`, `BertLayer` below
`fusion_layer`, i.e. `mode='text'`), which is HF transformers `models/bert/modeling_bert.py` with a cross-attention
added from `fusion_layer` on (that part is `cross_modal.py`). The building blocks that are exactly BERT's
(`LayerNorm`, `split_heads`, `additive_mask`, `init_bert`) are `python_ref/fusion.py`'s.

Export-friendly as fusion.py: attention is 3-D `bmm` over (B*heads, T, head_dim), masks are additive floats
built from 0/1 masks, no data-dependent Python branch. The config has no dropout: these modules are the
inference reference (X-VLM trains with BERT's 0.1 dropout).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..fusion import LayerNorm, additive_mask, init_bert, split_heads
from .config import TextConfig


class OutputBias(nn.Module):
    """What is left of an output Linear whose every input was pruned away: its bias, kept under the Linear's
    own key (`<name>.bias`), so that a pruned model's state dict is a subset of the unpruned one's and no
    tensor has a zero-size axis (exporters refuse those)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(width))


class Attention(nn.Module):
    """X-VLM `BertSelfAttention` + `BertSelfOutput.dense`: queries from the text (B, T, H), keys and values
    from a context (B, S, kv_width) — the text itself (self-attention) or the image tokens (cross-attention,
    where xbert's key/value are Linear(`encoder_width` -> H)). Also the ViT's attention (`vit.py`, no mask):
    HF `CLIPAttention` is the same q/k/v/out Linears and softmax.

    `heads` is the number of heads kept (structured pruning keeps k <= the config's heads, each `head_dim` wide,
    by default hidden // heads): q/k/v are Linear(in, heads*head_dim), out Linear(heads*head_dim, hidden).
    With 0 heads the output is the out bias alone (`OutputBias`: no q/k/v).

    Python-level attributes, so export sees no trace of them while they are None:
    `record` is None, or a list each forward appends its probabilities (B, heads, T, S) to, not detached
    (`taps.recording` sets it, for distillation); `head_mask` is None, or a (heads,) tensor multiplying each
    head's context before `out` (pruning's gates; gradients reach it)."""

    def __init__(self, hidden: int, heads: int, kv_width: int, head_dim: int | None = None) -> None:
        super().__init__()
        self.hidden, self.heads = hidden, heads
        self.head_dim = (hidden // heads if heads else 0) if head_dim is None else head_dim
        self.record: list[torch.Tensor] | None = None
        self.head_mask: torch.Tensor | None = None
        inner = heads * self.head_dim
        if heads == 0:
            self.out = OutputBias(hidden)
            return
        self.query = nn.Linear(hidden, inner)
        self.key = nn.Linear(kv_width, inner)
        self.value = nn.Linear(kv_width, inner)
        self.out = nn.Linear(inner, hidden)

    def forward(self, x: torch.Tensor, context: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """`x` (B, T, H) attends to `context` (B, S, kv_width) under additive `mask` (B, T or 1, S), or to
        every context token if `mask` is None (the ViT: a Python-level choice, so export sees no branch)."""
        b, t, _ = x.shape
        s = context.shape[1]
        if self.heads == 0:  # a pruned-away attention: a constant (the config fixes it, not the data)
            if self.record is not None:
                self.record.append(x.new_zeros(b, 0, t, s))
            return torch.zeros_like(x) + self.out.bias  # not a view of the bias: a new (B, T, H) tensor
        q = split_heads(self.query(x), self.heads).reshape(b * self.heads, t, self.head_dim)
        k = split_heads(self.key(context), self.heads).reshape(b * self.heads, s, self.head_dim)
        v = split_heads(self.value(context), self.heads).reshape(b * self.heads, s, self.head_dim)
        scores = torch.bmm(q, k.transpose(1, 2)).view(b, self.heads, t, s) / math.sqrt(self.head_dim)
        if mask is not None:
            scores = scores + mask.unsqueeze(1)
        probs = torch.softmax(scores, dim=-1)  # (B, heads, T, S)
        if self.record is not None:
            self.record.append(probs)
        ctx = torch.bmm(probs.view(b * self.heads, t, s), v).view(b, self.heads, t, self.head_dim)
        if self.head_mask is not None:
            ctx = ctx * self.head_mask.view(1, self.heads, 1, 1)
        return self.out(ctx.transpose(1, 2).reshape(b, t, self.heads * self.head_dim))


class FeedForward(nn.Module):
    """`BertIntermediate` + `BertOutput`: Linear -> exact (erf) GELU -> Linear -> residual -> LayerNorm, with
    `neurons` hidden units (the config's `intermediate_size` unless pruned; 0: `ffn_out` is its bias alone).
    `neuron_mask` is None, or a (neurons,) tensor multiplying the GELU's output (pruning's gates, as
    `Attention.head_mask`)."""

    def __init__(self, cfg: TextConfig, neurons: int | None = None) -> None:
        super().__init__()
        neurons = cfg.intermediate_size if neurons is None else neurons
        self.neurons = neurons
        self.neuron_mask: torch.Tensor | None = None
        if neurons == 0:
            self.ffn_out = OutputBias(cfg.hidden_size)
        else:
            self.ffn_in = nn.Linear(cfg.hidden_size, neurons)
            self.ffn_out = nn.Linear(neurons, cfg.hidden_size)
        self.ffn_norm = LayerNorm(cfg.hidden_size, cfg.layer_norm_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.neurons == 0:
            return self.ffn_norm(x + self.ffn_out.bias)
        act = F.gelu(self.ffn_in(x))
        if self.neuron_mask is not None:
            act = act * self.neuron_mask
        return self.ffn_norm(x + self.ffn_out(act))


class TextLayer(nn.Module):
    """A post-LN BERT layer: self-attention -> residual -> LN -> FFN -> residual -> LN; layer `index` of the
    config's per-layer heads and FFN widths."""

    def __init__(self, cfg: TextConfig, index: int = 0) -> None:
        super().__init__()
        self.attn = Attention(cfg.hidden_size, cfg.layer_self_heads(index), cfg.hidden_size, cfg.head_dim)
        self.attn_norm = LayerNorm(cfg.hidden_size, cfg.layer_norm_eps)
        self.ffn = FeedForward(cfg, cfg.layer_ffn(index))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.ffn(self.attn_norm(x + self.attn(x, x, mask)))


class TextEmbeddings(nn.Module):
    """`BertEmbeddings`: word + absolute position + token type -> LayerNorm."""

    def __init__(self, cfg: TextConfig) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.position_embeddings = nn.Embedding(cfg.max_position_embeddings, cfg.hidden_size)
        self.token_type_embeddings = nn.Embedding(cfg.type_vocab_size, cfg.hidden_size)
        self.layer_norm = LayerNorm(cfg.hidden_size, cfg.layer_norm_eps)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)  # (T,), broadcast over the batch
        x = self.word_embeddings(input_ids) + self.position_embeddings(positions)
        return self.layer_norm(x + self.token_type_embeddings(token_type_ids))  # (B, T, H)


def padding_mask(token_mask: torch.Tensor) -> torch.Tensor:
    """Additive (B, 1, S) mask from a 0/1 key mask (B, S): padded keys hidden from every query."""
    return additive_mask(token_mask.unsqueeze(1).float())


def causal_padding_mask(token_mask: torch.Tensor) -> torch.Tensor:
    """Additive (B, T, T) mask: query t sees valid keys at or before t (xbert's `get_extended_attention_mask`
    with `is_decoder=True`). Depends on the sequence length only, besides the padding."""
    t = token_mask.shape[1]
    causal = torch.tril(torch.ones(t, t, device=token_mask.device))
    return additive_mask(token_mask.unsqueeze(1).float() * causal)


class TextEncoder(nn.Module):
    """Embeddings and `text_layers` BERT layers (X-VLM `mode='text'`), BERT-initialised."""

    def __init__(self, cfg: TextConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embeddings = TextEmbeddings(cfg)
        self.layers = nn.ModuleList(TextLayer(cfg, i) for i in range(cfg.text_layers))
        self.apply(init_bert)

    def forward(self, input_ids: torch.Tensor, token_mask: torch.Tensor) -> torch.Tensor:
        """Text states (B, T, H) of ids (B, T) with 0/1 padding `token_mask` (B, T); token type 0 throughout,
        as X-VLM never passes token types. Bidirectional self-attention (captioning is `cross_modal.py`'s
        causal mode; X-VLM's captioner runs its text layers under the causal mask too: `forward_causal`)."""
        return self._run(input_ids, padding_mask(token_mask))

    def forward_causal(self, input_ids: torch.Tensor, token_mask: torch.Tensor) -> torch.Tensor:
        """As `forward`, under the causal mask of `causal_padding_mask` (caption decoding)."""
        return self._run(input_ids, causal_padding_mask(token_mask))

    def _run(self, input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self.embeddings(input_ids, torch.zeros_like(input_ids))
        for layer in self.layers:
            x = layer(x, mask)
        return x


__all__ = ["Attention", "FeedForward", "OutputBias", "TextEmbeddings", "TextEncoder", "TextLayer", "causal_padding_mask",
           "padding_mask"]
