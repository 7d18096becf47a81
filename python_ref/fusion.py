"""OSCAR-style fusion transformer (MiniLM/BERT encoder over text, tags and region features) and its heads.

Ported from microsoft/Oscar `oscar/modeling/modeling_bert.py` (`BertImgModel`: region embedding
`img_embedding -> LayerNorm(img_layer_norm_eps)` concatenated after the text embeddings;
`ImageBertForSequenceClassification`'s "mlp" classifier; `BertForImageCaptioning`'s [MASK]-appending
decoding with `encoder_history_states`) and HF transformers `models/bert/modeling_bert.py` (`BertEmbeddings`,
`BertSelfAttention`, `BertLayer`, `BertPooler`, `BertLMPredictionHead`).

Sequence layout (OSCAR's; docs/ARCHITECTURE.md §4), all static:
    positions 0 .. max_text_len-1              `[CLS] text [SEP]` + padding   segment A
    positions max_text_len .. max_text_tags_len-1   `tags [SEP]` + padding    segment B
    then max_regions region tokens (no position or segment embedding)
Text is padded to a fixed length, so tag positions never depend on the text: the tags+regions prefix of a
caption is computed once per image (`CaptionPrefixGraph`) and reused by every decoding step
(`CaptionStepGraph`).

Written for full XNNPACK delegation (docs/ARCHITECTURE.md §3): LayerNorm is mean/rsqrt over the last dim, attention is
3-D `bmm` over (B*heads, T, head_dim), masks are additive floats built from 0/1 masks.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .config import FusionConfig
from .errors import ConfigError, InputError
from .tokenizer import Tokenizer

# Additive mask value of BERT/OSCAR: exp(-1e4) underflows to exactly 0 in fp32, it stays finite in fp16, and a
# fully masked row (padding queries) softmaxes to a uniform row instead of NaN.
MASK_VALUE = -10000.0
INIT_STD = 0.02  # BERT `initializer_range`


class AttentionKind(enum.Enum):
    """Who may attend to whom. Chosen in Python, never by a tensor branch."""

    FULL = "full"  # VQA, matching: every valid token sees every valid token
    SEQ2SEQ = "seq2seq"  # captioning (OSCAR): caption causal, sees tags+regions; tags+regions never see it


class LayerNorm(nn.Module):
    """nn.LayerNorm over the last dim, spelled as mean/rsqrt so that XNNPACK delegates it whole.

    XNNPACK lowers `mean` only over the two inner dims of a 4-d tensor (its global average pooling), so the
    statistics are taken on a (N, 1, 1, H) view: the same contiguous reduction, bit for bit, as `mean(-1)`
    (a test checks), where a 3-d `mean(-1)` would split every graph at each LayerNorm (20 ExecuTorch
    partitions per fusion graph instead of 4, and twice the conversion time).
    """

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, 1, 1, x.shape[-1])  # (N, 1, 1, H)
        centred = rows - rows.mean(dim=(2, 3), keepdim=True)
        var = (centred * centred).mean(dim=(2, 3), keepdim=True)
        return (centred * torch.rsqrt(var + self.eps)).reshape(x.shape) * self.weight + self.bias


class TextEmbeddings(nn.Module):
    """HF `BertEmbeddings`: word + position + token type -> LayerNorm -> dropout."""

    def __init__(self, cfg: FusionConfig) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.position_embeddings = nn.Embedding(cfg.max_position_embeddings, cfg.hidden_size)
        self.token_type_embeddings = nn.Embedding(cfg.type_vocab_size, cfg.hidden_size)
        self.layer_norm = LayerNorm(cfg.hidden_size, cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(
        self, input_ids: torch.Tensor, token_type_ids: torch.Tensor, position_ids: torch.Tensor
    ) -> torch.Tensor:
        # position_ids is (T,) or (B, T); both broadcast against (B, T, H)
        x = self.word_embeddings(input_ids) + self.position_embeddings(position_ids)
        x = x + self.token_type_embeddings(token_type_ids)
        return self.dropout(self.layer_norm(x))  # (B, T, H)


class RegionEmbeddings(nn.Module):
    """OSCAR `img_embedding` + image LayerNorm: Linear(region_dim -> H) -> LayerNorm -> dropout."""

    def __init__(self, cfg: FusionConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(cfg.region_dim, cfg.hidden_size)
        self.layer_norm = LayerNorm(cfg.hidden_size, cfg.region_layer_norm_eps)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, regions: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.layer_norm(self.dense(regions)))  # (B, R, H)


def split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, T, H) -> (B, heads, T, head_dim)."""
    b, t, h = x.shape
    return x.view(b, t, heads, h // heads).transpose(1, 2)


class SelfAttention(nn.Module):
    """HF `BertSelfAttention` + `BertSelfOutput.dense`, with keys/values projected separately so that a
    caller can attend to cached keys/values (OSCAR `CaptionBertSelfAttention`'s `history_state`)."""

    def __init__(self, cfg: FusionConfig) -> None:
        super().__init__()
        h = cfg.hidden_size
        self.heads, self.head_dim = cfg.num_heads, cfg.head_dim
        self.query, self.key, self.value, self.out = (nn.Linear(h, h) for _ in range(4))
        self.dropout = nn.Dropout(cfg.dropout)

    def kv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values of `x` (B, T, H), each (B, heads, T, head_dim)."""
        return split_heads(self.key(x), self.heads), split_heads(self.value(x), self.heads)

    def forward(self, x: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Queries from `x` (B, T, H) attend to `k`/`v` (B, heads, S, head_dim) under additive `mask` (B, T, S)."""
        b, t, h = x.shape
        s = k.shape[2]
        q = split_heads(self.query(x), self.heads).reshape(b * self.heads, t, self.head_dim)
        scores = torch.bmm(q, k.reshape(b * self.heads, s, self.head_dim).transpose(1, 2))  # (B*heads, T, S)
        scores = scores.view(b, self.heads, t, s) / math.sqrt(self.head_dim) + mask.unsqueeze(1)
        probs = self.dropout(torch.softmax(scores, dim=-1)).view(b * self.heads, t, s)
        ctx = torch.bmm(probs, v.reshape(b * self.heads, s, self.head_dim))  # (B*heads, T, head_dim)
        return self.out(ctx.view(b, self.heads, t, self.head_dim).transpose(1, 2).reshape(b, t, h))


class EncoderLayer(nn.Module):
    """HF `BertLayer` (post-LN): attention -> residual -> LN -> FFN(erf GELU) -> residual -> LN."""

    def __init__(self, cfg: FusionConfig) -> None:
        super().__init__()
        self.attn = SelfAttention(cfg)
        self.attn_norm = LayerNorm(cfg.hidden_size, cfg.layer_norm_eps)
        self.ffn_in = nn.Linear(cfg.hidden_size, cfg.intermediate_size)
        self.ffn_out = nn.Linear(cfg.intermediate_size, cfg.hidden_size)
        self.ffn_norm = LayerNorm(cfg.hidden_size, cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.dropout)

    def kv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """This layer's keys and values of its input `x`, each (B, heads, T, head_dim)."""
        return self.attn.kv(x)

    def forward(self, x: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self.attn_norm(x + self.dropout(self.attn(x, k, v, mask)))
        ffn = self.ffn_out(F.gelu(self.ffn_in(x)))  # exact (erf) GELU, as BERT's "gelu"
        return self.ffn_norm(x + self.dropout(ffn))


def additive_mask(allowed: torch.Tensor) -> torch.Tensor:
    """0 where `allowed` is 1, MASK_VALUE where it is 0."""
    return (1.0 - allowed) * MASK_VALUE


def seq2seq_pattern(seq_len: int, text_len: int, device: torch.device | None = None) -> torch.Tensor:
    """(S, S) 0/1: caption keys (positions < text_len) are visible only to caption queries at or after
    them; tag and region keys are visible to every query. Depends on sizes only."""
    q = torch.arange(seq_len, device=device).unsqueeze(1)
    k = torch.arange(seq_len, device=device).unsqueeze(0)
    caption_key, caption_query = k < text_len, q < text_len
    return torch.where(caption_key, caption_query & (k <= q), torch.ones_like(caption_key)).float()


def attention_mask(
    token_mask: torch.Tensor, region_mask: torch.Tensor, kind: AttentionKind, text_len: int
) -> torch.Tensor:
    """Additive (B, S, S) mask over `[text+tags | regions]` from 0/1 validity masks (B, Tt), (B, R)."""
    valid = torch.cat([token_mask, region_mask], dim=1)  # (B, S)
    b, s = valid.shape
    allowed = valid.unsqueeze(1).expand(b, s, s)  # padded keys hidden from every query
    if kind is AttentionKind.SEQ2SEQ:
        allowed = allowed * seq2seq_pattern(s, text_len, valid.device)
    return additive_mask(allowed)


class FusionEncoder(nn.Module):
    """OSCAR `BertImgModel` without its pooler: embeddings, region embedding, encoder layers."""

    def __init__(self, cfg: FusionConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embeddings = TextEmbeddings(cfg)
        self.region_embeddings = RegionEmbeddings(cfg)
        self.layers = nn.ModuleList(EncoderLayer(cfg) for _ in range(cfg.num_layers))

    def _embed(
        self, ids: torch.Tensor, types: torch.Tensor, first_position: int, regions: torch.Tensor
    ) -> torch.Tensor:
        positions = torch.arange(ids.shape[1], device=ids.device) + first_position
        return torch.cat([self.embeddings(ids, types, positions), self.region_embeddings(regions)], dim=1)

    def forward(
        self,
        input_ids: torch.Tensor,
        token_type_ids: torch.Tensor,
        token_mask: torch.Tensor,
        regions: torch.Tensor,
        region_mask: torch.Tensor,
        kind: AttentionKind,
    ) -> torch.Tensor:
        """Hidden states (B, Tt+R, H) of `[text+tags (B, Tt) | regions (B, R, region_dim)]`."""
        if kind is AttentionKind.SEQ2SEQ and input_ids.shape[1] <= self.cfg.max_text_len:
            raise InputError(f"seq2seq needs the full text+tags layout, got {input_ids.shape[1]} tokens")
        x = self._embed(input_ids, token_type_ids, 0, regions)  # (B, S, H)
        mask = attention_mask(token_mask, region_mask, kind, self.cfg.max_text_len)  # (B, S, S)
        for layer in self.layers:
            x = layer(x, *layer.kv(x), mask)
        return x


class Pooler(nn.Module):
    """HF `BertPooler`: dense + tanh on the [CLS] token."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.dense = nn.Linear(hidden, hidden)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.dense(hidden[:, 0]))  # (B, H)


class MLMHead(nn.Module):
    """HF `BertLMPredictionHead`: transform (dense, GELU, LN), then a decoder tied to the word embeddings."""

    def __init__(self, cfg: FusionConfig) -> None:
        super().__init__()
        self.transform = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.transform_norm = LayerNorm(cfg.hidden_size, cfg.layer_norm_eps)
        self.bias = nn.Parameter(torch.zeros(cfg.vocab_size))

    def forward(self, hidden: torch.Tensor, word_embeddings: torch.Tensor) -> torch.Tensor:
        # The decoder weight is passed in, not owned, so the tie survives state_dict/export without a duplicate.
        x = self.transform_norm(F.gelu(self.transform(hidden)))
        return F.linear(x, word_embeddings, self.bias)  # (..., V)


class VQAHead(nn.Module):
    """OSCAR's "mlp" classifier on the pooled output: dropout -> Linear(H, 2H) -> ReLU -> Linear(2H, answers)."""

    def __init__(self, cfg: FusionConfig) -> None:
        super().__init__()
        self.dropout = nn.Dropout(cfg.dropout)
        self.fc1 = nn.Linear(cfg.hidden_size, 2 * cfg.hidden_size)
        self.fc2 = nn.Linear(2 * cfg.hidden_size, cfg.num_answers)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.relu(self.fc1(self.dropout(pooled))))  # (B, num_answers)


class Fusion(nn.Module):
    """The fusion model: encoder, pooler and the three heads (masked LM / captioning, VQA, matching)."""

    def __init__(self, cfg: FusionConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = FusionEncoder(cfg)
        self.pooler = Pooler(cfg.hidden_size)
        self.mlm_head = MLMHead(cfg)
        self.vqa_head = VQAHead(cfg)
        self.match_head = nn.Linear(cfg.hidden_size, 2)  # index 1 = match (OSCAR `seq_relationship`)
        self.apply(_init_bert)

    def encode(
        self,
        input_ids: torch.Tensor,
        token_type_ids: torch.Tensor,
        token_mask: torch.Tensor,
        regions: torch.Tensor,
        region_mask: torch.Tensor,
        kind: AttentionKind,
    ) -> torch.Tensor:
        """Hidden states (B, Tt+R, H); see `FusionEncoder.forward`."""
        return self.encoder(input_ids, token_type_ids, token_mask, regions, region_mask, kind)

    def mlm_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Vocabulary logits (..., V) of hidden states (..., H), through the tied decoder."""
        return self.mlm_head(hidden, self.encoder.embeddings.word_embeddings.weight)

    def vqa_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Answer logits (B, num_answers) from the pooled [CLS] of `hidden` (B, S, H)."""
        return self.vqa_head(self.pooler(hidden))

    def match_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """(B, 2) no-match / match logits from the pooled [CLS]."""
        return self.match_head(self.pooler(hidden))


def _init_bert(module: nn.Module) -> None:
    """BERT's `_init_weights`: N(0, 0.02) weights, zero biases; LayerNorm starts at identity."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, std=INIT_STD)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)


# --------------------------------------------------------------------------------------------------------------
# Export graphs: tensors in, a tuple out, static shapes. Each holds only the submodules it runs (shared with
# the Fusion, not copied): torch.export lifts every parameter a module owns, used or not.


def _float(*shape: int) -> torch.Tensor:
    return torch.zeros(shape, dtype=torch.float32)


def _long(*shape: int) -> torch.Tensor:
    return torch.zeros(shape, dtype=torch.int64)


class _ClassifierGraph(nn.Module):
    INPUT_NAMES = ("input_ids", "token_type_ids", "token_mask", "regions", "region_mask")

    def __init__(self, fusion: Fusion) -> None:
        super().__init__()
        self.cfg = fusion.cfg
        self.encoder = fusion.encoder
        self.pooler = fusion.pooler

    def _pooled(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.pooler(self.encoder(*inputs, AttentionKind.FULL))  # (B, H)

    def example_inputs(self, batch: int = 1) -> tuple[torch.Tensor, ...]:
        """Zero inputs of the exact static shapes: (B, Tt) int64 ×2, (B, Tt) f32, (B, R, D) f32, (B, R) f32."""
        c = self.cfg
        t = c.max_text_tags_len
        regions = _float(batch, c.max_regions, c.region_dim)
        return _long(batch, t), _long(batch, t), _float(batch, t), regions, _float(batch, c.max_regions)


class VQAGraph(_ClassifierGraph):
    """Full attention -> pooled [CLS] -> VQA head. Outputs `answer_logits` (B, num_answers)."""

    OUTPUT_NAMES = ("answer_logits",)

    def __init__(self, fusion: Fusion) -> None:
        super().__init__(fusion)
        self.vqa_head = fusion.vqa_head

    def forward(
        self,
        input_ids: torch.Tensor,
        token_type_ids: torch.Tensor,
        token_mask: torch.Tensor,
        regions: torch.Tensor,
        region_mask: torch.Tensor,
    ) -> tuple[torch.Tensor]:
        return (self.vqa_head(self._pooled(input_ids, token_type_ids, token_mask, regions, region_mask)),)


class MatchGraph(_ClassifierGraph):
    """Full attention -> pooled [CLS] -> match head. Outputs `match_logits` (B, 2), index 1 = match."""

    OUTPUT_NAMES = ("match_logits",)

    def __init__(self, fusion: Fusion) -> None:
        super().__init__(fusion)
        self.match_head = fusion.match_head

    def forward(
        self,
        input_ids: torch.Tensor,
        token_type_ids: torch.Tensor,
        token_mask: torch.Tensor,
        regions: torch.Tensor,
        region_mask: torch.Tensor,
    ) -> tuple[torch.Tensor]:
        return (self.match_head(self._pooled(input_ids, token_type_ids, token_mask, regions, region_mask)),)


class CaptionPrefixGraph(nn.Module):
    """Keys/values of the tags+regions prefix, computed once per image. Under the seq2seq mask the prefix
    never sees the caption, so these are exactly its K/V inside the full sequence.

    Inputs: tag_ids, tag_type_ids (B, max_tags_len) int64; tag_mask (B, max_tags_len) f32 0/1;
    regions (B, max_regions, region_dim) f32; region_mask (B, max_regions) f32 0/1.
    Outputs: prefix_keys, prefix_values (L, B, heads, P, head_dim), P = max_tags_len + max_regions.
    """

    INPUT_NAMES = ("tag_ids", "tag_type_ids", "tag_mask", "regions", "region_mask")
    OUTPUT_NAMES = ("prefix_keys", "prefix_values")

    def __init__(self, fusion: Fusion) -> None:
        super().__init__()
        self.cfg = fusion.cfg
        encoder = fusion.encoder
        self.embeddings, self.region_embeddings = encoder.embeddings, encoder.region_embeddings
        self.layers = encoder.layers[:-1]  # run in full
        # Of the last layer only the K/V projections are read: its queries, output and FFN never are.
        self.last_key, self.last_value = encoder.layers[-1].attn.key, encoder.layers[-1].attn.value

    def forward(
        self,
        tag_ids: torch.Tensor,
        tag_type_ids: torch.Tensor,
        tag_mask: torch.Tensor,
        regions: torch.Tensor,
        region_mask: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        positions = torch.arange(tag_ids.shape[1], device=tag_ids.device) + self.cfg.max_text_len
        x = torch.cat([self.embeddings(tag_ids, tag_type_ids, positions), self.region_embeddings(regions)], dim=1)
        valid = torch.cat([tag_mask, region_mask], dim=1)  # (B, P)
        mask = additive_mask(valid.unsqueeze(1).expand(-1, valid.shape[1], -1))  # (B, P, P)
        keys, values = [], []
        for layer in self.layers:
            k, v = layer.kv(x)  # (B, heads, P, head_dim)
            keys.append(k)
            values.append(v)
            x = layer(x, k, v, mask)
        keys.append(split_heads(self.last_key(x), self.cfg.num_heads))
        values.append(split_heads(self.last_value(x), self.cfg.num_heads))
        return torch.stack(keys), torch.stack(values)

    def example_inputs(self, batch: int = 1) -> tuple[torch.Tensor, ...]:
        """Zero inputs of the exact static shapes (T = max_tags_len)."""
        c = self.cfg
        t = c.max_tags_len
        regions = _float(batch, c.max_regions, c.region_dim)
        return _long(batch, t), _long(batch, t), _float(batch, t), regions, _float(batch, c.max_regions)


class CaptionStepGraph(nn.Module):
    """One OSCAR decoding step with caches: predicts the [MASK] at position t.

    Inputs (C = max_text_len, P = max_tags_len + max_regions, L layers):
      token_ids (B, 2) int64: [the token chosen at position t-1 ([CLS] when t = 1), [MASK]]
      position_ids (B, 2) int64: [t-1, t]
      prefix_keys, prefix_values (L, B, heads, P, head_dim), prefix_mask (B, P) f32 0/1 (= tag_mask ⊕ region_mask)
      cache_keys, cache_values (L, B, heads, C, head_dim), cache_mask (B, C) f32 0/1 (1 at positions 0..t-2)
    Outputs:
      mask_logits (B, V) at the [MASK]; new_keys, new_values (L, B, heads, 1, head_dim): the K/V of the token at
      t-1, which the host writes into cache slot t-1 (and sets cache_mask[:, t-1] = 1) before the next step.
    The token at t-1 is recomputed because at step t-1 it was a [MASK] (OSCAR `prepare_inputs_for_generation`).
    Caption tokens are segment A (token type 0). The [MASK] sees the token at t-1; that token never sees the [MASK].
    """

    INPUT_NAMES = (
        "token_ids", "position_ids",
        "prefix_keys", "prefix_values", "prefix_mask",
        "cache_keys", "cache_values", "cache_mask",
    )
    OUTPUT_NAMES = ("mask_logits", "new_keys", "new_values")

    def __init__(self, fusion: Fusion) -> None:
        super().__init__()
        self.cfg = fusion.cfg
        self.embeddings, self.layers = fusion.encoder.embeddings, fusion.encoder.layers
        self.mlm_head = fusion.mlm_head

    def forward(
        self,
        token_ids: torch.Tensor,
        position_ids: torch.Tensor,
        prefix_keys: torch.Tensor,
        prefix_values: torch.Tensor,
        prefix_mask: torch.Tensor,
        cache_keys: torch.Tensor,
        cache_values: torch.Tensor,
        cache_mask: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.embeddings(token_ids, torch.zeros_like(token_ids), position_ids)  # (B, 2, H)
        b = x.shape[0]
        causal = torch.ones(2, 2, device=x.device).tril().expand(b, 2, 2)
        seen = [prefix_mask.unsqueeze(1).expand(b, 2, -1), cache_mask.unsqueeze(1).expand(b, 2, -1), causal]
        mask = additive_mask(torch.cat(seen, dim=2))  # (B, 2, P + C + 2)
        new_keys, new_values = [], []
        for i, layer in enumerate(self.layers):
            k, v = layer.kv(x)  # (B, heads, 2, head_dim)
            keys = torch.cat([prefix_keys[i], cache_keys[i], k], dim=2)  # (B, heads, P + C + 2, head_dim)
            values = torch.cat([prefix_values[i], cache_values[i], v], dim=2)
            x = layer(x, keys, values, mask)
            new_keys.append(k[:, :, :1])
            new_values.append(v[:, :, :1])
        logits = self.mlm_head(x[:, 1], self.embeddings.word_embeddings.weight)  # (B, V)
        return logits, torch.stack(new_keys), torch.stack(new_values)

    def example_inputs(self, batch: int = 1) -> tuple[torch.Tensor, ...]:
        """Inputs of the exact static shapes, as at step t = 1 with empty caches."""
        c = self.cfg
        p = c.max_tags_len + c.max_regions
        kv_prefix = (c.num_layers, batch, c.num_heads, p, c.head_dim)
        kv_cache = (c.num_layers, batch, c.num_heads, c.max_text_len, c.head_dim)
        positions = torch.tensor([[0, 1]] * batch, dtype=torch.int64)
        return (
            _long(batch, 2), positions, _float(*kv_prefix), _float(*kv_prefix), _float(batch, p),
            _float(*kv_cache), _float(*kv_cache), _float(batch, c.max_text_len),
        )


# --------------------------------------------------------------------------------------------------------------
# Host-side packing (input checks live here, outside every graph).


@dataclass(frozen=True)
class FusionInputs:
    """One packed example, batch 1, fixed sizes: Tt = max_text_tags_len, R = max_regions."""

    input_ids: torch.Tensor  # (1, Tt) int64: [CLS] text [SEP] pad… | tags [SEP] pad…
    token_type_ids: torch.Tensor  # (1, Tt) int64: 0 for segment A and padding, 1 for tags and their [SEP]
    token_mask: torch.Tensor  # (1, Tt) f32 0/1
    regions: torch.Tensor  # (1, R, region_dim) f32, zero rows past the real regions
    region_mask: torch.Tensor  # (1, R) f32 0/1

    def as_tuple(self) -> tuple[torch.Tensor, ...]:
        """The five tensors in the order of `VQAGraph`/`MatchGraph` inputs."""
        return self.input_ids, self.token_type_ids, self.token_mask, self.regions, self.region_mask

    def caption_prefix(self, max_text_len: int) -> tuple[torch.Tensor, ...]:
        """The tags+regions part, in the order of `CaptionPrefixGraph` inputs."""
        tags = slice(max_text_len, None)
        return (
            self.input_ids[:, tags],
            self.token_type_ids[:, tags],
            self.token_mask[:, tags],
            self.regions,
            self.region_mask,
        )


def _text_ids(tokenizer: Tokenizer, text: str | list[int], cfg: FusionConfig) -> list[int]:
    if isinstance(text, str):
        return tokenizer.encode(text)
    if not isinstance(text, (list, tuple)) or not all(isinstance(i, (int, np.integer)) for i in text):
        raise InputError(f"text must be a str or a list of token ids, got {type(text).__name__}")
    bad = [int(i) for i in text if not 0 <= i < cfg.vocab_size]
    if bad:
        raise InputError(f"token id {bad[0]} is outside the vocabulary [0, {cfg.vocab_size})")
    return [int(i) for i in text]


def _tag_ids(tokenizer: Tokenizer, tags: list[str], budget: int) -> list[int]:
    """Whole tags, in the given (confidence) order, while they fit in `budget` tokens: a half tag ("red" of
    "red circle") would state something the detector did not say."""
    if not isinstance(tags, (list, tuple)) or not all(isinstance(t, str) for t in tags):
        raise InputError("tags must be a list of str")
    ids: list[int] = []
    for tag in tags:
        tag_ids = tokenizer.encode(tag)
        if len(ids) + len(tag_ids) > budget:
            break
        ids += tag_ids
    return ids


def _region_tensor(regions: torch.Tensor | np.ndarray, cfg: FusionConfig) -> torch.Tensor:
    if not isinstance(regions, (torch.Tensor, np.ndarray)):
        raise InputError(f"regions must be a tensor or array, got {type(regions).__name__}")
    r = torch.as_tensor(regions)
    if r.dim() != 2 or r.shape[1] != cfg.region_dim:
        raise InputError(f"regions have shape {tuple(r.shape)}, the model needs (K, {cfg.region_dim})")
    if r.shape[0] > cfg.max_regions:
        raise InputError(f"got {r.shape[0]} regions, the model takes at most {cfg.max_regions}")
    if not r.is_floating_point() or not bool(torch.isfinite(r).all()):
        raise InputError(f"regions must be finite floats, got dtype {r.dtype}")
    return r.to(torch.float32)


def pack_inputs(
    tokenizer: Tokenizer,
    text: str | list[int],
    tags: list[str],
    regions: torch.Tensor | np.ndarray,
    cfg: FusionConfig,
    *,
    require_text: bool = True,
) -> FusionInputs:
    """Pack `[CLS] text [SEP] | tags [SEP] | regions` into fixed-size tensors.

    `text` is a string or token ids without specials; `tags` are detector labels in confidence order, kept
    whole while they fit in `max_tags_len - 1` tokens; `regions` is (K, region_dim), K <= max_regions.
    Captioning passes `text=""` with `require_text=False` (the decoder fills the text segment).
    Raises InputError on empty or too long text, ids outside the vocabulary, or wrong regions.
    """
    text_ids = _text_ids(tokenizer, text, cfg)
    if require_text and not text_ids:
        raise InputError(f"text {text!r} has no tokens; a question or caption is required")
    if len(text_ids) > cfg.max_text_len - 2:
        raise InputError(
            f"text is {len(text_ids)} tokens, the model takes at most {cfg.max_text_len - 2} "
            f"(max_text_len {cfg.max_text_len} minus [CLS] and [SEP])"
        )
    seg_a = [tokenizer.cls_id, *text_ids, tokenizer.sep_id]
    seg_b = [*_tag_ids(tokenizer, tags, cfg.max_tags_len - 1), tokenizer.sep_id]
    special_max = max(tokenizer.cls_id, tokenizer.sep_id, tokenizer.pad_id)
    if special_max >= cfg.vocab_size or tokenizer.vocab_size > cfg.vocab_size:
        raise ConfigError(f"tokenizer has {tokenizer.vocab_size} tokens, the model only {cfg.vocab_size}")
    pad_a, pad_b = cfg.max_text_len - len(seg_a), cfg.max_tags_len - len(seg_b)
    ids = seg_a + [tokenizer.pad_id] * pad_a + seg_b + [tokenizer.pad_id] * pad_b
    types = [0] * cfg.max_text_len + [1] * len(seg_b) + [0] * pad_b
    mask = [1.0] * len(seg_a) + [0.0] * pad_a + [1.0] * len(seg_b) + [0.0] * pad_b
    r = _region_tensor(regions, cfg)
    padded = torch.zeros(1, cfg.max_regions, cfg.region_dim)
    padded[0, : r.shape[0]] = r
    region_mask = (torch.arange(cfg.max_regions) < r.shape[0]).float().unsqueeze(0)
    return FusionInputs(
        input_ids=torch.tensor([ids], dtype=torch.int64),
        token_type_ids=torch.tensor([types], dtype=torch.int64),
        token_mask=torch.tensor([mask], dtype=torch.float32),
        regions=padded,
        region_mask=region_mask,
    )


__all__ = [
    "AttentionKind",
    "CaptionPrefixGraph",
    "CaptionStepGraph",
    "Fusion",
    "FusionEncoder",
    "FusionInputs",
    "LayerNorm",
    "MASK_VALUE",
    "MatchGraph",
    "VQAGraph",
    "additive_mask",
    "attention_mask",
    "pack_inputs",
    "seq2seq_pattern",
    "split_heads",
]
