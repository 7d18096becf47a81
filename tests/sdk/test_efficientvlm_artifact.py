"""`minivlm.load_artifact` of EfficientVLM builds: run by their real runtimes through the family's host code, they
give the eager model's captions, answers, match probabilities and ITC features; the family a manifest names
decides which graphs it must have; a MiniVLM build written before manifests named their family still loads."""

import json
import shutil

import pytest
import torch

import minivlm
from minivlm.converters.manifest import MANIFEST_DIGEST, manifest_digest
from minivlm.converters.samples import golden_images
from minivlm.converters.tolerances import FP32_MAX_ABS
from minivlm.efficientvlm_pipeline import EfficientVLMReference
from minivlm.errors import ArtifactError, ConfigError, InputError
from minivlm.runtime import ArtifactPipeline, EfficientVLMArtifact

pytestmark = pytest.mark.build  # every test here converts a tiny model


@pytest.fixture(scope="module", params=["executorch", "tflite"])
def build(request, tiny_efficientvlm_build):
    return tiny_efficientvlm_build(request.param)


@pytest.fixture(scope="module")
def reference(tiny_efficientvlm):
    return EfficientVLMReference(tiny_efficientvlm, "random init")


@pytest.mark.parametrize("sample", [s for s in golden_images() if s.name in ("photo_coffee", "scene_20000_0")],
                         ids=lambda s: s.name)
def test_build_matches_the_reference_on_real_images(build, reference, sample):
    artifact = minivlm.load_artifact(build.path)
    assert isinstance(artifact, EfficientVLMArtifact) and artifact.manifest["family"] == "efficientvlm"
    image = sample.image
    assert artifact.caption(image) == reference.caption(image)
    assert artifact.answer(image, sample.question) == reference.answer(image, sample.question)
    assert abs(artifact.match(image, sample.text) - reference.match(image, sample.text)) <= 1e-4
    got, want = artifact.image_feature(image), reference.image_feature(image)
    assert float((got - want).abs().max()) <= FP32_MAX_ABS
    assert [t for t, _ in artifact.rank_texts(image, ["a red circle", sample.text, "two squares"])] == \
           [t for t, _ in reference.rank_texts(image, ["a red circle", sample.text, "two squares"])]


def test_each_graph_is_within_the_fp32_tolerance(build, tiny_efficientvlm):
    artifact = minivlm.load_artifact(build.path)
    image = tiny_efficientvlm.encode(golden_images()[0].image)
    inputs = (image.tokens, *tiny_efficientvlm.prompt())
    with torch.no_grad():
        want = tiny_efficientvlm.graphs.caption_step(*inputs)[0]
    got = artifact.pipeline.graphs.caption_step(*inputs)[0]
    assert float((got - want).abs().max()) / float(want.abs().max()) <= FP32_MAX_ABS


def test_no_detector_and_no_beams_are_one_line_errors(build):
    artifact = minivlm.load_artifact(build.path)
    with pytest.raises(ConfigError, match="efficientvlm-tiny has no detector") as err:
        artifact.detect("not even read")
    assert "\n" not in str(err.value)
    with pytest.raises(InputError, match="num_beams is 3; efficientvlm-tiny captions greedily only"):
        artifact.caption(golden_images()[0].image, num_beams=3)


def _resealed(src, dst, edit):
    shutil.copytree(src, dst)
    manifest = json.loads((dst / "manifest.json").read_text())
    edit(manifest)
    manifest[MANIFEST_DIGEST] = manifest_digest(manifest)
    (dst / "manifest.json").write_text(json.dumps(manifest))
    return dst


def test_the_manifests_family_decides_its_graphs(tiny_efficientvlm_build, tiny_executorch_build, tmp_path):
    evlm = tiny_efficientvlm_build("executorch").path
    as_minivlm = _resealed(evlm, tmp_path / "a", lambda m: m.update(family="minivlm"))
    with pytest.raises(ArtifactError, match="graphs has \\['vision', .*\\]; expected exactly \\['tee_stage1', "):
        minivlm.load_artifact(as_minivlm)
    unknown = _resealed(evlm, tmp_path / "b", lambda m: m.update(family="blip"))
    with pytest.raises(ArtifactError, match="family is \"blip\"; expected one of this SDK's model families: minivlm, "):
        minivlm.load_artifact(unknown)
    other_preset = _resealed(tiny_executorch_build.path, tmp_path / "c",
                             lambda m: m["model"].update(preset="efficientvlm-tiny"))
    with pytest.raises(ArtifactError, match="preset efficientvlm-tiny is not of its manifest's family minivlm"):
        minivlm.load_artifact(other_preset)


def test_a_minivlm_build_from_before_the_family_field_still_loads(tiny_executorch_build, tiny_reference, tmp_path):
    old = _resealed(tiny_executorch_build.path, tmp_path / "old", lambda m: m.pop("family"))
    artifact = minivlm.load_artifact(old)
    assert isinstance(artifact, ArtifactPipeline) and "family" not in artifact.manifest
    image = golden_images()[2].image
    assert artifact.caption(image) == tiny_reference.caption(image)
