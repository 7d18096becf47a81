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
caption is computed once per image (`fusion_graphs.CaptionPrefixGraph`) and reused by every decoding step
(`fusion_graphs.CaptionStepGraph`). Host-side packing of that layout is `packing.py`.

Written for full XNNPACK delegation (docs/ARCHITECTURE.md §3): LayerNorm is mean/rsqrt over the last dim, attention is
3-D `bmm` over (B*heads, T, head_dim), masks are additive floats built from 0/1 masks and broadcast by views
(XNNPACK takes no `expand`, no `select`, and `unsqueeze` on the trailing dim only).
"""

from __future__ import annotations

import enum
import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import FusionConfig
from .errors import InputError

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


def pad_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, h, T, head_dim) -> (B, heads, T, head_dim), zero heads appended (`x` itself when h == heads): the
    caption graphs' K/V tensors have `FusionConfig.cache_heads` heads whatever a pruned layer keeps."""
    return x if x.shape[1] == heads else F.pad(x, (0, 0, 0, 0, 0, heads - x.shape[1]))


class OutputBias(nn.Module):
    """The output bias of a Linear whose every input was pruned away: what a layer with no heads (or no FFN
    neurons) still adds. Its state-dict key is the Linear's own (`out.bias`, `ffn_out.bias`)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(dim))


class SelfAttention(nn.Module):
    """HF `BertSelfAttention` + `BertSelfOutput.dense`, with keys/values projected separately so that a
    caller can attend to cached keys/values (OSCAR `CaptionBertSelfAttention`'s `history_state`).

    A pruned layer has `heads` < num_heads (head_dim unchanged: q/k/v are Linear(H, heads * head_dim)); with
    no heads at all only the output bias is left (`OutputBias`), `kv` gives None and the keys and values
    passed to `forward` are ignored.
    Python-level attributes, None unless set, invisible to export: `head_mask` (heads,) multiplies each head's
    context before `out` (structured pruning's gates, `minivlm.pruning`); `record`, a list each forward appends
    its probabilities (B, heads, T, S) to (distillation)."""

    def __init__(self, cfg: FusionConfig, heads: int | None = None) -> None:
        super().__init__()
        h = cfg.hidden_size
        self.heads, self.head_dim = cfg.num_heads if heads is None else heads, cfg.head_dim
        self.head_mask: torch.Tensor | None = None
        self.record: list[torch.Tensor] | None = None
        width = self.heads * self.head_dim
        if self.heads:
            self.query, self.key, self.value = (nn.Linear(h, width) for _ in range(3))
            self.out = nn.Linear(width, h)
        else:
            self.out = OutputBias(h)
        self.dropout = nn.Dropout(cfg.dropout)

    def kv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | tuple[None, None]:
        """Keys and values of `x` (B, T, H), each (B, heads, T, head_dim); (None, None) with no heads."""
        if not self.heads:
            return None, None
        return split_heads(self.key(x), self.heads), split_heads(self.value(x), self.heads)

    def forward(self, x: torch.Tensor, k: torch.Tensor | None, v: torch.Tensor | None, mask: torch.Tensor) -> torch.Tensor:
        """Queries from `x` (B, T, H) attend to `k`/`v` (B, heads, S, head_dim) under additive `mask` (B, T, S),
        or (B, 1, S) when every query sees the same keys. Returns (B, T, H), or the output bias (H,) alone when
        the layer has no heads (it broadcasts against the residual)."""
        if not self.heads:
            return self.out.bias
        b, t, h = x.shape
        s, heads = k.shape[2], self.heads
        q = split_heads(self.query(x), heads).reshape(b * heads, t, self.head_dim)
        scores = torch.bmm(q, k.reshape(b * heads, s, self.head_dim).transpose(1, 2))  # (B*heads, T, S)
        # A view, not unsqueeze(1): XNNPACK takes unsqueeze on the trailing dim only.
        key_mask = mask.view(mask.shape[0], 1, mask.shape[1], s)
        scores = scores.view(b, heads, t, s) / math.sqrt(self.head_dim) + key_mask
        probs = torch.softmax(scores, dim=-1)
        if self.record is not None:
            self.record.append(probs)
        probs = self.dropout(probs)
        ctx = torch.bmm(probs.view(b * heads, t, s), v.reshape(b * heads, s, self.head_dim))  # (B*heads, T, head_dim)
        ctx = ctx.view(b, heads, t, self.head_dim)
        if self.head_mask is not None:
            ctx = ctx * self.head_mask.view(1, heads, 1, 1)
        return self.out(ctx.transpose(1, 2).reshape(b, t, heads * self.head_dim))


class EncoderLayer(nn.Module):
    """HF `BertLayer` (post-LN): attention -> residual -> LN -> FFN(erf GELU) -> residual -> LN.

    A pruned layer has `cfg.layer_heads(index)` heads and `cfg.layer_ffn(index)` FFN neurons; with none, only
    `ffn_out`'s bias is left. `neuron_mask` (FFN width,), None unless set (Python-level, invisible to export),
    multiplies each neuron's GELU activation before `ffn_out`."""

    def __init__(self, cfg: FusionConfig, index: int = 0) -> None:
        super().__init__()
        self.attn = SelfAttention(cfg, cfg.layer_heads(index))
        self.attn_norm = LayerNorm(cfg.hidden_size, cfg.layer_norm_eps)
        self.neuron_mask: torch.Tensor | None = None
        width = cfg.layer_ffn(index)
        if width:
            self.ffn_in = nn.Linear(cfg.hidden_size, width)
            self.ffn_out = nn.Linear(width, cfg.hidden_size)
        else:
            self.ffn_out = OutputBias(cfg.hidden_size)
        self.ffn_norm = LayerNorm(cfg.hidden_size, cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.dropout)

    @property
    def heads(self) -> int:
        return self.attn.heads

    def kv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | tuple[None, None]:
        """This layer's keys and values of its input `x`, each (B, heads, T, head_dim); (None, None) with no heads."""
        return self.attn.kv(x)

    def forward(self, x: torch.Tensor, k: torch.Tensor | None, v: torch.Tensor | None, mask: torch.Tensor) -> torch.Tensor:
        x = self.attn_norm(x + self.dropout(self.attn(x, k, v, mask)))
        return self.ffn_norm(x + self.dropout(self._ffn(x)))

    def _ffn(self, x: torch.Tensor) -> torch.Tensor:
        if isinstance(self.ffn_out, OutputBias):
            return self.ffn_out.bias
        hidden = F.gelu(self.ffn_in(x))  # exact (erf) GELU, as BERT's "gelu"
        if self.neuron_mask is not None:
            hidden = hidden * self.neuron_mask
        return self.ffn_out(hidden)


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
    """Additive mask over `[text+tags | regions]` from 0/1 validity masks (B, Tt), (B, R): (B, 1, S) for full
    attention (the same for every query: it broadcasts, no (B, S, S) copy), (B, S, S) for seq2seq."""
    valid = torch.cat([token_mask, region_mask], dim=1)  # (B, S)
    b, s = valid.shape
    allowed = valid.view(b, 1, s)  # padded keys hidden from every query
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
        self.layers = nn.ModuleList(EncoderLayer(cfg, i) for i in range(cfg.num_layers))

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
        mask = attention_mask(token_mask, region_mask, kind, self.cfg.max_text_len)  # (B, 1 or S, S)
        for layer in self.layers:
            x = layer(x, *layer.kv(x), mask)
        return x


class Pooler(nn.Module):
    """HF `BertPooler`: dense + tanh on the [CLS] token."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.dense = nn.Linear(hidden, hidden)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        first = hidden[:, :1].reshape(hidden.shape[0], hidden.shape[2])  # a slice: XNNPACK takes no select
        return torch.tanh(self.dense(first))  # (B, H)


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
        self.apply(init_bert)

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


def init_bert(module: nn.Module) -> None:
    """BERT's `_init_weights`: N(0, 0.02) weights, zero biases; LayerNorm starts at identity."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, std=INIT_STD)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)


__all__ = [
    "AttentionKind",
    "Fusion",
    "FusionEncoder",
    "INIT_STD",
    "LayerNorm",
    "MASK_VALUE",
    "OutputBias",
    "additive_mask",
    "attention_mask",
    "init_bert",
    "pad_heads",
    "seq2seq_pattern",
    "split_heads",
]
