"""The fusion model's export graphs: tensors in, a tuple of tensors out, static shapes, fixed names.

`ClassifierGraph` (the `vqa` and `match` graphs), `CaptionPrefixGraph` and `CaptionStepGraph` each hold only
the `Fusion` submodules they run (shared, not copied): torch.export lifts every parameter a module owns, used
or not. Every graph names its tensors in `input_names` / `output_names` (as `tee.py`'s stages do); the
layouts are in docs/ARCHITECTURE.md §4.
"""

from __future__ import annotations

import torch
from torch import nn

from .errors import ConfigError
from .fusion import MASK_VALUE, AttentionKind, Fusion, additive_mask, pad_heads, split_heads
from .graph_ops import constant
from .packing import FUSION_INPUT_NAMES


def _float(*shape: int) -> torch.Tensor:
    return torch.zeros(shape, dtype=torch.float32)


def _long(*shape: int) -> torch.Tensor:
    return torch.zeros(shape, dtype=torch.int64)


def _packed_zeros(cfg, batch: int, tokens: int) -> tuple[torch.Tensor, ...]:
    """Zero token ids, token types (int64), token mask (B, tokens), regions (B, R, D) and region mask (B, R)."""
    return (_long(batch, tokens), _long(batch, tokens), _float(batch, tokens),
            _float(batch, cfg.max_regions, cfg.region_dim), _float(batch, cfg.max_regions))


# The classifier graphs: graph name -> (the Fusion's head attribute, the output's name).
CLASSIFIER_HEADS = {"vqa": ("vqa_head", "answer_logits"), "match": ("match_head", "match_logits")}


class ClassifierGraph(nn.Module):
    """Full attention -> pooled [CLS] -> one head: `vqa` outputs `answer_logits` (B, num_answers), `match`
    outputs `match_logits` (B, 2), index 1 = match. Inputs are `FUSION_INPUT_NAMES`, as `pack_inputs` packs them."""

    def __init__(self, fusion: Fusion, head: str) -> None:
        super().__init__()
        if head not in CLASSIFIER_HEADS:
            raise ConfigError(f"classifier head {head!r} is not one of {sorted(CLASSIFIER_HEADS)}")
        attribute, output = CLASSIFIER_HEADS[head]
        self.cfg = fusion.cfg
        self.encoder = fusion.encoder
        self.pooler = fusion.pooler
        # Registered under the Fusion's own name (vqa_head, match_head), so that the graph's parameter and
        # tensor names in a build, its fp16 range table and its reports read as the model's.
        self.add_module(attribute, getattr(fusion, attribute))
        self.head_name = attribute
        self.input_names = FUSION_INPUT_NAMES
        self.output_names = (output,)

    @property
    def head(self) -> nn.Module:
        return getattr(self, self.head_name)

    def forward(
        self,
        input_ids: torch.Tensor,
        token_type_ids: torch.Tensor,
        token_mask: torch.Tensor,
        regions: torch.Tensor,
        region_mask: torch.Tensor,
    ) -> tuple[torch.Tensor]:
        hidden = self.encoder(input_ids, token_type_ids, token_mask, regions, region_mask, AttentionKind.FULL)
        return (self.head(self.pooler(hidden)),)

    def example_inputs(self, batch: int = 1) -> tuple[torch.Tensor, ...]:
        """Zero inputs of the exact static shapes: (B, Tt) int64 ×2, (B, Tt) f32, (B, R, D) f32, (B, R) f32."""
        return _packed_zeros(self.cfg, batch, self.cfg.max_text_tags_len)


class CaptionPrefixGraph(nn.Module):
    """Keys/values of the tags+regions prefix, computed once per image. Under the seq2seq mask the prefix
    never sees the caption, so these are exactly its K/V inside the full sequence.

    Inputs: tag_ids, tag_type_ids (B, max_tags_len) int64; tag_mask (B, max_tags_len) f32 0/1;
    regions (B, max_regions, region_dim) f32; region_mask (B, max_regions) f32 0/1.
    Outputs: prefix_keys, prefix_values (L, B, heads, P, head_dim), P = max_tags_len + max_regions,
    heads = `FusionConfig.cache_heads`: layer i fills its first `layer_heads(i)` heads, zeros after them.
    """

    def __init__(self, fusion: Fusion) -> None:
        super().__init__()
        self.cfg = fusion.cfg
        self.input_names = ("tag_ids", "tag_type_ids", "tag_mask", "regions", "region_mask")
        self.output_names = ("prefix_keys", "prefix_values")
        encoder = fusion.encoder
        self.embeddings, self.region_embeddings = encoder.embeddings, encoder.region_embeddings
        self.layers = encoder.layers[:-1]  # run in full
        # Of the last layer only the K/V projections are read: its queries, output and FFN never are.
        last = encoder.layers[-1].attn
        self.last_heads = last.heads
        self.last_key, self.last_value = (last.key, last.value) if last.heads else (None, None)

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
        mask = additive_mask(valid.view(valid.shape[0], 1, valid.shape[1]))  # (B, 1, P): the same for every query
        keys, values = [], []
        for layer in self.layers:
            k, v = layer.kv(x)  # (B, heads of the layer, P, head_dim)
            keys.append(self._padded(k, x))
            values.append(self._padded(v, x))
            x = layer(x, k, v, mask)
        if self.last_heads:
            keys.append(self._padded(split_heads(self.last_key(x), self.last_heads), x))
            values.append(self._padded(split_heads(self.last_value(x), self.last_heads), x))
        else:
            keys.append(self._padded(None, x))
            values.append(self._padded(None, x))
        return torch.stack(keys), torch.stack(values)

    def _padded(self, kv: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
        """(B, cache_heads, P, head_dim): a layer's keys or values with zero heads after its own (all zero for a
        layer without heads)."""
        if kv is None:
            return x.new_zeros(x.shape[0], self.cfg.cache_heads, x.shape[1], self.cfg.head_dim)
        return pad_heads(kv, self.cfg.cache_heads)

    def example_inputs(self, batch: int = 1) -> tuple[torch.Tensor, ...]:
        """Zero inputs of the exact static shapes (T = max_tags_len)."""
        return _packed_zeros(self.cfg, batch, self.cfg.max_tags_len)


class CaptionStepGraph(nn.Module):
    """One OSCAR decoding step with caches: predicts the [MASK] at position t.

    Inputs (C = max_text_len, P = max_tags_len + max_regions, L layers):
      token_ids (B, 2) int64: [the token chosen at position t-1 ([CLS] when t = 1), [MASK]]
      position_ids (B, 2) int64: [t-1, t]
      prefix_keys, prefix_values (L, B, heads, P, head_dim), prefix_mask (B, P) f32 0/1 (= tag_mask ⊕ region_mask)
      cache_keys, cache_values (L, B, heads, C, head_dim), cache_mask (B, C) f32 0/1 (1 at positions 0..t-2)
      (heads = `FusionConfig.cache_heads`; layer i reads and writes its first `layer_heads(i)` of them)
    Outputs:
      mask_logits (B, V) at the [MASK]; new_keys, new_values (L, B, heads, 1, head_dim): the K/V of the token at
      t-1, which the host writes into cache slot t-1 (and sets cache_mask[:, t-1] = 1) before the next step.
    The token at t-1 is recomputed because at step t-1 it was a [MASK] (OSCAR `prepare_inputs_for_generation`).
    Caption tokens are segment A (token type 0). The [MASK] sees the token at t-1; that token never sees the [MASK].
    """

    def __init__(self, fusion: Fusion) -> None:
        super().__init__()
        self.cfg = fusion.cfg
        self.input_names = ("token_ids", "position_ids", "prefix_keys", "prefix_values", "prefix_mask",
                            "cache_keys", "cache_values", "cache_mask")
        self.output_names = ("mask_logits", "new_keys", "new_values")
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
        # Both queries see the same prefix and cache keys: the (B, 1, P + C) mask is broadcast to them by adding
        # a zero (1, 2, 1) constant, and the two new keys get a constant causal block (static shapes, so built
        # here at trace time): XNNPACK takes neither expand nor tril.
        seen = additive_mask(torch.cat([prefix_mask, cache_mask], dim=1)).view(b, 1, -1) + constant([[0.0], [0.0]], x)
        causal = constant([[[0.0, MASK_VALUE], [0.0, 0.0]]] * b, x)  # query t-1 never sees the [MASK] at t
        mask = torch.cat([seen, causal], dim=2)  # (B, 2, P + C + 2)
        cache_shape = prefix_keys.shape[1:], cache_keys.shape[1:]
        new_keys, new_values = [], []
        for i, layer in enumerate(self.layers):
            k, v = layer.kv(x)  # (B, heads of the layer, 2, head_dim)
            if k is None:  # a layer without heads reads no cache and adds nothing to it
                x = layer(x, None, None, mask)
                new_keys.append(x.new_zeros(b, self.cfg.cache_heads, 1, self.cfg.head_dim))
                new_values.append(x.new_zeros(b, self.cfg.cache_heads, 1, self.cfg.head_dim))
                continue
            # Layer i by slicing [i:i+1] and a view: XNNPACK takes a slice, not the select of `prefix_keys[i]`;
            # a pruned layer reads its first heads of the cache_heads.
            past_k = (self._own(prefix_keys[i:i + 1].view(cache_shape[0]), layer.heads),
                      self._own(cache_keys[i:i + 1].view(cache_shape[1]), layer.heads))
            past_v = (self._own(prefix_values[i:i + 1].view(cache_shape[0]), layer.heads),
                      self._own(cache_values[i:i + 1].view(cache_shape[1]), layer.heads))
            keys = torch.cat([*past_k, k], dim=2)  # (B, heads, P + C + 2, head_dim)
            values = torch.cat([*past_v, v], dim=2)
            x = layer(x, keys, values, mask)
            new_keys.append(pad_heads(k[:, :, :1], self.cfg.cache_heads))
            new_values.append(pad_heads(v[:, :, :1], self.cfg.cache_heads))
        masked = x[:, 1:2].reshape(b, x.shape[2])  # the [MASK]'s hidden state, sliced (not selected)
        logits = self.mlm_head(masked, self.embeddings.word_embeddings.weight)  # (B, V)
        return logits, torch.stack(new_keys), torch.stack(new_values)

    @staticmethod
    def _own(kv: torch.Tensor, heads: int) -> torch.Tensor:
        """The first `heads` heads of (B, cache_heads, T, head_dim): a slice, none when they are all the layer's."""
        return kv if kv.shape[1] == heads else kv[:, :heads]

    def example_inputs(self, batch: int = 1) -> tuple[torch.Tensor, ...]:
        """Inputs of the exact static shapes, as at step t = 1 with empty caches."""
        c = self.cfg
        p = c.max_tags_len + c.max_regions
        kv_prefix = (c.num_layers, batch, c.cache_heads, p, c.head_dim)
        kv_cache = (c.num_layers, batch, c.cache_heads, c.max_text_len, c.head_dim)
        positions = torch.tensor([[0, 1]] * batch, dtype=torch.int64)
        return (
            _long(batch, 2), positions, _float(*kv_prefix), _float(*kv_prefix), _float(batch, p),
            _float(*kv_cache), _float(*kv_cache), _float(batch, c.max_text_len),
        )


__all__ = ["CLASSIFIER_HEADS", "CaptionPrefixGraph", "CaptionStepGraph", "ClassifierGraph"]
