"""Parity of phone builds with python_ref (docs/ARCHITECTURE.md §8): the models of parity_models.PARITY_MODELS (the
bundled MiniVLM demo model, the bundled EfficientVLM demo student, and an untrained EfficientVLM saved to a
weights file), and the MiniVLM demo model's builds broken on purpose.

Every build is compared with one reference run on the parity images (4 scikit-image photos and 24 demo scenes
that no build trained or calibrated on): per graph on the reference's own inputs, per host step, per task.

Which builds run by default. A demo build takes 1-2 minutes on this 2-core machine even with two worker
processes, and the default `pytest tests/parity` must stay well under 10 minutes, builds included. So by
default:
- ExecuTorch XNNPACK fp32: the phones' main CPU path; every fp32 bar (1e-4 of each output's peak, identical
  tasks) and the broken-on-purpose builds (a perturbed weight, swapped outputs) are checked on it;
- TFLite int8 (dynamic range): the cheapest quantized build, so the PSNR and task-agreement bars of a
  quantized precision are exercised too, and its runner maps outputs by name (a swap shows in the numbers);
- Core AI fp32: run on Linux by coreai.runtime and held to the fp32 row, per layer too; broken on purpose in
  test_coreai.py (int8 weights behind `-m slow`);
- Core ML fp16: run off macOS by the SDK's ML-program executor and held to the fp16 row, per layer too, besides
  each graph's function in the `.mlpackage` against the manifest and the fp16 range of every tensor; one copy of
  every weight in test_coreml_package.py; broken on purpose in test_coreml_sabotage.py. Running it in Core ML
  itself is marked `macos`.
Behind `-m slow`: the other builds (ExecuTorch int8 and portable, TFLite fp32 and fp16, Core AI int8, Core ML
fp32 and int8), a sweep over every scikit-image colour photo and 200 scenes, and the paper preset (random init).
Tolerances never depend on the weights: the bundled model may be retrained, and only build-vs-reference
agreement is asserted. Each model of PARITY_MODELS lists its own default and slow builds.
"""

import copy
import json
import re
import shutil

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

import minivlm
from minivlm.cli import app
from minivlm.converters.build import load_target
from minivlm.converters.executorch_weights import graph_data_file, merge, read_data, write_data
from minivlm.converters.manifest import MANIFEST, MANIFEST_DIGEST, file_hashes, manifest_digest
from minivlm.converters.specs import GraphSpec, TensorSpec
from minivlm.converters.fp16_range import RANGE_FILE
from minivlm.converters.targets import resolve_options
from minivlm.converters.tolerances import LIMITS, tolerance
from minivlm.errors import ArtifactError, ParityError
from minivlm.loading import ReferencePipeline
from minivlm.parity import (ALL_PHOTOS, REPORT_FILE, SWEEP_SCENES, check_parity, parity_images, run_reference,
                            write_report)
from minivlm.python_ref.families import preset_family
from minivlm.python_ref.fusion import MASK_VALUE
from minivlm.python_ref.pipeline import GRAPH_NAMES, Pipeline
from parity_models import DEFAULT, SLOW, build_params

# The task rows every build of a family's model must have (more may follow).
TASK_ROWS = {"minivlm": {("detections", "matched"), ("tags", "identical"), ("captions", "identical"), ("answers", "identical")},
             "efficientvlm": {("captions", "identical"), ("answers", "identical"), ("match", "same decision")}}


def _params(default, slow):
    name = lambda b: "-".join(filter(None, b))  # noqa: E731
    return [*(pytest.param(*b, id=name(b)) for b in default),
            *(pytest.param(*b, id=name(b), marks=pytest.mark.slow) for b in slow)]


@pytest.mark.parametrize("model, target, precision, delegate", build_params())
def test_build_holds_parity_on_photos_and_scenes(model_build, model_reference_run, model, target, precision, delegate):
    build = model_build(model, target, precision, delegate)
    reference_run = model_reference_run(model)
    report = check_parity(build.path, reference_run)
    assert report.passed, report.table()
    row = tolerance(target, precision)
    judged = {c.limit.name for c in report.checks if c.limit is not None}
    assert row.captions.name in judged and row.graph_min_cosine.name in judged
    family = preset_family(model)
    assert {c.name for c in report.checks if c.kind == "graph"} == set(family.build_graphs)
    assert {(c.name, c.metric) for c in report.checks if c.kind == "task"} >= TASK_ROWS[family.name]
    if target in ("coreai", "coreml"):  # their runtimes expose every layer: one row per graph, tables in the JSON
        assert {c.name for c in report.checks if c.kind == "layer"} == set(report.manifest["graphs"])
    if target == "coreml":  # off macOS: the executor ran it, the spec was checked, and the report says so
        assert {c.name for c in report.checks if c.metric == "Core ML spec I/O"} == set(family.build_graphs)
        assert any("ML-program executor" in n for n in report.not_checked)
        if precision != "fp32":  # fp16 compute: every graph's largest tensor against the fp16 maximum
            graphs = {g for r in reference_run.runs for g in r.calls}
            headroom = {c.name: c for c in report.checks if c.metric == "fp16 headroom"}
            assert set(headroom) == graphs and all(c.status in ("PASS", "WARN") for c in headroom.values())
            assert report.fp16_range.calls == sum(len(r.calls[g]) for r in reference_run.runs for g in graphs)
    # Every limit judged is printed with its reason.
    table = report.table()
    for name in judged:
        assert f"{name} = " in table and LIMITS[name].reason in table
    # The JSON report in the build.
    saved = json.loads(write_report(report).read_text())
    assert saved["passed"] is True and saved["target"] == target and saved["precision"] == precision
    assert saved["tolerances"]["captions"]["limit"] == row.captions.name
    assert len(saved["per_image"]) == len(reference_run.images)


def test_fp32_build_gives_the_reference_answers_through_the_public_api(demo_build, demo):
    """An independent check of the harness's own comparisons: the public API of the build and of the
    reference, side by side on two images, without the parity module."""
    artifact = minivlm.load_artifact(demo_build("executorch", "fp32").path)
    for sample in parity_images(scenes=1, photos=("coffee",)):
        assert artifact.caption(sample.image) == demo.caption(sample.image)
        assert [artifact.answer(sample.image, q) for q in sample.questions] == \
               [demo.answer(sample.image, q) for q in sample.questions]
        assert [d.label for d in artifact.detect(sample.image)] == [d.label for d in demo.detect(sample.image)]


def test_every_build_records_its_fp16_range_and_tolerance_row(demo_build):
    build = demo_build("executorch", "fp32")
    m = build.manifest
    assert m["tolerances"]["graph_max_abs"]["limit"] == "FP32_MAX_ABS"
    ranges = m["fp16_range"]
    assert set(ranges["per_graph"]) == set(GRAPH_NAMES) and ranges["images"] == 4
    assert RANGE_FILE in m["files"]
    table = json.loads((build.path / RANGE_FILE).read_text())
    assert len(table) == ranges["tensors_checked"] > 100
    # Independent of the recorder: the fusion graphs build an additive attention mask of MASK_VALUE.
    assert ranges["per_graph"]["caption_prefix"]["max_abs"] >= abs(MASK_VALUE)


# --- the CLI ---------------------------------------------------------------------------------------------------


def _cli(*args):
    return CliRunner().invoke(app, ["parity", *map(str, args)])


@pytest.fixture
def et_copy(demo_build, tmp_path):
    folder = tmp_path / "build"
    shutil.copytree(demo_build("executorch", "fp32").path, folder)
    (folder / REPORT_FILE).unlink(missing_ok=True)  # an earlier test may have written one into the session's build
    return folder


def test_cli_prints_the_table_and_writes_the_report(et_copy):
    result = _cli(et_copy, "--scenes", 2)
    assert result.exit_code == 0, result.output
    out = result.output
    assert "kind" in out and "tolerance" in out and "PASSED" in out
    assert "graph  tee_stage1" in out and "task   captions" in out and "FP32_MAX_ABS = 0.0001" in out
    saved = json.loads((et_copy / REPORT_FILE).read_text())
    assert saved["passed"] and len(saved["images"]) == 6  # 4 photos, 2 scenes
    minivlm.load_artifact(et_copy)  # the report file does not break the build's checksums


def _rebuild_graph(folder, name, module, example_inputs):
    """Convert `module` in place of graph `name` of the build in `folder`, and re-hash the manifest."""
    manifest = json.loads((folder / MANIFEST).read_text())
    entry = manifest["graphs"][name]
    spec = GraphSpec(name, module.eval(),
                     tuple(TensorSpec(i["name"], tuple(i["shape"]), i["dtype"]) for i in entry["inputs"]),
                     tuple(TensorSpec(o["name"], tuple(o["shape"]), o["dtype"]) for o in entry["outputs"]),
                     example_inputs, (example_inputs,))
    options = resolve_options(manifest["target"], manifest["precision"], manifest["delegate"])
    load_target(options).convert_graph(spec, options, folder, lambda step: None)
    # Its constants join the build's shared weights file (the old graph's stay there, unused).
    weights, graph_data = folder / manifest["weights_file"], folder / graph_data_file(name)
    write_data(merge({"build": read_data(weights), name: read_data(graph_data)}), weights)
    graph_data.unlink()
    manifest["files"] = file_hashes(folder)
    _write_sealed(folder, manifest)


def _write_sealed(folder, manifest):
    """Write `manifest` with its own checksum recomputed, as a forger (or a buggy tool) would."""
    manifest[MANIFEST_DIGEST] = manifest_digest(manifest)
    (folder / MANIFEST).write_text(json.dumps(manifest))


def test_a_build_with_one_perturbed_weight_fails_with_error_statistics(et_copy, demo, reference_run):
    graph = copy.deepcopy(demo.pipeline.graphs.vqa)
    head = [m for m in graph.head.modules() if isinstance(m, nn.Linear)][-1]
    with torch.no_grad():
        head.bias[0] += 1.0  # every answer_logits[0] moves by exactly 1
    _rebuild_graph(et_copy, "vqa", graph, reference_run.runs[0].calls["vqa"][0][0])
    minivlm.load_artifact(et_copy)  # a valid build: only its numbers are wrong

    result = _cli(et_copy, "--scenes", 2)
    assert result.exit_code == 1, result.output
    assert "FAILED" in result.output and "graph vqa max abs / peak" in result.output
    assert "mean abs" in result.output and "PSNR" in result.output and "SQNR" in result.output
    saved = json.loads((et_copy / REPORT_FILE).read_text())
    assert not saved["passed"]
    assert saved["graphs"]["vqa"]["answer_logits"]["max_abs"] == pytest.approx(1.0, abs=1e-3)
    assert saved["graphs"]["match"]["match_logits"]["max_abs"] < LIMITS["FP32_MAX_ABS"].value * 100
    failed = {(c["name"], c["metric"]) for c in saved["checks"] if c["status"] == "FAIL"}
    assert ("vqa", "max abs / peak") in failed and not any(name == "match" for name, _ in failed)


def _swap_outputs(folder, graph, a, b):
    manifest = json.loads((folder / MANIFEST).read_text())
    outputs = manifest["graphs"][graph]["outputs"]
    outputs[a], outputs[b] = outputs[b], outputs[a]
    _write_sealed(folder, manifest)  # its own checksum recomputed: only the I/O check can tell


SWAPPED = r"graph caption_step outputs are \['mask_logits', 'new_values', 'new_keys'\] in manifest\.json; " \
          r"the minivlm-demo model's are \['mask_logits', 'new_keys', 'new_values'\]"


def test_swapped_output_order_in_the_manifest_is_refused_before_the_reference_runs(et_copy):
    _swap_outputs(et_copy, "caption_step", 1, 2)  # new_keys <-> new_values: same shape and dtype
    result = _cli(et_copy, "--scenes", 2)
    assert result.exit_code == 2, result.output
    assert re.search(SWAPPED, result.output) and result.output.count("\n") == 1, result.output
    assert not (et_copy / REPORT_FILE).exists()


def test_swapped_outputs_of_a_by_name_runtime_are_refused(demo_build, tmp_path, reference_run):
    folder = tmp_path / "tflite"
    shutil.copytree(demo_build("tflite", "int8").path, folder)
    _swap_outputs(folder, "caption_step", 1, 2)  # the TFLite runner would hand keys where values belong
    with pytest.raises(ArtifactError, match=SWAPPED):
        check_parity(folder, reference_run)


@pytest.mark.parametrize("target", ["executorch", "coreai"])
def test_a_reference_of_other_weights_is_refused_in_one_line(demo_build, demo, target):
    model = copy.deepcopy(demo.pipeline.model)
    with torch.no_grad():
        next(model.tee.parameters()).mul_(1.5)  # the stem convolution
    other = ReferencePipeline(Pipeline.from_model(model, demo.pipeline.tokenizer, demo.pipeline.vocab), "perturbed")
    run = run_reference(other, parity_images(scenes=0, photos=("coffee",)))
    with pytest.raises(ParityError, match="not the model this build was made from") as err:
        check_parity(demo_build(target, "fp32").path, run)
    assert "\n" not in str(err.value)


def test_cli_errors_are_one_line(tmp_path):
    result = _cli(tmp_path / "missing")
    assert result.exit_code == 2 and result.output.count("\n") == 1 and "not a build folder" in result.output


# --- Core ML: run in the executor off macOS (above), in Core ML on macOS ------------------------------------------------


def test_coreml_spec_that_disagrees_with_the_manifest_is_refused(demo_build, reference_run, tmp_path):
    folder = tmp_path / "coreml"
    shutil.copytree(demo_build("coreml", "fp16").path, folder)
    manifest = json.loads((folder / MANIFEST).read_text())
    manifest["graphs"]["vqa"]["outputs"][0]["runtime_name"] = "logits"
    _write_sealed(folder, manifest)
    with pytest.raises(ArtifactError, match=r"graph vqa output answer_logits has runtime name logits in manifest\.json; "
                                            r"model\.mlpackage function vqa itself has answer_logits"):
        check_parity(folder, reference_run, platform="linux")


@pytest.mark.macos
@pytest.mark.parametrize("precision", ["fp16", "fp32", "int8"])
def test_coreml_build_runs_at_parity_on_macos(demo_build, reference_run, precision):
    report = check_parity(demo_build("coreml", precision).path, reference_run)
    assert report.passed, report.table()
    assert any(c.kind == "task" for c in report.checks)


# --- heavier sweeps (-m slow) -----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def sweep_run(demo):
    return run_reference(demo, parity_images(scenes=SWEEP_SCENES, photos=ALL_PHOTOS))


@pytest.mark.slow
@pytest.mark.parametrize("target, precision, delegate", _params([*DEFAULT, *SLOW], []))
def test_sweep_every_photo_and_200_scenes(demo_build, sweep_run, target, precision, delegate):
    report = check_parity(demo_build(target, precision, delegate).path, sweep_run)
    assert report.passed, report.table()


@pytest.mark.slow
def test_paper_preset_builds_at_parity(tmp_path_factory):
    """The full-size paper preset (random init, 512x512, MiniLM-L12-H384) through ExecuTorch XNNPACK fp32."""
    from minivlm.converters.build import build

    torch.manual_seed(0)
    paper = minivlm.load("minivlm-paper", random_init=True)
    out = tmp_path_factory.mktemp("paper") / "minivlm-paper-executorch-fp32"
    build(paper.pipeline, model_name="minivlm-paper", source=paper.source, options=resolve_options("executorch"),
          out=out, jobs=2)
    report = check_parity(out, run_reference(paper, parity_images(scenes=2, photos=("astronaut", "coffee"))))
    assert report.passed, report.table()


def test_word_embeddings_no_parity_input_reaches_fail_the_weight_audit(et_copy, demo, reference_run,
                                                                       tamper_word_embeddings):
    """Rows of words no parity input contains: no lookup reads them, only the tied decoder's logits for those
    words move (caption_step and its batched twin share the one stored table), and the audit names the tensor."""
    edited = tamper_word_embeddings(et_copy, demo, "weights.ptd")  # every graph's weights, each stored once
    report = check_parity(et_copy, reference_run)
    failed = {(c.kind, c.name) for c in report.failures}
    assert ("build", "weights") in failed and failed <= {("build", "weights"), ("graph", "caption_step"),
                                                         ("graph", "caption_step_beam")}, report.verdict()
    audit = report.as_json()["weight_audit"]
    assert not audit["passed"] and audit["unmatched"][0]["bad_values"] == edited
    assert "vqa" in audit["reason"].split(" tensor ")[0].split("/") and "word_embeddings" in audit["reason"]
