"""Key maps: declarative tables that rename an upstream checkpoint's state dict into one of our modules.

A `KeyMap` is one table per upstream format, checked both ways like nanoGPT's `from_pretrained` and
litert-torch's `TENSOR_NAMES`: every source key must be used (by a rule, or listed as ignored with a
reason, or as a tied copy), every target key filled (or listed in `allow_missing` with a reason, and then
reported in `MappedState.left_at_init`), and every shape equal. Rules use `{}` for an index ("layer.{}."),
as many as a key needs (a detector table can write "backbone.backbone_net.model._blocks.{}.…").
The tables themselves are in `upstream_weights.py`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

from .errors import ConfigError, WeightsError
from .weights import listed_keys

logger = logging.getLogger(__name__)

# Named tensor transforms a rule may apply (source tensor -> target tensor).
TRANSFORMS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "transpose": lambda t: t.t().contiguous(),  # TF / Conv1D layouts store Linear weights as (in, out)
}


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


def weight_bias_rules(pairs: list[tuple[str, str]], source_prefix: str = "") -> list[KeyRule]:
    """A rule for `.weight` and `.bias` of each (source module, target module) pair — a Linear or LayerNorm
    renamed as a whole — with `source_prefix` before each source name."""
    return [KeyRule(f"{source_prefix}{s}.{p}", f"{t}.{p}") for s, t in pairs for p in ("weight", "bias")]


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
        problems.append(f"{len(unused)} source keys unused ({listed_keys(sorted(unused))})")
    if missing:
        problems.append(f"{len(missing)} target keys unfilled ({listed_keys(missing)})")
    if doubled:
        problems.append(f"{len(doubled)} targets filled twice ({listed_keys(doubled)})")
    if shapes:
        problems.append(f"{len(shapes)} shape mismatches ({listed_keys(shapes)})")
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
        logger.info("%s: %d keys left at init (%s)", key_map.name, len(left), listed_keys(list(left)))
    return mapped.left_at_init


__all__ = ["TRANSFORMS", "KeyMap", "KeyRule", "MappedState", "apply_key_map", "load_with_key_map",
           "weight_bias_rules"]
