"""Typed, frozen configurations of the EfficientVLM family (X-VLM layout) and its named presets.

Numbers follow EfficientVLM (Wang et al., arXiv 2210.07795) and its code (swaggy-TN/EfficientVLM `configs/`:
`config_clipvit_B.json`, `Pretrain_XVLM_small_4m.yaml`): the teacher is X-VLM-clip (CLIP ViT-B/16, 12 vision
layers; BERT-base with 6 text and 6 cross-modal layers), the paper's student keeps 6 / 3 / 3 layers at the
same width. Images are 224² in pre-training (fine-tuning uses 384² or 480²; positions are interpolated then).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

from ..errors import ConfigError

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # CLIP's normalisation, which X-VLM-clip keeps
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def _check_per_layer(field_name: str, value: Any, length: int, full: int) -> None:
    """ConfigError unless `value` is () (every layer full) or a tuple of `length` ints in [0, full]: the heads or
    neurons each layer keeps after structured pruning."""
    if not isinstance(value, tuple):
        raise ConfigError(f"{field_name} is {value!r}; expected a tuple of {length} ints in [0, {full}], or () for "
                          f"{full} in every layer")
    if not value:
        return
    if len(value) != length:
        raise ConfigError(f"{field_name} has {len(value)} entries {list(value)}; expected {length} (one per layer) "
                          f"or none")
    for i, n in enumerate(value):
        if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= full:
            raise ConfigError(f"{field_name}[{i}] is {n!r}; expected an int in [0, {full}]")


@dataclass(frozen=True)
class ViTConfig:
    """CLIP ViT: patch conv (no bias), class token, learned positions, pre-LN blocks with quick_gelu."""

    image_size: int = 224
    patch_size: int = 16
    width: int = 768
    layers: int = 12
    heads: int = 12
    mlp_ratio: int = 4
    layer_norm_eps: float = 1e-5
    pixel_mean: tuple[float, float, float] = CLIP_MEAN
    pixel_std: tuple[float, float, float] = CLIP_STD
    # Structured pruning: the heads / MLP neurons each block keeps (heads of `head_dim` each); () = all of them.
    heads_per_layer: tuple[int, ...] = ()
    mlp_per_layer: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.image_size % self.patch_size:
            raise ConfigError(f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")
        if self.width % self.heads:
            raise ConfigError(f"vision width {self.width} is not divisible by {self.heads} heads")
        _check_per_layer("vision.heads_per_layer", self.heads_per_layer, self.layers, self.heads)
        _check_per_layer("vision.mlp_per_layer", self.mlp_per_layer, self.layers, self.width * self.mlp_ratio)

    @property
    def head_dim(self) -> int:
        """Every head's width, pruned or not."""
        return self.width // self.heads

    def layer_heads(self, i: int) -> int:
        """Attention heads of block i."""
        return self.heads_per_layer[i] if self.heads_per_layer else self.heads

    def layer_mlp(self, i: int) -> int:
        """MLP neurons of block i."""
        return self.mlp_per_layer[i] if self.mlp_per_layer else self.width * self.mlp_ratio

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @property
    def num_tokens(self) -> int:
        """Image tokens the text attends to: the class token and every patch."""
        return self.num_patches + 1


@dataclass(frozen=True)
class TextConfig:
    """BERT: `text_layers` text-only layers, then `cross_layers` layers with cross-attention to the image
    (X-VLM's `fusion_layer` split of one BERT stack). Post-LN, GELU, as HF `BertModel`."""

    vocab_size: int = 30522
    hidden_size: int = 768
    text_layers: int = 6
    cross_layers: int = 6
    heads: int = 12
    intermediate_size: int = 3072
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    max_text_len: int = 40  # tokens a question or caption is padded to, [CLS] and [SEP] included
    # Structured pruning (heads of `head_dim` each; () = all of them). Layers are numbered globally: the
    # `text_layers` text layers, then the `cross_layers` cross-modal layers (their self-attention and FFN);
    # `cross_heads_per_layer` is the cross-attention of each cross-modal layer.
    self_heads_per_layer: tuple[int, ...] = ()
    cross_heads_per_layer: tuple[int, ...] = ()
    ffn_per_layer: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.hidden_size % self.heads:
            raise ConfigError(f"text hidden_size {self.hidden_size} is not divisible by {self.heads} heads")
        if self.max_text_len > self.max_position_embeddings:
            raise ConfigError(f"max_text_len {self.max_text_len} exceeds max_position_embeddings "
                              f"{self.max_position_embeddings}")
        layers = self.text_layers + self.cross_layers
        _check_per_layer("text.self_heads_per_layer", self.self_heads_per_layer, layers, self.heads)
        _check_per_layer("text.cross_heads_per_layer", self.cross_heads_per_layer, self.cross_layers, self.heads)
        _check_per_layer("text.ffn_per_layer", self.ffn_per_layer, layers, self.intermediate_size)

    @property
    def head_dim(self) -> int:
        """Every head's width, pruned or not."""
        return self.hidden_size // self.heads

    def layer_self_heads(self, i: int) -> int:
        """Self-attention heads of layer i (text layers first, then cross-modal layers)."""
        return self.self_heads_per_layer[i] if self.self_heads_per_layer else self.heads

    def layer_cross_heads(self, j: int) -> int:
        """Cross-attention heads of cross-modal layer j."""
        return self.cross_heads_per_layer[j] if self.cross_heads_per_layer else self.heads

    def layer_ffn(self, i: int) -> int:
        """FFN neurons of layer i (numbered as `layer_self_heads`)."""
        return self.ffn_per_layer[i] if self.ffn_per_layer else self.intermediate_size


@dataclass(frozen=True)
class EfficientVLMConfig:
    """The whole model: vision, text/cross-modal stack, and the heads (ITC projection, ITM, MLM, VQA)."""

    name: str = "efficientvlm-teacher"
    vision: ViTConfig = field(default_factory=ViTConfig)
    text: TextConfig = field(default_factory=TextConfig)
    embed_dim: int = 256  # ITC projection (X-VLM `embed_dim`)
    temperature: float = 0.07  # ITC's initial temperature (learned, clamped to [0.001, 0.5] as X-VLM)
    num_answers: int = 3129  # VQA v2's answer list
    vocab: str = "vocab.txt"  # the tokenizer's vocabulary, a file of python_ref/ (BERT uncased; demo models: their own)


def efficientvlm_teacher() -> EfficientVLMConfig:
    """X-VLM-clip, the teacher: 12 vision / 6 text / 6 cross-modal layers at width 768."""
    return EfficientVLMConfig()


def efficientvlm_paper() -> EfficientVLMConfig:
    """The paper's student before pruning: 6 vision / 3 text / 3 cross-modal layers at width 768."""
    cfg = EfficientVLMConfig(name="efficientvlm-paper")
    return replace(cfg, vision=replace(cfg.vision, layers=6), text=replace(cfg.text, text_layers=3, cross_layers=3))


def efficientvlm_tiny() -> EfficientVLMConfig:
    """Random-init model of the same shape for fast tests (seconds on a CPU)."""
    return EfficientVLMConfig(
        name="efficientvlm-tiny",
        vision=ViTConfig(image_size=32, patch_size=8, width=32, layers=2, heads=4),
        text=TextConfig(vocab_size=30522, hidden_size=32, text_layers=1, cross_layers=2, heads=4,
                        intermediate_size=64, max_position_embeddings=64, max_text_len=16),
        embed_dim=16, num_answers=7)


DEMO_VOCAB = "efficientvlm/demo_vocab.txt"  # the 5 specials and the 36 word pieces of the demo scenes' grammar
DEMO_IMAGE_SIZE = 128  # demo scenes are 256²; half of it keeps shapes of 28–90 px at 14–45 px
DEMO_PATCH = 16  # 8 x 8 patches + the class token: 65 image tokens, so that every step can afford 32 scenes


def efficientvlm_demo_teacher() -> EfficientVLMConfig:
    """The demo teacher: the X-VLM layout scaled to the demo scenes, 8 vision / 4 text / 4 cross-modal layers
    at width 160 (5 heads of 32; 5.6 M parameters, a 22 MB weights file), on 128² images with 16-px patches
    (65 image tokens), and a 41-token vocabulary (`DEMO_VOCAB`), so that the vocabulary-sized tables stay small."""
    width = 160
    return EfficientVLMConfig(
        name="efficientvlm-demo-teacher",
        vision=ViTConfig(image_size=DEMO_IMAGE_SIZE, patch_size=DEMO_PATCH, width=width, layers=8, heads=5),
        text=TextConfig(vocab_size=41, hidden_size=width, text_layers=4, cross_layers=4, heads=5,
                        intermediate_size=4 * width, max_position_embeddings=24, max_text_len=24),
        embed_dim=128, num_answers=15, vocab=DEMO_VOCAB)


def efficientvlm_demo_student() -> EfficientVLMConfig:
    """The demo student: half the teacher's layers (4 / 2 / 2, student layer i <-> teacher layer 2i) at the
    same width, so hidden states and attention maps compare one to one; feed-forward layers 3x wide instead
    of 4x keep its parameters outside the vocabulary-sized tables at most half the teacher's (the paper's
    6 / 3 / 3 student is 0.53x before pruning)."""
    teacher = efficientvlm_demo_teacher()
    return replace(
        teacher, name="efficientvlm-demo-student",
        vision=replace(teacher.vision, layers=4, mlp_ratio=3),
        text=replace(teacher.text, text_layers=2, cross_layers=2, intermediate_size=3 * teacher.text.hidden_size))


def efficientvlm_demo() -> EfficientVLMConfig:
    """The default EfficientVLM demo model: the demo student after modal-adaptive pruning for captioning
    (`minivlm prune`, docs/PRUNING.md). This is its architecture before pruning; the heads and feed-forward
    widths each layer kept are the bundled weights' `structure` (`minivlm.load` applies them)."""
    return replace(efficientvlm_demo_student(), name="efficientvlm-demo")


def efficientvlm_demo_tiny() -> EfficientVLMConfig:
    """The demo teacher's task (vocabulary, answers, text length) on a model small enough for tests to train
    and distil in seconds: 32² images with 8-px patches, 2 / 2 / 2 layers at width 32."""
    teacher = efficientvlm_demo_teacher()
    return replace(
        teacher, name="efficientvlm-demo-tiny", embed_dim=16,
        vision=ViTConfig(image_size=32, patch_size=8, width=32, layers=2, heads=2),
        text=replace(teacher.text, hidden_size=32, text_layers=2, cross_layers=2, heads=2, intermediate_size=64))


# The structure of a model (`structure`): stack -> entry -> the config field holding it per layer.
STRUCTURE_FIELDS: dict[str, dict[str, str]] = {
    "vision": {"heads": "heads_per_layer", "mlp": "mlp_per_layer"},
    "text": {"self_heads": "self_heads_per_layer", "cross_heads": "cross_heads_per_layer", "ffn": "ffn_per_layer"},
}


def _resolved(cfg: EfficientVLMConfig) -> dict[str, dict[str, list[int]]]:
    v, t = cfg.vision, cfg.text
    layers = t.text_layers + t.cross_layers
    return {
        "vision": {"heads": [v.layer_heads(i) for i in range(v.layers)],
                   "mlp": [v.layer_mlp(i) for i in range(v.layers)]},
        "text": {"self_heads": [t.layer_self_heads(i) for i in range(layers)],
                 "cross_heads": [t.layer_cross_heads(j) for j in range(t.cross_layers)],
                 "ffn": [t.layer_ffn(i) for i in range(layers)]},
    }


def structure(cfg: EfficientVLMConfig) -> dict[str, dict[str, list[int]]]:
    """The heads and neurons every layer keeps, as JSON: {"vision": {"heads", "mlp"}, "text": {"self_heads",
    "cross_heads", "ffn"}}, each a list with one int per layer (text layers then cross-modal layers for "self_heads"
    and "ffn", cross-modal layers for "cross_heads"), whether or not the config is pruned."""
    return _resolved(cfg)


def is_pruned(cfg: EfficientVLMConfig) -> bool:
    """Whether any layer keeps fewer heads or neurons than its preset's uniform layers."""
    return structure(cfg) != _resolved(replace(cfg, vision=_full(cfg.vision), text=_full(cfg.text)))


def _full(part: ViTConfig | TextConfig) -> ViTConfig | TextConfig:
    stack = "vision" if isinstance(part, ViTConfig) else "text"
    return replace(part, **{name: () for name in STRUCTURE_FIELDS[stack].values()})


def with_structure(cfg: EfficientVLMConfig, described: Any) -> EfficientVLMConfig:
    """`cfg` with the per-layer heads and neurons of `described` (the JSON of `structure`). Strict: ConfigError
    (one line) unless it has exactly the keys `structure` writes, each a list of one int in [0, full] per layer.
    A list of full layers is stored as () (so an unpruned structure gives back a preset's config, equal to it)."""
    if not isinstance(described, dict) or set(described) != set(STRUCTURE_FIELDS):
        shown = sorted(described) if isinstance(described, dict) else described
        raise ConfigError(f"structure is {shown!r}; expected an object with exactly the keys {sorted(STRUCTURE_FIELDS)}")
    full = _resolved(replace(cfg, vision=_full(cfg.vision), text=_full(cfg.text)))
    parts = {}
    for stack, fields in STRUCTURE_FIELDS.items():
        entries = described[stack]
        if not isinstance(entries, dict) or set(entries) != set(fields):
            shown = sorted(entries) if isinstance(entries, dict) else entries
            raise ConfigError(f"structure.{stack} is {shown!r}; expected an object with exactly the keys {sorted(fields)}")
        values = {}
        for key, name in fields.items():
            counts = entries[key]
            if not isinstance(counts, list):
                raise ConfigError(f"structure.{stack}.{key} is {counts!r}; expected a list of {len(full[stack][key])} ints")
            values[name] = tuple(counts)
        parts[stack] = values
    try:  # validated as given, then full lists stored as ()
        replace(cfg, vision=replace(_full(cfg.vision), **parts["vision"]), text=replace(_full(cfg.text), **parts["text"]))
    except ConfigError as err:
        raise ConfigError(f"structure: {err}") from None
    for stack, fields in STRUCTURE_FIELDS.items():
        for key, name in fields.items():
            if list(parts[stack][name]) == full[stack][key]:
                parts[stack][name] = ()
    return replace(cfg, vision=replace(_full(cfg.vision), **parts["vision"]), text=replace(_full(cfg.text), **parts["text"]))


def vocab_path(cfg: EfficientVLMConfig) -> Path:
    """The vocabulary file of `cfg` (`cfg.vocab`, relative to python_ref/)."""
    return Path(__file__).resolve().parent.parent / cfg.vocab


PRESETS: dict[str, Callable[[], EfficientVLMConfig]] = {
    "efficientvlm-teacher": efficientvlm_teacher,
    "efficientvlm-paper": efficientvlm_paper,
    "efficientvlm-tiny": efficientvlm_tiny,
    "efficientvlm-demo-teacher": efficientvlm_demo_teacher,
    "efficientvlm-demo-student": efficientvlm_demo_student,
    "efficientvlm-demo": efficientvlm_demo,
    "efficientvlm-demo-tiny": efficientvlm_demo_tiny,
}

# The teacher each student preset is distilled from, at the same width and patch size (`minivlm info` prints
# the student's ratios to it).
TEACHERS: dict[str, str] = {
    "efficientvlm-paper": "efficientvlm-teacher",
    "efficientvlm-demo-student": "efficientvlm-demo-teacher",
    "efficientvlm-demo": "efficientvlm-demo-teacher",
}


__all__ = ["CLIP_MEAN", "CLIP_STD", "DEMO_VOCAB", "EfficientVLMConfig", "PRESETS", "STRUCTURE_FIELDS", "TEACHERS",
           "TextConfig", "ViTConfig", "efficientvlm_demo", "efficientvlm_demo_student", "efficientvlm_demo_teacher", "efficientvlm_demo_tiny",
           "efficientvlm_paper", "efficientvlm_teacher", "efficientvlm_tiny", "is_pruned", "structure", "vocab_path",
           "with_structure"]
