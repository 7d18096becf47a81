"""The models whose builds tests/parity holds to their reference, and which builds of each run by default or behind
`-m slow`. Every test parametrised with `build_params()` runs on each of them; add a model here and the suite checks it.

Test modules import this by name (as tests/converters imports build_helpers)."""

from dataclasses import dataclass

import pytest

Build = tuple[str, str, str | None]  # target, precision, delegate (None: the target's default)

DEFAULT: tuple[Build, ...] = (("executorch", "fp32", None), ("tflite", "int8", None), ("coreai", "fp32", None),
                              ("coreml", "fp16", None))
SLOW: tuple[Build, ...] = (("executorch", "int8", None), ("executorch", "fp32", "portable"), ("tflite", "fp32", None),
                           ("tflite", "fp16", None), ("coreai", "int8", None), ("coreml", "fp32", None),
                           ("coreml", "int8", None))


@dataclass(frozen=True)
class ParityModel:
    """A preset; `bundled`: its shipped weights, else untrained (seeded, saved to a weights file as `minivlm train`
    writes one, and loaded back from it, so that a build's recorded source finds the same weights)."""

    name: str
    bundled: bool
    builds: tuple[Build, ...]
    slow_builds: tuple[Build, ...] = ()


PARITY_MODELS = {m.name: m for m in (
    ParityModel("minivlm-demo", True, DEFAULT, SLOW),
    ParityModel("efficientvlm-demo-student", True, DEFAULT, SLOW),
    # Untrained: its near-uniform logits flip under any lossy precision, so only fp32 builds can hold the task bars.
    ParityModel("efficientvlm-tiny", False, (("executorch", "fp32", None), ("coreai", "fp32", None)),
                (("tflite", "fp32", None),)),
)}


def build_params() -> list:
    """pytest params (model, target, precision, delegate) of every model's builds, its slow ones marked `slow`."""
    models = PARITY_MODELS.values()
    name = lambda m, b: "-".join(filter(None, (m.name, *b)))  # noqa: E731
    return [*(pytest.param(m.name, *b, id=name(m, b)) for m in models for b in m.builds),
            *(pytest.param(m.name, *b, id=name(m, b), marks=pytest.mark.slow) for m in models for b in m.slow_builds)]
