"""Session fixtures shared by tests/converters and tests/sdk: the tiny model and its ExecuTorch / TFLite
fp32 builds, converted once per session (the slowest thing the default test run does)."""

import os

import pytest
import torch

import minivlm

try:  # property-based tests (tests/properties, tests/native): a few examples by default, more in CI's native tier
    from hypothesis import settings as _hypothesis_settings
except ImportError:
    pass
else:
    _hypothesis_settings.register_profile("dev", max_examples=50, deadline=None)
    _hypothesis_settings.register_profile("ci", max_examples=400, deadline=None, print_blob=True)
    _hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))


@pytest.fixture(scope="session")
def tiny_reference():
    """The untrained tiny preset, seeded so that every session builds and compares the same weights."""
    torch.manual_seed(0)
    return minivlm.load("minivlm-tiny", random_init=True)


def _build(tmp_path_factory, reference, target: str, **options):
    from minivlm.converters.common import build
    from minivlm.converters.targets import resolve_options

    out = tmp_path_factory.mktemp("builds") / f"minivlm-tiny-{target}"
    return build(reference.pipeline, model_name="minivlm-tiny", source=reference.source,
                 options=resolve_options(target, **options), out=out, jobs=2)  # also exercises the worker processes


@pytest.fixture(scope="session")
def tiny_executorch_build(tmp_path_factory, tiny_reference):
    return _build(tmp_path_factory, tiny_reference, "executorch")


@pytest.fixture(scope="session")
def tiny_tflite_build(tmp_path_factory, tiny_reference):
    return _build(tmp_path_factory, tiny_reference, "tflite")
