"""Key maps (`python_ref/key_maps.py`) of EfficientVLM's text side: BERT and X-VLM checkpoints -> our modules.

- `HF_BERT_TO_TEXT`: HF `BertModel` (transformers `models/bert/modeling_bert.py`), with or without a `bert.`
  prefix, -> `text.TextEncoder`; the checkpoint must have exactly `text_layers` layers. X-VLM's text encoder
  has no pooler (`add_pooling_layer=False`), so a pooler in the file is dropped.
- `xvlm_text_key_map`: the text-side keys of a zengyan-97/X-VLM (or swaggy-TN/EfficientVLM) checkpoint — its
  `BertForMaskedLM` under `text_encoder.` (`models/xbert.py`: layers from `fusion_layer` on carry
  `crossattention.self.{query,key,value}` and `crossattention.output.*`) and `models/xvlm.py`'s heads — -> a
  module holding `text` (`TextEncoder`), `cross` (`CrossModalEncoder`) and `heads` (`heads.Heads`). One BERT
  stack is numbered 0 .. text_layers+cross_layers-1 there and split in two here, so the table is generated
  from the config. The caller passes the text-side keys only (the image encoder's keys, `vision_encoder.*`,
  have their own map).
"""

from __future__ import annotations

from ..key_maps import KeyMap, KeyRule, weight_bias_rules
from .config import TextConfig

_EMBEDDINGS = ("word_embeddings", "position_embeddings", "token_type_embeddings")
_POSITION_IDS = "a buffer (arange of positions), recomputed in forward"


def _embedding_rules(source: str, target: str) -> list[KeyRule]:
    return [*(KeyRule(f"{source}{n}.weight", f"{target}{n}.weight") for n in _EMBEDDINGS),
            *weight_bias_rules([(f"{source}LayerNorm", f"{target}layer_norm")])]


def _self_attention_rules(source: str, target: str) -> list[KeyRule]:
    """BertAttention (self) + BertIntermediate + BertOutput of layer `source` -> our `target` layer."""
    return weight_bias_rules([
        (f"{source}.attention.self.query", f"{target}.attn.query"),
        (f"{source}.attention.self.key", f"{target}.attn.key"),
        (f"{source}.attention.self.value", f"{target}.attn.value"),
        (f"{source}.attention.output.dense", f"{target}.attn.out"),
        (f"{source}.attention.output.LayerNorm", f"{target}.attn_norm"),
        (f"{source}.intermediate.dense", f"{target}.ffn.ffn_in"),
        (f"{source}.output.dense", f"{target}.ffn.ffn_out"),
        (f"{source}.output.LayerNorm", f"{target}.ffn.ffn_norm"),
    ])


def _cross_attention_rules(source: str, target: str) -> list[KeyRule]:
    return weight_bias_rules([
        (f"{source}.crossattention.self.query", f"{target}.cross_attn.query"),
        (f"{source}.crossattention.self.key", f"{target}.cross_attn.key"),
        (f"{source}.crossattention.self.value", f"{target}.cross_attn.value"),
        (f"{source}.crossattention.output.dense", f"{target}.cross_attn.out"),
        (f"{source}.crossattention.output.LayerNorm", f"{target}.cross_norm"),
    ])


HF_BERT_TO_TEXT = KeyMap(
    name="HF_BERT_TO_TEXT",
    rules=(*_embedding_rules("embeddings.", "embeddings."),
           *_self_attention_rules("encoder.layer.{}", "layers.{}")),
    optional_prefixes=("bert.",),
    ignored=(("embeddings.position_ids", _POSITION_IDS),
             ("embeddings.token_type_ids", "a buffer of zeros in newer transformers"),
             ("pooler.dense.weight", "X-VLM's text encoder has no pooler"),
             ("pooler.dense.bias", "X-VLM's text encoder has no pooler")),
)


def xvlm_text_key_map(cfg: TextConfig) -> KeyMap:
    """X-VLM's text encoder, cross-modal layers and heads -> `text.`, `cross.`, `heads.` (see the module doc)."""
    bert = "text_encoder.bert."
    rules = _embedding_rules(f"{bert}embeddings.", "text.embeddings.")
    for i in range(cfg.text_layers):
        rules += _self_attention_rules(f"{bert}encoder.layer.{i}", f"text.layers.{i}")
    for j in range(cfg.cross_layers):
        source, target = f"{bert}encoder.layer.{cfg.text_layers + j}", f"cross.layers.{j}"
        rules += [*_self_attention_rules(source, target), *_cross_attention_rules(source, target)]
    rules += weight_bias_rules([
        ("text_encoder.cls.predictions.transform.dense", "heads.mlm_head.transform"),
        ("text_encoder.cls.predictions.transform.LayerNorm", "heads.mlm_head.transform_norm"),
        ("vision_proj", "heads.itc.vision_proj"),
        ("text_proj", "heads.itc.text_proj"),
        ("itm_head.0", "heads.itm_head.fc1"),
        ("itm_head.1", "heads.itm_head.norm"),
        ("itm_head.3", "heads.itm_head.fc2"),
    ])
    rules += [KeyRule("text_encoder.cls.predictions.bias", "heads.mlm_head.bias"), KeyRule("temp", "heads.itc.temp")]
    return KeyMap(
        name="XVLM_TEXT",
        rules=tuple(rules),
        ignored=((f"{bert}embeddings.position_ids", _POSITION_IDS),),
        tied=(
            ("text_encoder.cls.predictions.decoder.weight", f"{bert}embeddings.word_embeddings.weight",
             "xbert ties the MLM decoder to the word embeddings"),
            ("text_encoder.cls.predictions.decoder.bias", "text_encoder.cls.predictions.bias",
             "xbert aliases the decoder bias"),
        ),
        allow_missing=(
            ("heads.mlm_head.", "a fine-tuned (retrieval, VQA) checkpoint drops the MLM head"),
            ("heads.itc.", "a VQA or captioning checkpoint has no contrastive head"),
            ("heads.itm_head.", "only pre-training and retrieval checkpoints carry itm_head"),
            ("heads.vqa_head.", "X-VLM answers generatively: no checkpoint has our VQA classifier"),
        ),
    )


__all__ = ["HF_BERT_TO_TEXT", "xvlm_text_key_map"]
