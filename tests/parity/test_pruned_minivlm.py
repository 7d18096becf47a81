"""A structurally pruned MiniVLM (tests/conftest.py `tiny_pruned_file`: uneven heads, a layer with no heads, a layer
with no FFN neurons) converts like any model: its manifest records the structure and caption caches of the most
heads a layer keeps, `minivlm parity` re-creates its reference from the manifest and the weights file, and the
ExecuTorch and TFLite fp32 builds hold every fp32 bar (graphs, host steps, tasks)."""

import pytest

import minivlm
from minivlm.converters.build import build
from minivlm.converters.targets import resolve_options
from minivlm.parity import check_parity, parity_images, run_reference

pytestmark = pytest.mark.build  # converts the pruned tiny model, one build at a time


@pytest.fixture(scope="module")
def reference_run(tiny_pruned_file):
    return run_reference(minivlm.load(tiny_pruned_file), parity_images(scenes=4, photos=("astronaut", "coffee")))


def test_executorch_build_of_a_pruned_model_holds_parity(tiny_pruned_executorch_build, reference_run):
    m = tiny_pruned_executorch_build.manifest
    assert m["model"]["structure"] == {"fusion": {"heads": [3, 0], "ffn": [0, 40]}}
    keys = next(t for t in m["graphs"]["caption_prefix"]["outputs"] if t["name"] == "prefix_keys")
    assert keys["shape"][2] == 3  # (L, B, heads, P, head_dim): the most heads a layer keeps
    report = check_parity(tiny_pruned_executorch_build.path, reference_run)
    assert report.passed, report.table()


def test_tflite_build_of_a_pruned_model_holds_parity(tmp_path_factory, tiny_pruned_file, reference_run):
    out = tmp_path_factory.mktemp("builds") / "minivlm-tiny-pruned-tflite"
    made = build(minivlm.load(tiny_pruned_file).pipeline, model_name="minivlm-tiny-pruned", source=str(tiny_pruned_file),
                 options=resolve_options("tflite"), out=out, jobs=1)
    report = check_parity(made.path, reference_run)
    assert report.passed, report.table()
