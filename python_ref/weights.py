"""Weights: strict safetensors loading for every model, and declarative key maps from upstream checkpoints.
(The SDK writes weights with `minivlm.checkpoints.save_weights`.)

A `KeyMap` is one table per upstream format, checked both ways like nanoGPT's `from_pretrained` and
litert-torch's `TENSOR_NAMES`: every source key must be used (by a rule, or listed as ignored with a
reason, or as a tied copy), every target key filled (or listed in `allow_missing` with a reason, and then
reported in `MappedState.left_at_init`), and every shape equal. Rules use `{}` for an index ("layer.{}."),
as many as a key needs (a detector table can write "backbone.backbone_net.model._blocks.{}.…").

Tables here:
- `HF_BERT_TO_FUSION`: HF `BertModel` (transformers `models/bert/modeling_bert.py`), with or without a
  `bert.` prefix. A BERT checkpoint has no region embedding and no heads: those stay at init (listed).
  The pooler is optional (sentence-transformers exports may drop it): present -> loaded, absent -> init and
  reported.
- `OSCAR_TO_FUSION`: microsoft/Oscar checkpoints (`BertImgModel` under `bert.`, `cls.predictions.*` with the
  decoder tied to the word embeddings, `cls.seq_relationship.*` -> match head, `classifier.{0,2}.*` (the
  "mlp" classifier) -> VQA head). A task checkpoint carries only its own head; the others stay at init.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from torch import nn

from .config import FusionConfig, TEEConfig
from .errors import ConfigError, WeightsError
from .fusion import Fusion

logger = logging.getLogger(__name__)

SHOW_KEYS = 4  # offending keys named in one error line; the count says how many more

# Named tensor transforms a rule may apply (source tensor -> target tensor).
TRANSFORMS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "transpose": lambda t: t.t().contiguous(),  # TF / Conv1D layouts store Linear weights as (in, out)
}


def _listed(keys: list[str] | tuple[str, ...]) -> str:
    shown = ", ".join(keys[:SHOW_KEYS])
    return f"{shown}, … {len(keys) - SHOW_KEYS} more" if len(keys) > SHOW_KEYS else shown


# --------------------------------------------------------------------------------------------------------------
# Our own format


def _header_problem(path: Path) -> str | None:
    """Why `path` cannot be a safetensors file, judged from its first bytes and header alone (cheap), or None.

    A safetensors file is an 8-byte little-endian header length, a JSON header, then the tensor bytes the
    header's `data_offsets` describe; anything else gets a message saying what it is instead."""
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(9)
        if size == 0:
            return "it is empty (0 bytes)"
        if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":
            kind = "a zip archive, as torch.save writes" if head[:1] == b"P" else "a Python pickle"
            return f"it is {kind}; pickled checkpoints are never loaded, since unpickling can run arbitrary code"
        if size < 9 or head[8:9] != b"{":
            return "it does not start with a safetensors header"
        length = int.from_bytes(head[:8], "little")
        if 8 + length > size:
            return f"it is truncated or not safetensors: its header claims {length} bytes, the file has {size}"
        f.seek(8)
        try:
            header = json.loads(f.read(length))
            end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
        except (ValueError, TypeError, KeyError, IndexError, AttributeError):
            return "its header is not a safetensors header"
    if 8 + length + end != size:
        return f"it is truncated or damaged: its header describes {8 + length + end} bytes, the file has {size}"
    return None


def _checked_path(path: Path) -> None:
    if path.is_dir():
        raise WeightsError(f"{path} is a directory, not a weights file (a .safetensors file)")
    if not path.is_file():
        raise WeightsError(f"no weights file at {path}")
    try:
        problem = _header_problem(path)
    except OSError as e:
        raise WeightsError(f"{path} cannot be read: {e.strerror}") from None
    if problem:
        raise WeightsError(f"{path} is not a safetensors file: {problem}")


def _non_finite(tensor: torch.Tensor) -> int:
    """How many NaN/inf values `tensor` holds (0 for integer tensors). NumPy, not torch: on a busy machine
    torch's threaded kernels made this scan 10-100x slower (a few ms for the 22 MB demo weights in NumPy)."""
    if not tensor.is_floating_point():
        return 0
    values = (tensor.float() if tensor.dtype == torch.bfloat16 else tensor).numpy()
    finite = np.isfinite(values)
    return 0 if finite.all() else int(finite.size - np.count_nonzero(finite))


def read_metadata(path: str | Path) -> dict[str, str]:
    """The metadata of a safetensors file, without reading its tensors; WeightsError as `read_safetensors`."""
    path = Path(path)
    _checked_path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except (OSError, SafetensorError) as e:
        raise WeightsError(f"{path} is not a readable safetensors file: {str(e).splitlines()[0]}") from None


def read_safetensors(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, metadata) of a safetensors file; WeightsError if it is missing, not safetensors, truncated,
    or holds a non-finite value (a diverged run's NaNs would otherwise load and silently answer nonsense)."""
    path = Path(path)
    _checked_path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            tensors, metadata = {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})
    except (OSError, SafetensorError) as e:
        raise WeightsError(f"{path} is not a readable safetensors file: {str(e).splitlines()[0]}") from None
    bad = {k: n for k in sorted(tensors) if (n := _non_finite(tensors[k]))}
    if bad:
        first = next(iter(bad))
        more = f"; {len(bad) - 1} more tensors hold {sum(bad.values()) - bad[first]} more" if len(bad) > 1 else ""
        raise WeightsError(f"{path} holds non-finite weights: {first} has {bad[first]} NaN/inf values "
                           f"of {tensors[first].numel()}{more}")
    return tensors, metadata


def load_weights(module: nn.Module, path: str | Path) -> dict[str, str]:
    """Load a file written by `save_weights` into `module`, strictly: same keys, shapes and dtypes.
    Returns the file's metadata. Nothing is loaded if anything differs."""
    state, metadata = read_safetensors(path)
    expected = module.state_dict()
    unused = sorted(set(state) - set(expected))
    missing = sorted(set(expected) - set(state))
    problems = []
    if unused:
        problems.append(f"{len(unused)} unexpected keys ({_listed(unused)})")
    if missing:
        problems.append(f"{len(missing)} missing keys ({_listed(missing)})")
    for k in sorted(set(state) & set(expected)):
        a, b = state[k], expected[k]
        if a.shape != b.shape or a.dtype != b.dtype:
            file_side, model_side = f"{tuple(a.shape)} {a.dtype}", f"{tuple(b.shape)} {b.dtype}"
            problems.append(f"{k} is {file_side} in the file, the model needs {model_side}")
            break
    if problems:
        raise WeightsError(f"{path} does not match {type(module).__name__}: " + "; ".join(problems))
    module.load_state_dict(state, strict=True)
    return metadata


# --------------------------------------------------------------------------------------------------------------
# Key maps


@dataclass(frozen=True)
class KeyRule:
    """`source` -> `target`, `{}` standing for an index (each `{}` in order); optional named transform."""

    source: str
    target: str
    transform: str | None = None


@dataclass(frozen=True)
class KeyMap:
    """One upstream format -> our module.

    rules: the mapping. optional_prefixes: stripped from a source key before matching (e.g. "bert.").
    ignored: (source pattern, reason) keys deliberately dropped when present. tied: (source key, same-as key,
    reason): a copy of another source key that must be equal to it and is otherwise unused.
    allow_missing: (target prefix, reason) targets that may stay at init; the caller gets the list.
    """

    name: str
    rules: tuple[KeyRule, ...]
    optional_prefixes: tuple[str, ...] = ()
    ignored: tuple[tuple[str, str], ...] = ()
    tied: tuple[tuple[str, str, str], ...] = ()
    allow_missing: tuple[tuple[str, str], ...] = ()
    _compiled: tuple = field(default=(), init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        unknown = [r.transform for r in self.rules if r.transform is not None and r.transform not in TRANSFORMS]
        if unknown:
            raise ConfigError(f"key map {self.name} uses unknown transforms {unknown}; known: {sorted(TRANSFORMS)}")
        for r in self.rules:
            if r.source.count("{}") != r.target.count("{}"):
                raise ConfigError(f"key map {self.name}: rule {r.source} -> {r.target} has unequal {{}} counts")
        rules = tuple((_pattern(r.source), r) for r in self.rules)
        object.__setattr__(self, "_compiled", (rules, tuple(_pattern(p) for p, _ in self.ignored)))

    def target_of(self, source_key: str) -> tuple[str, str | None] | None:
        """(target key, transform) of a source key (prefix already stripped), or None if no rule matches."""
        for regex, rule in self._compiled[0]:
            m = regex.fullmatch(source_key)
            if m:
                return rule.target.format(*m.groups()), rule.transform
        return None

    def strip_prefix(self, source_key: str) -> str:
        """`source_key` without the first of `optional_prefixes` it starts with."""
        return next((source_key[len(p) :] for p in self.optional_prefixes if source_key.startswith(p)), source_key)

    def is_ignored(self, source_key: str) -> bool:
        return any(regex.fullmatch(source_key) for regex in self._compiled[1])


def _pattern(template: str) -> re.Pattern[str]:
    return re.compile("(\\d+)".join(re.escape(part) for part in template.split("{}")))


@dataclass(frozen=True)
class MappedState:
    """The result of a key map: a state dict for the target and the target keys left at init (each allowed
    by the map's `allow_missing`), so the caller always knows what was not loaded."""

    state: dict[str, torch.Tensor]
    left_at_init: tuple[str, ...]


def apply_key_map(source_state: Mapping[str, torch.Tensor], key_map: KeyMap, target_module: nn.Module) -> MappedState:
    """Rename (and transform) `source_state` into `target_module`'s keys.

    Raises WeightsError (one line, first keys and counts) if a source key is neither mapped, ignored nor a
    tied copy; if a target key stays unfilled without an `allow_missing` entry; if two source keys fill the
    same target; if a tied copy differs from its original; or on a shape mismatch (both shapes).
    """
    expected = target_module.state_dict()
    state: dict[str, torch.Tensor] = {}
    filled_from: dict[str, str] = {}
    unused, doubled, shapes = [], [], []
    bare_keys = {key: key_map.strip_prefix(key) for key in source_state}
    by_bare = {bare: source_state[key] for key, bare in bare_keys.items()}
    tied = {src: same for src, same, _ in key_map.tied}
    for key, tensor in source_state.items():
        bare = bare_keys[key]
        if key_map.is_ignored(bare):
            continue
        if bare in tied:
            if tied[bare] not in by_bare or not torch.equal(by_bare[tied[bare]], tensor):
                raise WeightsError(
                    f"{key_map.name}: {key} must be a tied copy of {tied[bare]}, but differs or that key is absent"
                )
            continue
        found = key_map.target_of(bare)
        if found is None or found[0] not in expected:
            unused.append(key)
            continue
        target, transform = found
        if target in filled_from:
            doubled.append(f"{filled_from[target]} and {key} -> {target}")
            continue
        value = TRANSFORMS[transform](tensor) if transform else tensor
        if value.shape != expected[target].shape:
            shapes.append(f"{key} {tuple(value.shape)} -> {target} needs {tuple(expected[target].shape)}")
            continue
        filled_from[target] = key
        state[target] = value.to(expected[target].dtype) if value.is_floating_point() else value
    unfilled = sorted(set(expected) - set(state))
    allowed = tuple(k for k in unfilled if any(k.startswith(p) for p, _ in key_map.allow_missing))
    missing = [k for k in unfilled if k not in allowed]
    problems = []
    if unused:
        problems.append(f"{len(unused)} source keys unused ({_listed(sorted(unused))})")
    if missing:
        problems.append(f"{len(missing)} target keys unfilled ({_listed(missing)})")
    if doubled:
        problems.append(f"{len(doubled)} targets filled twice ({_listed(doubled)})")
    if shapes:
        problems.append(f"{len(shapes)} shape mismatches ({_listed(shapes)})")
    if problems:
        raise WeightsError(f"{key_map.name}: " + "; ".join(problems))
    return MappedState(state, allowed)


def load_with_key_map(module: nn.Module, source_state: Mapping[str, torch.Tensor], key_map: KeyMap) -> tuple[str, ...]:
    """`apply_key_map` then load into `module`; returns the target keys left at init (and logs them)."""
    mapped = apply_key_map(source_state, key_map, module)
    result = module.load_state_dict(mapped.state, strict=False)
    assert not result.unexpected_keys and set(result.missing_keys) == set(mapped.left_at_init)
    if mapped.left_at_init:
        left = mapped.left_at_init
        logger.info("%s: %d keys left at init (%s)", key_map.name, len(left), _listed(list(left)))
    return mapped.left_at_init


# --------------------------------------------------------------------------------------------------------------
# Tables


def _rules(pairs: list[tuple[str, str]], source_prefix: str = "") -> tuple[KeyRule, ...]:
    """A rule for `.weight` and `.bias` of each (source module, target module) pair."""
    return tuple(KeyRule(f"{source_prefix}{s}.{p}", f"{t}.{p}") for s, t in pairs for p in ("weight", "bias"))


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
    rules=(*_BERT_EMBEDDINGS, *_rules(_BERT_BODY)),
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
        *_rules(_BERT_BODY, "bert."),
        *_rules(
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
    rules += _rules([("rpn.head.cls_logits", "rpn.cls_logits"), ("rpn.head.bbox_pred", "rpn.bbox_pred"),
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


__all__ = [
    "HF_BERT_TO_FUSION",
    "KeyMap",
    "KeyRule",
    "MappedState",
    "OSCAR_TO_FUSION",
    "TRANSFORMS",
    "apply_key_map",
    "load_minilm",
    "load_weights",
    "load_with_key_map",
    "read_metadata",
    "read_safetensors",
]
