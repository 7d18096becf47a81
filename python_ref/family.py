"""A model family, declared once: `Family` holds everything the SDK's layers need to know about a model family, and
they dispatch through it (docs/ARCHITECTURE.md §3): presets, export graphs, how a pipeline is assembled from graph
callables, tokenizer and vocabularies, and the host steps a build records and describes.

Every graph module a family makes names its tensors (`input_names`, `output_names`, instance attributes) and
gives zero inputs of its exact static shapes and dtypes (`example_inputs(batch)`); every pipeline has `cfg`,
`tokenizer`, `vocab`, `graphs` (`modules()`: name -> callable in `graph_names` order; `map(wrap)`) and `model`
(the eager model, or None when its graphs are a build's runtime). The families themselves are in
`families.py`; this module imports none of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Mapping

import numpy as np
import torch
from torch import nn

from .errors import ConfigError, ConversionError
from .tokenizer import Tokenizer

# (pipeline with recording graphs, the calls they recorded by graph name, image, question, text) -> host step
# -> {"inputs": {name: tensor or JSON value}, "outputs": {...}}, in pipeline order.
RecordHostSteps = Callable[[Any, dict, np.ndarray, str, str], dict]


@dataclass(frozen=True)
class Family:
    """One model family.

    name             recorded in every manifest ("family") and report
    config_type      the config class of every preset (a frozen dataclass with a `name`)
    presets          preset name -> config factory
    graph_names      the export graphs, in manifest order
    model            config -> an untrained model
    graphs           model -> its export graph modules by name (`graph_names` order), sharing its weights
    assemble         (config, tokenizer, vocabularies, graph name -> callable) -> a pipeline running those graphs
    vocab_file       config -> the tokenizer's vocabulary file (BERT uncased WordPiece, one token per line)
    vocabularies     the names of the model's outputs: a frozen dataclass of str tuples with `check(cfg)` and
                     `placeholder(cfg)`, stored in weights metadata and builds as JSON
    host_steps       the host steps a build's goldens record, in pipeline order
    record           runs the tasks on one image through a pipeline whose graphs record their calls, and returns
                     each host step's inputs and outputs (`RecordHostSteps`), checked against those calls
    describe         (pipeline, vocab file name, vocabularies file name) -> the manifest's description of the host
                     steps: preprocessing, tokenizer, layouts, postprocessing
    export_call      graph -> which of its traced calls a build exports it with (default: the first)
    golden_calls     graph -> how many of its calls per image the goldens store (default: one)
    slowest          graphs whose conversion takes longest, started first when graphs convert in parallel
    batched          extra graphs a build adds: name -> (the graph it runs, its batch); the same module and weights
                     exported at a batch of B, which a build runs instead of B single-example calls (MiniVLM's
                     `caption_step_beam`: one call per beam-search step)
    structure        config -> the JSON of its per-layer widths (heads and neurons each layer keeps after
                     structured pruning), or None for a family whose layers are always uniform
    with_structure   (config, that JSON) -> the config with those widths; ConfigError (one line) if it is not one
    """

    name: str
    config_type: type
    presets: Mapping[str, Callable[[], Any]]
    graph_names: tuple[str, ...]
    model: Callable[[Any], nn.Module]
    graphs: Callable[[nn.Module], dict[str, nn.Module]]
    assemble: Callable[[Any, Tokenizer, Any, Mapping[str, Callable]], Any]
    vocab_file: Callable[[Any], Path]
    vocabularies: type
    host_steps: tuple[str, ...]
    record: RecordHostSteps
    describe: Callable[[Any, str, str], dict]
    export_call: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    golden_calls: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    slowest: tuple[str, ...] = ()
    batched: Mapping[str, tuple[str, int]] = field(default_factory=lambda: MappingProxyType({}))
    structure: Callable[[Any], dict] | None = None
    with_structure: Callable[[Any, Any], Any] | None = None

    @property
    def build_graphs(self) -> tuple[str, ...]:
        """Every graph a build holds: `graph_names`, then the `batched` ones."""
        return (*self.graph_names, *self.batched)

    def config(self, preset: str) -> Any:
        """The config of one of this family's presets; ConfigError naming them otherwise."""
        if preset not in self.presets:
            raise ConfigError(f"unknown {self.name} preset {preset!r}; its presets: {', '.join(sorted(self.presets))}")
        return self.presets[preset]()

    def pruned(self, cfg: Any) -> bool:
        """Whether `cfg`'s per-layer widths differ from those of its preset (`cfg.name`)."""
        return self.structure is not None and self.structure(cfg) != self.structure(self.config(cfg.name))

    def restructured(self, cfg: Any, described: Any) -> Any:
        """`cfg` with the per-layer widths `described` (the JSON of `structure`); ConfigError (one line) if this
        family has no such thing or `described` is not one of `cfg`'s."""
        if self.with_structure is None:
            raise ConfigError(f"{self.name} models have uniform layers; a per-layer structure does not apply to them")
        return self.with_structure(cfg, described)

    def tokenizer(self, cfg: Any) -> Tokenizer:
        """The tokenizer over the config's vocabulary file."""
        return Tokenizer.from_vocab(self.vocab_file(cfg))

    def pipeline(self, model: nn.Module, tokenizer: Tokenizer, vocab: Any) -> Any:
        """The pipeline running `model`'s eager graph modules (inference mode), with `model` kept as its `model`."""
        pipe = self.assemble(model.cfg, tokenizer, vocab, self.graphs(model.eval()))
        pipe.model = model
        return pipe

    def vocabularies_from_json(self, raw: Any) -> Any:
        """Vocabularies from their JSON object (name -> list of str); TypeError/ValueError/AttributeError if it
        is not one (callers turn that into their own one-line error)."""
        return self.vocabularies(**{k: tuple(v) for k, v in raw.items()})


def same_as_traced(what: str, mine: torch.Tensor, traced: torch.Tensor) -> None:
    """ConversionError unless a host step recomputed by a `record` function equals what the pipeline fed its graphs."""
    if mine.shape != traced.shape or not torch.equal(mine, traced):
        raise ConversionError(f"golden recomputation of {what} differs from the pipeline's; python_ref changed under the converter")


__all__ = ["Family", "RecordHostSteps", "same_as_traced"]
