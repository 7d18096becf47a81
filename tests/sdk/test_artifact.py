"""`minivlm.load_artifact`: ExecuTorch and TFLite builds run by their real runtimes give the reference's
detections (IoU-matched), captions and answers; a build is verified before it runs, and a damaged one is a
one-line ArtifactError, never a crash."""

import json
import shutil

import pytest

import minivlm
from minivlm.converters.common import sha256_file
from minivlm.converters.samples import golden_images
from minivlm.converters.tolerances import DETECTION_MATCH_IOU, FP32_MAX_ABS
from minivlm.errors import ArtifactError
from minivlm.python_ref.postprocess import box_iou

import torch

pytestmark = pytest.mark.build  # every test here converts the tiny model

BUILDS = ["tiny_executorch_build", "tiny_tflite_build"]


@pytest.fixture(scope="module", params=BUILDS)
def build(request):
    return request.getfixturevalue(request.param)


@pytest.fixture(scope="module")
def artifact(build):
    return minivlm.load_artifact(build.path)


def _same_detections(ref, got):
    """Match by IoU (NMS order is not stable under last-bit changes), then compare label and score."""
    assert len(got) == len(ref)
    if not ref:
        return
    a, b = torch.tensor([d.box for d in ref]), torch.tensor([d.box for d in got])
    iou = box_iou(a, b)
    # Two empty boxes (clipped to a zero-height sliver at the image edge) have IoU 0/0: match them by position.
    same_place = (a[:, None] - b[None]).abs().amax(dim=-1) <= 1e-3
    iou = torch.where(iou.isnan(), same_place.float(), iou)
    for i, d in enumerate(ref):
        j = int(iou[i].argmax())
        assert float(iou[i, j]) >= DETECTION_MATCH_IOU, f"no build detection matches {d}"
        assert got[j].label == d.label and got[j].attribute == d.attribute
        assert abs(got[j].score - d.score) <= 1e-4


@pytest.mark.parametrize("sample", [s for s in golden_images() if s.name in ("photo_coffee", "scene_20000_0")],
                         ids=lambda s: s.name)
def test_build_matches_the_reference_on_real_images(artifact, tiny_reference, sample):
    image = sample.image
    _same_detections(tiny_reference.detect(image), artifact.detect(image))
    assert artifact.caption(image) == tiny_reference.caption(image)
    assert artifact.caption(image, num_beams=2) == tiny_reference.caption(image, num_beams=2)  # batched step graph
    assert artifact.answer(image, sample.question) == tiny_reference.answer(image, sample.question)
    assert abs(artifact.match(image, sample.text) - tiny_reference.match(image, sample.text)) <= 1e-4


def test_each_graph_is_within_the_fp32_tolerance(artifact, tiny_reference):
    sample = golden_images()[0]
    ref = tiny_reference.pipeline
    found = ref.regions(sample.image)
    inputs = ref.pack(found, sample.question).as_tuple()
    with torch.no_grad():
        want = ref.graphs.vqa(*inputs)[0]
    got = artifact.pipeline.graphs.vqa(*inputs)[0]
    assert float((got - want).abs().max()) <= FP32_MAX_ABS


def test_manifest_lists_the_sha256_of_every_file(build):
    listed = build.manifest["files"]
    on_disk = {p.relative_to(build.path).as_posix() for p in build.path.rglob("*") if p.is_file()} - {"manifest.json"}
    assert set(listed) == on_disk
    assert all(sha256_file(build.path / rel) == digest for rel, digest in listed.items())


@pytest.fixture
def copy(build, tmp_path):
    folder = tmp_path / "build"
    shutil.copytree(build.path, folder)
    return folder


def _graph_file(folder):
    return folder / json.loads((folder / "manifest.json").read_text())["graphs"]["tee_stage2"]["file"]


def test_a_tampered_file_fails_its_checksum(copy):
    vocab = copy / "vocab.txt"
    vocab.write_text(vocab.read_text().replace("circle", "square", 1))
    with pytest.raises(ArtifactError, match="vocab.txt fails its sha256 check") as err:
        minivlm.load_artifact(copy)
    assert "\n" not in str(err.value)


def test_a_missing_file_is_named(copy):
    (copy / "golden" / "index.json").unlink()
    with pytest.raises(ArtifactError, match="golden/index.json is missing"):
        minivlm.load_artifact(copy)


def test_a_truncated_graph_file_is_a_clear_error(copy):
    graph = _graph_file(copy)
    graph.write_bytes(graph.read_bytes()[: graph.stat().st_size // 2])
    with pytest.raises(ArtifactError, match=f"{graph.name} fails its sha256 check"):
        minivlm.load_artifact(copy)
    # Even with a manifest rewritten to match, the runtime's own check catches it (no crash).
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["files"][graph.name] = sha256_file(graph)
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match=f"{graph.name}: .* cannot load it") as err:
        minivlm.load_artifact(copy)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("make", [lambda p: p / "missing", lambda p: p])
def test_a_folder_that_is_not_a_build(make, tmp_path):
    with pytest.raises(ArtifactError, match="not a build folder|no manifest.json"):
        minivlm.load_artifact(make(tmp_path))
