"""Session fixtures for tests/parity: the bundled demo model, its reference run on the parity images (computed
once, compared with every build), and its builds, each converted once per session on first use."""

import pytest

import minivlm
from minivlm.parity import parity_images, run_reference


@pytest.fixture(scope="session")
def demo():
    return minivlm.load("minivlm-demo")


@pytest.fixture(scope="session")
def reference_run(demo):
    return run_reference(demo, parity_images(), fp16_range=True)  # for the Core ML builds


@pytest.fixture(scope="session")
def demo_build(tmp_path_factory, demo):
    """`demo_build(target, precision, delegate=None)`: the demo model built for that target, once per session."""
    from minivlm.converters.build import build
    from minivlm.converters.targets import resolve_options

    made = {}

    def get(target: str, precision: str, delegate: str | None = None):
        key = (target, precision, delegate)
        if key not in made:
            options = resolve_options(target, precision, delegate)
            out = tmp_path_factory.mktemp("parity") / "-".join(["minivlm-demo", *filter(None, key)])
            # Two worker processes: graph conversion is single-threaded Python, so this nearly halves a build here.
            made[key] = build(demo.pipeline, model_name="minivlm-demo", source=demo.source, options=options, out=out, jobs=2)
        return made[key]

    return get
