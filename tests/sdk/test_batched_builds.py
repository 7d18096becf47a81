"""A build's batched step graph in use: beam search through `minivlm.load_artifact` steps every beam in one call
of `caption_step_beam`, never one call per beam (the tiny model's ExecuTorch and TFLite builds)."""

import json

import pytest

import minivlm
from minivlm.converters.samples import golden_images

pytestmark = pytest.mark.build  # converts the tiny model


@pytest.fixture(scope="module", params=["tiny_executorch_build", "tiny_tflite_build"])
def build(request):
    return request.getfixturevalue(request.param)


@pytest.fixture(scope="module")
def artifact(build):
    return minivlm.load_artifact(build.path)


def test_beam_search_steps_every_beam_in_one_call_of_the_batched_graph(artifact, build):
    manifest = json.loads((build.path / "manifest.json").read_text())
    assert manifest["batched_graphs"] == {"caption_step_beam": {"graph": "caption_step", "batch": 5}}
    step = artifact.pipeline.graphs.caption.step
    calls = {"single": 0, "batched": 0}
    single, batched = step._run, step.batched._run

    def counted(kind, run):
        def wrapped(tensors):
            calls[kind] += 1
            return run(tensors)
        return wrapped

    step._run, step.batched._run = counted("single", single), counted("batched", batched)
    try:
        artifact.caption(golden_images()[0].image, num_beams=5)
    finally:
        step._run, step.batched._run = single, batched
    assert calls["single"] == 0 and calls["batched"] >= 1
