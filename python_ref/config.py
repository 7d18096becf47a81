"""Typed, frozen configurations for every part of MiniVLM, and the named presets.

Numbers follow MiniVLM (Wang et al., arXiv 2012.06946; docs/ARCHITECTURE.md §11): the TEE settings
come from the first author's `qd` configs (`frcnn_eff_attr_8.yaml`), the fusion model is MiniLM-L12-H384
in the OSCAR layout. Each part owns its config; `MiniVLMConfig` composes them and checks the contracts
between parts (region feature width, sequence lengths). Presets are functions; `get_config(name)` looks
one up by its public name (`families.get_config` looks up a preset of any family).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable

from .errors import ConfigError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
REGION_ORDERS = ("score", "left_to_right")


@dataclass(frozen=True)
class MBConvStage:
    """One row of EfficientNet's stage table (Tan & Le 2019, Table 1)."""

    expand_ratio: int
    kernel: int
    stride: int
    out_channels: int
    repeats: int
    se_ratio: float = 0.25


# EfficientNet-B0: (expand, kernel, stride, channels, repeats).
B0_STAGES = (
    MBConvStage(1, 3, 1, 16, 1),
    MBConvStage(6, 3, 2, 24, 2),
    MBConvStage(6, 5, 2, 40, 2),  # stride 8  -> C3
    MBConvStage(6, 3, 2, 80, 3),
    MBConvStage(6, 5, 1, 112, 3),  # stride 16 -> C4
    MBConvStage(6, 5, 2, 192, 4),
    MBConvStage(6, 3, 1, 320, 1),  # stride 32 -> C5
)


@dataclass(frozen=True)
class EfficientNetConfig:
    """EfficientNet trunk (no classification head). Outputs the last block of each stride in `out_strides`."""

    stages: tuple[MBConvStage, ...] = B0_STAGES
    stem_channels: int = 32
    in_channels: int = 3
    bn_eps: float = 1e-3
    out_strides: tuple[int, ...] = (8, 16, 32)


@dataclass(frozen=True)
class BiFPNConfig:
    """BiFPN neck (EfficientDet, Tan et al. 2020): levels P{min_level}..P{max_level}, fast-normalised fusion."""

    channels: int = 64
    num_cells: int = 3
    min_level: int = 3
    max_level: int = 7
    fusion_eps: float = 1e-4
    bn_eps: float = 1e-3


@dataclass(frozen=True)
class RPNConfig:
    """RPN head (`SimpleRPNHead`: one 1x1 conv each for objectness and deltas) and its proposal step."""

    anchor_sizes: tuple[float, ...] = (32.0, 64.0, 128.0, 256.0, 512.0)  # one per level, P3..P7
    aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
    box_coder_weights: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)
    pre_nms_top_n: int = 1000  # per level, at test time
    nms_threshold: float = 0.7
    post_nms_top_n: int = 300  # proposals kept over all levels: stage 2 always sees this many boxes
    min_box_size: float = 0.0

    @property
    def anchors_per_location(self) -> int:
        return len(self.aspect_ratios)


@dataclass(frozen=True)
class RoIHeadConfig:
    """Box head (`FPN2MLPFeatureExtractor` + predictors) and region selection."""

    pooler_resolution: int = 4
    sampling_ratio: int = 2
    pooler_levels: tuple[int, ...] = (3, 4, 5, 6)
    canonical_scale: float = 224.0  # FPN level assignment (Lin et al. 2017, eq. 1)
    canonical_level: int = 4
    representation_size: int = 1024  # fc6, fc7 width = region feature width
    num_classes: int = 1592  # including background (index 0)
    num_attributes: int = 524
    box_coder_weights: tuple[float, float, float, float] = (10.0, 10.0, 5.0, 5.0)
    score_threshold: float = 0.05
    nms_threshold: float = 0.5
    max_regions: int = 50  # kept by descending score
    region_order: str = "score"  # order handed to the fusion model: "score" (paper) or "left_to_right"

    def __post_init__(self) -> None:
        if self.region_order not in REGION_ORDERS:
            raise ConfigError(f"region_order is {self.region_order!r}, expected one of {', '.join(REGION_ORDERS)}")


@dataclass(frozen=True)
class TEEConfig:
    """Two-stage Efficient feature Extractor: backbone -> BiFPN -> RPN -> RoI head, on a fixed square input."""

    backbone: EfficientNetConfig = field(default_factory=EfficientNetConfig)
    bifpn: BiFPNConfig = field(default_factory=BiFPNConfig)
    rpn: RPNConfig = field(default_factory=RPNConfig)
    roi_head: RoIHeadConfig = field(default_factory=RoIHeadConfig)
    image_size: int = 512  # square, letterboxed: every graph has static shapes
    pixel_mean: tuple[float, float, float] = IMAGENET_MEAN
    pixel_std: tuple[float, float, float] = IMAGENET_STD

    @property
    def region_dim(self) -> int:
        """Region token width: fc7 feature ⊕ 6-d geometry."""
        return self.roi_head.representation_size + 6

    def __post_init__(self) -> None:
        levels = range(self.bifpn.min_level, self.bifpn.max_level + 1)
        if len(self.rpn.anchor_sizes) != len(levels):
            raise ConfigError(
                f"rpn.anchor_sizes has {len(self.rpn.anchor_sizes)} entries, BiFPN has {len(levels)} levels"
            )
        if not set(self.roi_head.pooler_levels) <= set(levels):
            raise ConfigError(f"roi_head.pooler_levels {self.roi_head.pooler_levels} not within P{levels[0]}..P{levels[-1]}")
        stride = 2 ** self.bifpn.max_level
        if self.image_size <= 0 or self.image_size % stride:
            raise ConfigError(f"image_size {self.image_size} is not a positive multiple of the coarsest stride {stride}")


@dataclass(frozen=True)
class FusionConfig:
    """OSCAR-style BERT/MiniLM encoder over `[CLS] text [SEP] tags [SEP] regions`, with its heads."""

    vocab_size: int = 30522
    hidden_size: int = 384
    num_layers: int = 12
    num_heads: int = 12
    intermediate_size: int = 1536
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    region_dim: int = 1030  # fc7 (1024) ⊕ geometry (6)
    region_layer_norm_eps: float = 1e-5
    max_text_len: int = 40  # [CLS] text [SEP]
    max_text_tags_len: int = 70  # ... plus tags [SEP]
    max_regions: int = 50
    num_answers: int = 3129  # VQA v2 answer vocabulary
    max_caption_tokens: int = 20  # generated tokens, not counting [CLS]/[SEP]
    dropout: float = 0.1  # BERT hidden/attention dropout (training only; identity in eval and in every graph)
    # A pruned encoder (`minivlm prune`): the heads each layer keeps and each layer's FFN width; empty = num_heads
    # and intermediate_size in every layer. head_dim stays hidden_size / num_heads; 0 leaves a layer's attention
    # or FFN with its output bias only.
    heads_per_layer: tuple[int, ...] = ()
    ffn_per_layer: tuple[int, ...] = ()

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    def layer_heads(self, i: int) -> int:
        """Attention heads of layer `i`."""
        return self.heads_per_layer[i] if self.heads_per_layer else self.num_heads

    def layer_ffn(self, i: int) -> int:
        """FFN width (neurons) of layer `i`."""
        return self.ffn_per_layer[i] if self.ffn_per_layer else self.intermediate_size

    @property
    def cache_heads(self) -> int:
        """Heads of the caption graphs' K/V tensors: the most any layer has (num_heads unless pruned), at least
        1 so that no tensor is empty. Layer i fills its first `layer_heads(i)`; the others stay zero."""
        return max(1, *(self.layer_heads(i) for i in range(self.num_layers)))

    @property
    def max_tags_len(self) -> int:
        return self.max_text_tags_len - self.max_text_len

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_heads:
            raise ConfigError(f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
        if self.max_text_tags_len > self.max_position_embeddings:
            raise ConfigError(
                f"max_text_tags_len {self.max_text_tags_len} exceeds max_position_embeddings {self.max_position_embeddings}"
            )
        if self.max_caption_tokens + 2 > self.max_text_len:
            raise ConfigError(f"max_caption_tokens {self.max_caption_tokens} + 2 specials exceed max_text_len {self.max_text_len}")
        for name, most in (("heads_per_layer", self.num_heads), ("ffn_per_layer", self.intermediate_size)):
            counts = getattr(self, name)
            if not isinstance(counts, tuple) or (counts and len(counts) != self.num_layers) or not all(
                    isinstance(n, int) and not isinstance(n, bool) and 0 <= n <= most for n in counts):
                raise ConfigError(f"{name} is {counts!r}, expected () or a tuple of {self.num_layers} integers "
                                  f"in 0..{most}, one per layer")


@dataclass(frozen=True)
class MiniVLMConfig:
    """The whole model: TEE detector + fusion transformer. Checks that the two agree on region tokens."""

    name: str
    tee: TEEConfig = field(default_factory=TEEConfig)
    fusion: FusionConfig = field(default_factory=FusionConfig)

    def __post_init__(self) -> None:
        if self.tee.region_dim != self.fusion.region_dim:
            raise ConfigError(
                f"TEE emits {self.tee.region_dim}-d regions, fusion.region_dim is {self.fusion.region_dim}"
            )
        if self.tee.roi_head.max_regions != self.fusion.max_regions:
            raise ConfigError(
                f"TEE keeps {self.tee.roi_head.max_regions} regions, fusion.max_regions is {self.fusion.max_regions}"
            )


def minivlm_paper() -> MiniVLMConfig:
    """MiniVLM as in the paper: EfficientNet-B0 TEE at 512x512, MiniLM-L12-H384 fusion (arXiv 2012.06946)."""
    return MiniVLMConfig(name="minivlm-paper")


def minilm_l6() -> MiniVLMConfig:
    """Paper TEE with a 6-layer fusion encoder: the shape of the real `all-MiniLM-L6-v2` weights we can load."""
    return MiniVLMConfig(name="minivlm-minilm-l6", fusion=FusionConfig(num_layers=6))


def tiny() -> MiniVLMConfig:
    """A few-thousand-parameter model of the same architecture, for fast tests (random init)."""
    backbone = EfficientNetConfig(
        stages=(
            MBConvStage(1, 3, 1, 8, 1),
            MBConvStage(2, 3, 2, 8, 1),
            MBConvStage(2, 5, 2, 16, 1),  # stride 8
            MBConvStage(2, 3, 2, 16, 1),  # stride 16
            MBConvStage(2, 5, 2, 24, 1),  # stride 32
        ),
        stem_channels=8,
    )
    tee = TEEConfig(
        backbone=backbone,
        bifpn=BiFPNConfig(channels=16, num_cells=1),
        rpn=RPNConfig(pre_nms_top_n=100, post_nms_top_n=32),
        roi_head=RoIHeadConfig(representation_size=32, num_classes=7, num_attributes=5, max_regions=10),
        image_size=128,
    )
    fusion = FusionConfig(
        vocab_size=30522,
        hidden_size=32,
        num_layers=2,
        num_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
        region_dim=32 + 6,
        max_text_len=16,
        max_text_tags_len=24,
        max_regions=10,
        num_answers=11,
        max_caption_tokens=8,
    )
    return MiniVLMConfig(name="minivlm-tiny", tee=tee, fusion=fusion)


def minivlm_demo() -> MiniVLMConfig:
    """The bundled demo model: the MiniVLM architecture scaled to retrain on 2 CPU cores in under 30 minutes.

    Scenes are 256x256 with 1–4 objects of 28–90 px (scenes.py), so the input stays 256 (no resampling), the
    trunk is a narrow EfficientNet, and a few dozen proposals and 10 regions cover every object. Classes are
    the 18 "<colour> <shape>" labels plus background; the 6 attributes are the colours. Regions need a score
    of 0.5 (one proposal then yields at most one class) and reach the fusion model left to right.
    """
    backbone = EfficientNetConfig(
        stages=(
            MBConvStage(1, 3, 1, 16, 1),
            MBConvStage(3, 3, 2, 24, 1),
            MBConvStage(3, 5, 2, 32, 2),  # stride 8
            MBConvStage(3, 3, 2, 48, 1),
            MBConvStage(3, 5, 1, 64, 1),  # stride 16
            MBConvStage(3, 5, 2, 96, 1),
            MBConvStage(3, 3, 1, 128, 1),  # stride 32
        ),
        stem_channels=16,
    )
    tee = TEEConfig(
        backbone=backbone,
        bifpn=BiFPNConfig(channels=32, num_cells=2),
        rpn=RPNConfig(pre_nms_top_n=200, post_nms_top_n=48),
        # Confident regions only, left to right: a caption lists objects by x, and region tokens carry no
        # position of their own, so the tag order is the one positional cue the small fusion model gets.
        roi_head=RoIHeadConfig(representation_size=256, num_classes=19, num_attributes=6, max_regions=10,
                               score_threshold=0.5, region_order="left_to_right"),
        image_size=256,
    )
    fusion = FusionConfig(
        hidden_size=128,
        num_layers=4,
        num_heads=4,
        intermediate_size=512,
        max_position_embeddings=64,
        region_dim=256 + 6,
        max_text_len=24,
        max_text_tags_len=48,
        max_regions=10,
        num_answers=15,
        max_caption_tokens=20,
    )
    return MiniVLMConfig(name="minivlm-demo", tee=tee, fusion=fusion)


# The structure of a model (`structure`): entry -> the FusionConfig field holding it per layer.
STRUCTURE_FIELDS: dict[str, str] = {"heads": "heads_per_layer", "ffn": "ffn_per_layer"}


def _resolved(fusion: FusionConfig) -> dict[str, list[int]]:
    layers = range(fusion.num_layers)
    return {"heads": [fusion.layer_heads(i) for i in layers], "ffn": [fusion.layer_ffn(i) for i in layers]}


def structure(cfg: MiniVLMConfig) -> dict[str, dict[str, list[int]]]:
    """The heads and FFN neurons every fusion layer keeps, as JSON: {"fusion": {"heads", "ffn"}}, each a list with
    one int per layer, whether or not the config is pruned (the detector has nothing to prune)."""
    return {"fusion": _resolved(cfg.fusion)}


def is_pruned(cfg: MiniVLMConfig) -> bool:
    """Whether any fusion layer keeps fewer heads or neurons than its preset's uniform layers."""
    return bool(cfg.fusion.heads_per_layer or cfg.fusion.ffn_per_layer) and structure(cfg) != structure(
        replace(cfg, fusion=replace(cfg.fusion, heads_per_layer=(), ffn_per_layer=())))


def with_structure(cfg: MiniVLMConfig, described: object) -> MiniVLMConfig:
    """`cfg` with the per-layer heads and neurons of `described` (the JSON of `structure`). Strict: ConfigError
    (one line) unless it has exactly the keys `structure` writes, each a list of one int in [0, full] per layer.
    A list of full layers is stored as () (so an unpruned structure gives back the preset's config, equal to it)."""
    if not isinstance(described, dict) or set(described) != {"fusion"}:
        shown = sorted(described) if isinstance(described, dict) else described
        raise ConfigError(f"structure is {shown!r}; expected an object with exactly the key 'fusion'")
    entries = described["fusion"]
    if not isinstance(entries, dict) or set(entries) != set(STRUCTURE_FIELDS):
        shown = sorted(entries) if isinstance(entries, dict) else entries
        raise ConfigError(f"structure.fusion is {shown!r}; expected an object with exactly the keys {sorted(STRUCTURE_FIELDS)}")
    full = _resolved(replace(cfg.fusion, heads_per_layer=(), ffn_per_layer=()))
    values = {}
    for key, name in STRUCTURE_FIELDS.items():
        counts = entries[key]
        if not isinstance(counts, list):
            raise ConfigError(f"structure.fusion.{key} is {counts!r}; expected a list of {cfg.fusion.num_layers} ints")
        values[name] = tuple(counts)
    try:  # validated as given, then full lists stored as ()
        replace(cfg.fusion, **values)
    except ConfigError as err:
        raise ConfigError(f"structure: {err}") from None
    values = {name: () if list(values[name]) == full[key] else values[name] for key, name in STRUCTURE_FIELDS.items()}
    return replace(cfg, fusion=replace(cfg.fusion, **values))


PRESETS: dict[str, Callable[[], MiniVLMConfig]] = {
    "minivlm-demo": minivlm_demo,
    "minivlm-paper": minivlm_paper,
    "minivlm-minilm-l6": minilm_l6,
    "minivlm-tiny": tiny,
}


def get_config(name: str) -> MiniVLMConfig:
    """The preset called `name`; ConfigError naming the known presets otherwise."""
    if name not in PRESETS:
        raise ConfigError(f"unknown model preset {name!r}; known presets: {', '.join(sorted(PRESETS))}")
    return PRESETS[name]()


__all__ = [
    "B0_STAGES",
    "BiFPNConfig",
    "EfficientNetConfig",
    "FusionConfig",
    "MBConvStage",
    "MiniVLMConfig",
    "PRESETS",
    "RPNConfig",
    "STRUCTURE_FIELDS",
    "RoIHeadConfig",
    "TEEConfig",
    "get_config",
    "is_pruned",
    "minilm_l6",
    "minivlm_paper",
    "replace",
    "structure",
    "tiny",
    "with_structure",
]
