"""Build targets and the options that exist for each (no backend or torch import: the CLI builds its
choices and `--help` from this table)."""

from __future__ import annotations

from dataclasses import dataclass

from minivlm.python_ref.errors import ConversionError


@dataclass(frozen=True)
class Target:
    """A build target: its converter module, file suffix and the choices that exist for it (first = default)."""

    name: str
    module: str
    suffix: str
    precisions: tuple[str, ...]
    delegates: tuple[str, ...] = ()
    compute_units: tuple[str, ...] = ()


TARGETS: dict[str, Target] = {
    "executorch": Target("executorch", "minivlm.converters.executorch", ".pte", ("fp32", "int8"),
                         delegates=("xnnpack", "coreml", "portable")),
    "coreml": Target("coreml", "minivlm.converters.coreml", ".mlpackage", ("fp16", "fp32", "int8"),
                     compute_units=("all", "cpu_and_ne", "cpu_and_gpu", "cpu_only")),
    "tflite": Target("tflite", "minivlm.converters.tflite", ".tflite", ("fp32", "fp16", "int8"),
                     delegates=("xnnpack", "gpu", "nnapi")),
    "coreai": Target("coreai", "minivlm.converters.coreai", ".aimodel", ("fp32", "int8"),
                     compute_units=("default", "neural_engine", "gpu", "cpu_only")),
}
# Combinations that exist per target but not together, with the reason given to the user.
INCOMPATIBLE = {
    ("executorch", "int8", "coreml"): "executorch int8 uses the XNNPACK quantizer, so it needs --delegate xnnpack",
    ("executorch", "int8", "portable"): "executorch int8 uses the XNNPACK quantizer, so it needs --delegate xnnpack",
}


@dataclass(frozen=True)
class BuildOptions:
    """A resolved, valid choice of target, precision, delegate (or None) and compute units (Core ML, Core AI; or None)."""

    target: str
    precision: str
    delegate: str | None
    compute_units: str | None

    @property
    def spec(self) -> Target:
        return TARGETS[self.target]


def resolve_options(target: str, precision: str | None = None, delegate: str | None = None,
                    compute_units: str | None = None) -> BuildOptions:
    """Fill in defaults and reject what does not exist, naming what does (ConversionError, one line)."""
    if target not in TARGETS:
        raise ConversionError(f"unknown target {target!r}; targets: {', '.join(TARGETS)}")
    t = TARGETS[target]
    precision = precision or t.precisions[0]
    if precision not in t.precisions:
        raise ConversionError(f"{target} has no precision {precision!r}; it has: {', '.join(t.precisions)}")
    if delegate is not None and not t.delegates:
        raise ConversionError(f"{target} takes no --delegate (it runs one backend); its choice is --compute-units")
    if compute_units is not None and not t.compute_units:
        having = ", ".join(name for name, spec in TARGETS.items() if spec.compute_units)
        raise ConversionError(f"--compute-units applies to {having} only, not {target}")
    if t.delegates:
        delegate = delegate or t.delegates[0]
        if delegate not in t.delegates:
            raise ConversionError(f"{target} has no delegate {delegate!r}; it has: {', '.join(t.delegates)}")
    if t.compute_units:
        compute_units = compute_units or t.compute_units[0]
        if compute_units not in t.compute_units:
            raise ConversionError(f"{target} has no compute units {compute_units!r}; it has: {', '.join(t.compute_units)}")
    reason = INCOMPATIBLE.get((target, precision, delegate))
    if reason:
        raise ConversionError(reason)
    return BuildOptions(target, precision, delegate, compute_units)


__all__ = ["INCOMPATIBLE", "TARGETS", "BuildOptions", "Target", "resolve_options"]
