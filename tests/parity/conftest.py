"""Session fixtures for tests/parity: each model of parity_models.PARITY_MODELS (the bundled demo models of both
families, an untrained EfficientVLM saved to a weights file), its reference run on the parity images (computed once, compared with every
build), and its builds, each converted once per session on first use. `demo`, `reference_run` and `demo_build`
are the demo model's, for the tests that break one of its builds on purpose."""

import pytest
import torch
from parity_models import PARITY_MODELS

import minivlm
from minivlm.parity import parity_images, run_reference


@pytest.fixture(scope="session")
def parity_model(tmp_path_factory):
    """`parity_model(name)`: the reference of one of PARITY_MODELS, loaded once per session."""
    from minivlm.checkpoints import save_weights
    from minivlm.training import model_metadata

    loaded = {}

    def get(name: str):
        if name not in loaded:
            if PARITY_MODELS[name].bundled:
                loaded[name] = minivlm.load(name)
            else:
                torch.manual_seed(0)
                model = minivlm.load(name, random_init=True)
                path = tmp_path_factory.mktemp("weights") / f"{name}.safetensors"
                save_weights(model.pipeline.model, path, model_metadata(model.config, model.vocab, None))
                loaded[name] = minivlm.load(path)
        return loaded[name]

    return get


@pytest.fixture(scope="session")
def model_reference_run(parity_model):
    """`model_reference_run(name)`: that model's reference run on the parity images, once per session."""
    runs = {}

    def get(name: str):
        if name not in runs:
            runs[name] = run_reference(parity_model(name), parity_images(), fp16_range=True)  # for the Core ML builds
        return runs[name]

    return get


@pytest.fixture(scope="session")
def model_build(tmp_path_factory, parity_model):
    """`model_build(name, target, precision, delegate=None)`: that model built for that target, once per session."""
    from minivlm.converters.build import build
    from minivlm.converters.targets import resolve_options

    made = {}

    def get(name: str, target: str, precision: str, delegate: str | None = None):
        key = (name, target, precision, delegate)
        if key not in made:
            reference = parity_model(name)
            out = tmp_path_factory.mktemp("parity") / "-".join(filter(None, key))
            # Two worker processes: graph conversion is single-threaded Python, so this nearly halves a build here.
            made[key] = build(reference.pipeline, model_name=name, source=reference.source,
                              options=resolve_options(target, precision, delegate), out=out, jobs=2)
        return made[key]

    return get


@pytest.fixture(scope="session")
def demo(parity_model):
    return parity_model("minivlm-demo")


@pytest.fixture(scope="session")
def reference_run(model_reference_run):
    return model_reference_run("minivlm-demo")


@pytest.fixture(scope="session")
def demo_build(model_build):
    """`demo_build(target, precision, delegate=None)`: the demo model built for that target, once per session."""
    return lambda target, precision, delegate=None: model_build("minivlm-demo", target, precision, delegate)
