"""Each target converts efficientvlm-tiny into a build whose manifest names its family, graphs and host steps, and
whose goldens the reference reproduces (the EfficientVLM counterpart of test_targets.py and test_goldens.py)."""

import json

import numpy as np
import pytest
import torch

import minivlm
from minivlm.converters.tolerances import tolerances_for
from minivlm.python_ref.efficientvlm.family import HOST_STEPS
from minivlm.python_ref.efficientvlm.graphs import GRAPH_NAMES

pytestmark = pytest.mark.build  # every test here converts the tiny EfficientVLM

# As tests/converters/test_goldens.py: the build traced on one thread, the replay runs on several.
REPLAY_RTOL, REPLAY_ATOL = 1e-5, 1e-5


def _check_manifest(report, pipeline) -> dict:
    m, folder = report.manifest, report.path
    assert (m["family"], m["model"]["preset"], m["graph_order"]) == ("efficientvlm", "efficientvlm-tiny", list(GRAPH_NAMES))
    assert m["tolerances"] == tolerances_for(m["target"], m["precision"])
    assert m["preprocessing"]["size"] == pipeline.cfg.vision.image_size and "bicubic" in m["preprocessing"]["resample"].lower()
    assert m["tokenizer"]["specials"] == {"[PAD]": 0, "[UNK]": 100, "[CLS]": 101, "[SEP]": 102, "[MASK]": 103}
    assert m["postprocessing"]["caption"]["prompt_ids"] == [101, 1037, 3861, 1997]  # [CLS] a picture of
    assert (folder / m["tokenizer"]["vocab_file"]).read_text().split("\n")[:2] == ["[PAD]", "[unused0]"]
    assert json.loads((folder / m["vocabularies_file"]).read_text()) == {"answers": list(pipeline.vocab.answers)}
    for name, module in pipeline.graphs.modules().items():
        graph = m["graphs"][name]
        assert [t["name"] for t in graph["inputs"]] == list(module.input_names)
        assert [t["name"] for t in graph["outputs"]] == list(module.output_names)
        assert [tuple(t["shape"]) for t in graph["inputs"]] == [tuple(x.shape) for x in module.example_inputs(1)]
        assert (folder / graph["file"]).exists() and graph["size_bytes"] > 0
    return m


def test_executorch_build(tiny_efficientvlm_build, tiny_efficientvlm):
    m = _check_manifest(tiny_efficientvlm_build("executorch"), tiny_efficientvlm)
    assert (m["target"], m["delegate"], m["precision"]) == ("executorch", "xnnpack", "fp32")
    for name in GRAPH_NAMES:
        assert m["graphs"][name]["file"] == f"{name}.pte" and m["graphs"][name]["ops"]["delegated"] > 0, name
    assert [t["dtype"] for t in m["graphs"]["caption_step"]["inputs"]] == ["float32", "int64", "float32"]


def test_tflite_build(tiny_efficientvlm_build, tiny_efficientvlm):
    m = _check_manifest(tiny_efficientvlm_build("tflite"), tiny_efficientvlm)
    ids = next(t for t in m["graphs"]["vqa"]["inputs"] if t["name"] == "input_ids")
    assert (ids["dtype"], ids["runtime_dtype"]) == ("int64", "int32")
    assert [t["runtime_name"] for t in m["graphs"]["vision"]["outputs"]] == ["image_tokens", "image_feature"]


def test_coreml_build_converts_and_checks_its_spec(tiny_efficientvlm_build, tiny_efficientvlm):
    m = _check_manifest(tiny_efficientvlm_build("coreml"), tiny_efficientvlm)
    assert (m["precision"], m["compute_precision"]) == ("fp16", "float16")
    assert [t["runtime_name"] for t in m["graphs"]["caption_step"]["outputs"]] == ["token_logits"]
    assert {n: (g["file"], g["function"]) for n, g in m["graphs"].items()} == {n: ("model.mlpackage", n) for n in GRAPH_NAMES}
    # Off macOS it runs in the SDK's ML-program executor, with the model's API.
    artifact = minivlm.load_artifact(tiny_efficientvlm_build("coreml").path)
    assert type(artifact).__name__ == "EfficientVLMArtifact"
    assert [type(g).__name__ for g in artifact.pipeline.graphs.modules().values()] == ["MILExecutorGraph"] * len(GRAPH_NAMES)


def test_executorch_int8_build_quantizes_every_graph(tiny_efficientvlm_build, tiny_efficientvlm):
    m = _check_manifest(tiny_efficientvlm_build("executorch", "int8"), tiny_efficientvlm)
    assert m["quantization"]["activations"] == dict.fromkeys(GRAPH_NAMES, "dynamic")
    assert list(m["quantization"]["fp32"]) == ["transformer graphs"]


def _load(folder, entry):
    data = (folder / entry["file"]).read_bytes()
    return torch.from_numpy(np.frombuffer(data, dtype="<" + np.dtype(entry["dtype"]).str[1:]).reshape(entry["shape"]).copy())


def test_goldens_hold_every_host_step_and_replay_through_python_ref(tiny_efficientvlm_build, tiny_efficientvlm):
    folder = tiny_efficientvlm_build("executorch").path / "golden"
    index = json.loads((folder / "index.json").read_text())
    assert [n.split("_")[0] for n in index["images"]] == ["photo", "photo", "scene", "scene"]
    modules = tiny_efficientvlm.graphs.modules()
    for case in index["cases"].values():
        assert tuple(case["host_steps"]) == HOST_STEPS and "letterbox" not in case
        assert {name: len(calls) for name, calls in case["graphs"].items()} == dict.fromkeys(GRAPH_NAMES, 1)
        for name, (call,) in case["graphs"].items():
            with torch.no_grad():
                outputs = modules[name](*(_load(folder, e) for e in call["inputs"].values()))
            for got, entry in zip(outputs, call["outputs"].values(), strict=True):
                torch.testing.assert_close(got, _load(folder, entry), rtol=REPLAY_RTOL, atol=REPLAY_ATOL)
        pre = case["host_steps"]["preprocess"]
        image = _load(folder, pre["inputs"]["image"]).numpy()
        assert torch.equal(tiny_efficientvlm.preprocess(image), _load(folder, pre["outputs"]["pixels"]))
        tokens = _load(folder, case["host_steps"]["greedy_caption"]["outputs"]["token_ids"]).tolist()
        assert tiny_efficientvlm.caption_tokens(tiny_efficientvlm.encode(image)).token_ids == tuple(tokens)


@pytest.fixture(scope="module")
def reference_run(tiny_efficientvlm):
    from minivlm.efficientvlm_pipeline import EfficientVLMReference
    from minivlm.parity import parity_images, run_reference

    reference = EfficientVLMReference(tiny_efficientvlm, "random init")
    return run_reference(reference, parity_images(scenes=3, photos=("astronaut", "coffee")), fp16_range=True)


@pytest.mark.parametrize("target", ["executorch", "tflite", "coreml"])
def test_every_target_holds_parity(tiny_efficientvlm_build, reference_run, target):
    """Per graph with the fp32 (Core ML: fp16) row of converters/tolerances.py, per task on photos and scenes.
    Core ML runs here in the SDK's ML-program executor, per layer too, besides its spec and the fp16 range."""
    from minivlm.parity import check_parity

    report = check_parity(tiny_efficientvlm_build(target).path, reference_run, platform="linux")
    assert report.passed, report.table()
    graphs = {c.name for c in report.checks if c.kind == "graph"}
    assert graphs == set(GRAPH_NAMES)
    tasks = {(c.name, c.metric) for c in report.checks if c.kind == "task"}
    assert tasks == {("captions", "identical"), ("answers", "identical"), ("match", "same decision"),
                     ("match", "max prob diff"), ("match", "mean prob diff")}
    if target == "coreml":
        assert any("ML-program executor" in n for n in report.not_checked)
        assert {c.name for c in report.checks if c.metric == "fp16 headroom"} == set(GRAPH_NAMES)
        assert {c.name for c in report.checks if c.kind == "layer"} == set(GRAPH_NAMES)
    else:
        assert report.check("graph", "caption_step", "max abs / peak").limit.name == "FP32_MAX_ABS"
    assert len(report.per_image) == 5 and "detections" not in report.per_image[0]
    assert "DETECTION_MATCH_IOU" not in report.table()  # no detector, so no pairing rule in the legend
