"""Upstream checkpoint layouts, one `KeyMap` table each (`key_maps.py`), and `load_minilm`.

- `HF_BERT_TO_FUSION`: HF `BertModel` (transformers `models/bert/modeling_bert.py`), with or without a
  `bert.` prefix. A BERT checkpoint has no region embedding and no heads: those stay at init (listed).
  The pooler is optional (sentence-transformers exports may drop it): present -> loaded, absent -> init and
  reported.
- `OSCAR_TO_FUSION`: microsoft/Oscar checkpoints (`BertImgModel` under `bert.`, `cls.predictions.*` with the
  decoder tied to the word embeddings, `cls.seq_relationship.*` -> match head, `classifier.{0,2}.*` (the
  "mlp" classifier) -> VQA head). A task checkpoint carries only its own head; the others stay at init.
- `minivlm_detector_key_map`: the original MiniVLM detector layout (the authors' qd code) -> our TEE.
"""

from __future__ import annotations

import json
from pathlib import Path

from .config import FusionConfig, TEEConfig
from .errors import WeightsError
from .fusion import Fusion
from .key_maps import KeyMap, KeyRule, load_with_key_map, weight_bias_rules
from .weights import read_safetensors


_BERT_BODY = [
    ("embeddings.LayerNorm", "encoder.embeddings.layer_norm"),
    ("encoder.layer.{}.attention.self.query", "encoder.layers.{}.attn.query"),
    ("encoder.layer.{}.attention.self.key", "encoder.layers.{}.attn.key"),
    ("encoder.layer.{}.attention.self.value", "encoder.layers.{}.attn.value"),
    ("encoder.layer.{}.attention.output.dense", "encoder.layers.{}.attn.out"),
    ("encoder.layer.{}.attention.output.LayerNorm", "encoder.layers.{}.attn_norm"),
    ("encoder.layer.{}.intermediate.dense", "encoder.layers.{}.ffn_in"),
    ("encoder.layer.{}.output.dense", "encoder.layers.{}.ffn_out"),
    ("encoder.layer.{}.output.LayerNorm", "encoder.layers.{}.ffn_norm"),
    ("pooler.dense", "pooler.dense"),
]
_BERT_EMBEDDINGS = [
    KeyRule(f"embeddings.{n}.weight", f"encoder.embeddings.{n}.weight")
    for n in ("word_embeddings", "position_embeddings", "token_type_embeddings")
]
_POSITION_IDS = ("embeddings.position_ids", "a buffer (arange of positions), recomputed in forward")

HF_BERT_TO_FUSION = KeyMap(
    name="HF_BERT_TO_FUSION",
    rules=(*_BERT_EMBEDDINGS, *weight_bias_rules(_BERT_BODY)),
    optional_prefixes=("bert.",),
    ignored=(_POSITION_IDS, ("embeddings.token_type_ids", "a buffer of zeros in newer transformers")),
    allow_missing=(
        ("pooler.", "sentence-transformers exports may drop the pooler; it then stays at init"),
        ("encoder.region_embeddings.", "a text-only BERT has no region embedding"),
        ("mlm_head.", "BertModel has no LM head"),
        ("vqa_head.", "BertModel has no VQA head"),
        ("match_head.", "BertModel has no matching head"),
    ),
)

OSCAR_TO_FUSION = KeyMap(
    name="OSCAR_TO_FUSION",
    rules=(
        *(KeyRule("bert." + r.source, r.target) for r in _BERT_EMBEDDINGS),
        *weight_bias_rules(_BERT_BODY, "bert."),
        *weight_bias_rules(
            [
                ("bert.img_embedding", "encoder.region_embeddings.dense"),
                ("bert.LayerNorm", "encoder.region_embeddings.layer_norm"),
                ("cls.predictions.transform.dense", "mlm_head.transform"),
                ("cls.predictions.transform.LayerNorm", "mlm_head.transform_norm"),
                ("classifier.0", "vqa_head.fc1"),
                ("classifier.2", "vqa_head.fc2"),
                ("cls.seq_relationship", "match_head"),
            ]
        ),
        KeyRule("cls.predictions.bias", "mlm_head.bias"),
    ),
    ignored=(("bert." + _POSITION_IDS[0], _POSITION_IDS[1]),),
    tied=(
        (
            "cls.predictions.decoder.weight",
            "bert.embeddings.word_embeddings.weight",
            "OSCAR ties the decoder to the word embeddings",
        ),
        ("cls.predictions.decoder.bias", "cls.predictions.bias", "newer transformers alias the decoder bias"),
    ),
    allow_missing=(
        ("mlm_head.", "a VQA or retrieval checkpoint has no LM head"),
        ("vqa_head.", "a captioning or pretraining checkpoint has no VQA classifier"),
        ("match_head.", "only pretraining checkpoints carry cls.seq_relationship"),
    ),
)


_BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
# BiFPN nodes in our order (effdet's `bifpn_config`) with the qd/Yet-Another-EfficientDet names of their
# separable conv and fusion weights; then the first cell's channel resamplers: (node, input offset) -> name.
_BIFPN_NODES = (("conv6_up", "p6_w1"), ("conv5_up", "p5_w1"), ("conv4_up", "p4_w1"), ("conv3_up", "p3_w1"),
                ("conv4_down", "p4_w2"), ("conv5_down", "p5_w2"), ("conv6_down", "p6_w2"), ("conv7_down", "p7_w2"))
_BIFPN_RESAMPLE = (((1, 2), "p5_down_channel"), ((2, 1), "p4_down_channel"), ((3, 0), "p3_down_channel"),
                   ((4, 1), "p4_down_channel_2"), ((5, 2), "p5_down_channel_2"))


def _module_rules(source: str, target: str, params: tuple[str, ...]) -> list[KeyRule]:
    return [KeyRule(f"{source}.{p}", f"{target}.{p}") for p in params]


def minivlm_detector_key_map(tee_cfg: TEEConfig) -> KeyMap:
    """The original MiniVLM detector layout (qd / maskrcnn-benchmark module names of the authors' code) -> our TEE.

    The EfficientNet blocks are numbered globally there (`_blocks.N`, EfficientNet-PyTorch names) and per
    stage here, so the table is generated from the stage table; everything else is a fixed rename. No
    MiniVLM checkpoint is public: the names are derived from the authors' code, not checked against a file.
    """
    src = "backbone.backbone_net.model."
    rules = [KeyRule(f"{src}_conv_stem.weight", "backbone.conv_stem.weight"),
             *_module_rules(f"{src}_bn0", "backbone.bn1", _BN)]
    index = 0
    for stage_idx, stage in enumerate(tee_cfg.backbone.stages):
        for block_idx in range(stage.repeats):
            s, t = f"{src}_blocks.{index}", f"backbone.blocks.{stage_idx}.{block_idx}"
            if stage.expand_ratio != 1:
                rules += [KeyRule(f"{s}._expand_conv.weight", f"{t}.conv_pw.weight"), *_module_rules(f"{s}._bn0", f"{t}.bn1", _BN)]
            rules += [KeyRule(f"{s}._depthwise_conv.weight", f"{t}.conv_dw.weight"), *_module_rules(f"{s}._bn1", f"{t}.bn2", _BN),
                      *_module_rules(f"{s}._se_reduce", f"{t}.se.conv_reduce", ("weight", "bias")),
                      *_module_rules(f"{s}._se_expand", f"{t}.se.conv_expand", ("weight", "bias")),
                      KeyRule(f"{s}._project_conv.weight", f"{t}.conv_pwl.weight"), *_module_rules(f"{s}._bn2", f"{t}.bn3", _BN)]
            index += 1
    for node, (conv, weight) in enumerate(_BIFPN_NODES):
        s, t = f"backbone.bifpn.{{}}.{conv}", f"bifpn.cells.{{}}.nodes.{node}"
        rules += [KeyRule(f"backbone.bifpn.{{}}.{weight}", f"{t}.edge_weights"),
                  KeyRule(f"{s}.depthwise_conv.conv.weight", f"{t}.conv.conv_dw.weight"),
                  *_module_rules(f"{s}.pointwise_conv.conv", f"{t}.conv.conv_pw", ("weight", "bias")),
                  *_module_rules(f"{s}.bn", f"{t}.conv.bn", _BN)]
    for (node, offset), name in _BIFPN_RESAMPLE:
        s, t = f"backbone.bifpn.0.{name}", f"bifpn.cells.0.nodes.{node}.resample.{offset}"
        rules += [*_module_rules(f"{s}.0.conv", f"{t}.conv", ("weight", "bias")), *_module_rules(f"{s}.1", f"{t}.bn", _BN)]
    rules += [*_module_rules("backbone.bifpn.0.p5_to_p6.0.conv", "bifpn.extra_resample.conv", ("weight", "bias")),
              *_module_rules("backbone.bifpn.0.p5_to_p6.1", "bifpn.extra_resample.bn", _BN)]
    rules += weight_bias_rules([("rpn.head.cls_logits", "rpn.cls_logits"), ("rpn.head.bbox_pred", "rpn.bbox_pred"),
                                ("roi_heads.box.feature_extractor.fc6", "box_head.fc6"),
                                ("roi_heads.box.feature_extractor.fc7", "box_head.fc7"),
                                ("roi_heads.box.predictor.cls_score", "box_head.cls_score"),
                                ("roi_heads.box.predictor.bbox_pred", "box_head.bbox_pred"),
                                ("roi_heads.attribute.predictor.fc_attr", "box_head.fc_attr"),
                                ("roi_heads.attribute.predictor.attr_score", "box_head.attr_score")])
    rules.append(KeyRule("roi_heads.attribute.predictor.cls_embedding.weight", "box_head.cls_embedding.weight"))
    return KeyMap(
        name="MINIVLM_DETECTOR",
        rules=tuple(rules),
        optional_prefixes=("module.",),
        ignored=(("rpn.anchor_generator.cell_anchors.{}", "anchors are derived from the config, not stored"),),
        allow_missing=(("box_head.cls_embedding", "detector-only checkpoints may lack the attribute branch"),
                       ("box_head.fc_attr", "detector-only checkpoints may lack the attribute branch"),
                       ("box_head.attr_score", "detector-only checkpoints may lack the attribute branch")),
    )


# --------------------------------------------------------------------------------------------------------------
# MiniLM


def _check_bert_config(config_path: Path, cfg: FusionConfig) -> None:
    """Shapes cannot reveal the head count, eps or activation: compare them with config.json when present."""
    try:
        hf = json.loads(config_path.read_text())
    except (OSError, ValueError) as e:
        raise WeightsError(f"{config_path} is not readable JSON: {e}") from None
    ours = {
        "num_hidden_layers": cfg.num_layers,
        "hidden_size": cfg.hidden_size,
        "num_attention_heads": cfg.num_heads,
        "intermediate_size": cfg.intermediate_size,
        "vocab_size": cfg.vocab_size,
        "layer_norm_eps": cfg.layer_norm_eps,
        "hidden_act": "gelu",
        "position_embedding_type": "absolute",
    }
    diff = [f"{k} {hf[k]!r} vs ours {v!r}" for k, v in ours.items() if k in hf and hf[k] != v]
    if diff:
        raise WeightsError(f"{config_path} does not match the fusion config: {'; '.join(diff)}")


def load_minilm(path_or_dir: str | Path, cfg: FusionConfig) -> Fusion:
    """A `Fusion` (eval mode) with a HF BERT/MiniLM checkpoint loaded by `HF_BERT_TO_FUSION`.

    `path_or_dir` is a `.safetensors` file or a folder holding `model.safetensors` (and, if present, a
    `config.json` that must agree with `cfg`). The encoder, embeddings and pooler (when the file has one)
    are loaded; the region embedding and the three heads stay at init (a text model has none of them).
    """
    path = Path(path_or_dir)
    if path.is_dir():
        if (path / "config.json").is_file():
            _check_bert_config(path / "config.json", cfg)
        path = path / "model.safetensors"
    state, _ = read_safetensors(path)
    fusion = Fusion(cfg)
    load_with_key_map(fusion, state, HF_BERT_TO_FUSION)
    return fusion.eval()


__all__ = ["HF_BERT_TO_FUSION", "OSCAR_TO_FUSION", "load_minilm", "minivlm_detector_key_map"]
