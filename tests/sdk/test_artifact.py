"""`minivlm.load_artifact`: ExecuTorch and TFLite builds run by their real runtimes give the reference's
detections (IoU-matched), captions and answers; a build is verified before it runs, and a damaged one is a
one-line ArtifactError, never a crash."""

import json
import re
import shutil

import pytest

import minivlm
from minivlm.converters.manifest import MANIFEST_DIGEST, file_hashes, manifest_digest, sha256_file
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
    # Two empty boxes (clipped to a zero-height sliver at the image edge) have IoU 0: match them by position.
    empty = ((a[:, 2:] - a[:, :2]).prod(dim=-1) == 0)[:, None] & ((b[:, 2:] - b[:, :2]).prod(dim=-1) == 0)[None, :]
    same_place = (a[:, None] - b[None]).abs().amax(dim=-1) <= 1e-3
    iou = torch.where(empty, same_place.float(), iou)
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
    for beams in (2, 5, 7):  # through the build's batched step graph: one padded call, one full, a full and a padded
        assert artifact.caption(image, num_beams=beams) == tiny_reference.caption(image, num_beams=beams)
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
    written = json.loads((build.path / "manifest.json").read_text())
    assert written[MANIFEST_DIGEST] == manifest_digest(written) == build.manifest[MANIFEST_DIGEST]


@pytest.fixture
def copy(build, tmp_path):
    folder = tmp_path / "build"
    shutil.copytree(build.path, folder)
    return folder


def _write_sealed(folder, manifest):
    """Write `manifest` with its own checksum recomputed: what a forger (or a buggy tool) would do."""
    if isinstance(manifest, dict):
        manifest[MANIFEST_DIGEST] = manifest_digest(manifest)
    (folder / "manifest.json").write_text(json.dumps(manifest))


def _graph_file(folder):
    """tee_stage2's file: its own `.pte`, or the `model.tflite` every graph shares (errors then name tee_stage1)."""
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
    _write_sealed(copy, manifest)
    with pytest.raises(ArtifactError, match=f"{graph.name}: .* cannot load it") as err:
        minivlm.load_artifact(copy)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("make", [lambda p: p / "missing", lambda p: p])
def test_a_folder_that_is_not_a_build(make, tmp_path):
    with pytest.raises(ArtifactError, match="not a build folder|no manifest.json"):
        minivlm.load_artifact(make(tmp_path))


# --- a build folder that was edited, broken or forged: refused in one line, before anything runs ---------------


def _manifest(folder):
    return json.loads((folder / "manifest.json").read_text())


@pytest.fixture
def no_reference(monkeypatch):
    """Fails the test if parity loads or runs a reference: a broken build must be refused before that work."""
    from minivlm import loading
    from minivlm.parity import run

    def forbidden(*args, **kwargs):
        pytest.fail("the reference was loaded or run before the build was verified")

    for module, name in ((run, "reference_for"), (run, "run_reference"), (loading, "load")):
        monkeypatch.setattr(module, name, forbidden)


def _refused(folder, match):
    """`minivlm.load_artifact` and `minivlm parity` both refuse the folder with a one-line ArtifactError."""
    from typer.testing import CliRunner

    from minivlm.cli import app

    with pytest.raises(ArtifactError, match=match) as err:
        minivlm.load_artifact(folder)
    assert "\n" not in str(err.value)
    result = CliRunner().invoke(app, ["parity", str(folder)])
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: ") and result.output.count("\n") == 1, result.output
    assert re.search(match, result.output), result.output


@pytest.mark.build
def test_an_edited_manifest_is_refused(copy, no_reference):
    manifest = _manifest(copy)
    manifest["graphs"]["tee_stage1"]["inputs"][0]["shape"] = [1, 3, 256, 256]
    (copy / "manifest.json").write_text(json.dumps(manifest, indent=1))
    _refused(copy, r"manifest\.json was edited after the build \(its content hashes to .*\); restore it or rebuild")


@pytest.mark.build
def test_manifest_io_is_checked_against_the_model(copy, no_reference):
    """Even with its checksum recomputed, an edited input shape is refused at load time, naming the graph, the
    tensor and both shapes, instead of blaming every user image later."""
    manifest = _manifest(copy)
    manifest["graphs"]["tee_stage1"]["inputs"][0]["shape"] = [1, 3, 256, 256]
    _write_sealed(copy, manifest)
    _refused(copy, r"graph tee_stage1 input images has shape \(1, 3, 256, 256\) in manifest\.json; "
                   r"the minivlm-tiny model's is \(1, 3, 128, 128\)")


@pytest.mark.build
def test_manifest_output_order_is_checked_against_the_model(copy, no_reference):
    manifest = _manifest(copy)
    outputs = manifest["graphs"]["caption_step"]["outputs"]
    outputs[1], outputs[2] = outputs[2], outputs[1]  # new_keys <-> new_values: same shape and dtype
    _write_sealed(copy, manifest)
    _refused(copy, r"graph caption_step outputs are \['mask_logits', 'new_values', 'new_keys'\] in manifest\.json; "
                   r"the minivlm-tiny model's are \['mask_logits', 'new_keys', 'new_values'\]")


@pytest.mark.build
def test_manifest_io_is_checked_against_the_runtime(copy, no_reference):
    """What the graph's runtime reports is checked: match's `.pte` replaced by vqa's (files re-hashed), or match's
    entry naming vqa's signature of the one `model.tflite`, the manifest re-sealed; the manifest's and the model's
    I/O agree everywhere else."""
    manifest = _manifest(copy)
    if manifest["target"] == "tflite":
        manifest["graphs"]["match"]["signature"] = "vqa"
    else:
        match, vqa = (copy / manifest["graphs"][g]["file"] for g in ("match", "vqa"))
        shutil.copyfile(vqa, match)
        manifest["files"] = file_hashes(copy)
    _write_sealed(copy, manifest)
    _refused(copy, r"graph match(: model\.tflite's signature outputs are \['answer_logits'\]; manifest\.json lists "
                   r"\['match_logits'\]| output match_logits has shape \(1, 2\) in manifest\.json; match\.pte itself has \(1, 11\))")


@pytest.mark.build
@pytest.mark.parametrize("signature, match", [
    ("nope", r"graph match: model\.tflite has no signature 'nope' \(it has \['tee_stage1', .*'match', 'caption_step_beam'\]\)"),
    (..., r"lacks graphs\.match\.signature; expected its signature's key in the \.tflite \(an older build: rebuild it\)"),
], ids=["unknown", "absent"])
def test_a_tflite_graph_without_its_signature_is_one_line(tiny_tflite_build, tmp_path, no_reference, signature, match):
    copy = tmp_path / "build"
    shutil.copytree(tiny_tflite_build.path, copy)
    manifest = _manifest(copy)
    _set(["graphs", "match", "signature"], signature)(manifest)
    _write_sealed(copy, manifest)
    _refused(copy, match)


@pytest.mark.build
def test_manifest_runtime_dtype_is_checked_against_the_runtime(copy, no_reference):
    manifest = _manifest(copy)
    manifest["graphs"]["vqa"]["inputs"][0]["runtime_dtype"] = "float32"
    _write_sealed(copy, manifest)
    _refused(copy, r"graph vqa input input_ids has runtime dtype float32 in manifest\.json; (vqa\.pte|model\.tflite) itself "
                   r"has int(64|32)")


@pytest.mark.build
def test_a_manifest_without_its_checksum_asks_for_a_rebuild(copy, no_reference):
    manifest = _manifest(copy)
    del manifest[MANIFEST_DIGEST]
    (copy / "manifest.json").write_text(json.dumps(manifest))
    _refused(copy, r"has no manifest_sha256 .*; rebuild with minivlm-convert")


def _set(path, value):
    """An edit of the manifest at `path` (keys and indices): `value`, or removal for `...`."""
    def edit(manifest):
        *parents, last = path
        for key in parents:
            manifest = manifest[key]
        if value is ...:
            del manifest[last]
        else:
            manifest[last] = value
    return edit


MALFORMED = {
    "files as a list": (lambda m: m.update(files=sorted(m["files"])),
                        r"files is \[.*; expected an object mapping each file's path in the build to its sha256"),
    "a file's sha256 as a number": (lambda m: m["files"].update({"vocab.txt": 42}),
                                    r"files\['vocab\.txt'\] is 42; expected a sha256 hex digest"),
    "graph without file": (_set(["graphs", "vqa", "file"], ...), r"lacks graphs\.vqa\.file; expected the graph's file"),
    "a Core ML graph without its function": (lambda m: m.update(target="coreml", precision="fp16", delegate=None),
                                             r"lacks graphs\.tee_stage1\.function; expected the graph's function in the Core ML package"),
    "a Core AI graph without its function": (lambda m: m.update(target="coreai", precision="fp32", delegate=None),
                                             r"lacks graphs\.tee_stage1\.function; expected the graph's function in the Core AI asset"),
    "graph without inputs": (_set(["graphs", "match", "inputs"], ...), r"lacks graphs\.match\.inputs; expected a non-empty list"),
    "graph as a string": (_set(["graphs", "vqa"], "vqa.pte"), r"graphs\.vqa is \"vqa\.pte\"; expected an object"),
    "graphs as a list": (lambda m: m.update(graphs=list(m["graphs"])), r"graphs is \[.*; expected an object with the graphs"),
    "a graph missing": (_set(["graphs", "match"], ...), r"graphs has \[.*\]; expected exactly \['tee_stage1', .*'match'\]"),
    "shape as a string": (_set(["graphs", "vqa", "inputs", 0, "shape"], "1,24"),
                          r"graphs\.vqa\.inputs\[0\]\.shape is \"1,24\"; expected a list of positive integers"),
    "shape of strings": (_set(["graphs", "vqa", "inputs", 0, "shape"], ["1", "24"]),
                         r"graphs\.vqa\.inputs\[0\]\.shape is \[\"1\", \"24\"\]; expected a list of positive integers"),
    "a number as a string": (_set(["graphs", "vqa", "inputs", 0, "batch_axis"], "0"),
                             r"graphs\.vqa\.inputs\[0\]\.batch_axis is \"0\"; expected an axis of its shape, 0 to 1"),
    "a tensor as a string": (_set(["graphs", "vqa", "outputs", 0], "answer_logits"),
                             r"graphs\.vqa\.outputs\[0\] is \"answer_logits\"; expected an object"),
    "a dtype that does not exist": (_set(["graphs", "vqa", "inputs", 0, "runtime_dtype"], "int7"),
                                    r"graphs\.vqa\.inputs\[0\]\.runtime_dtype is \"int7\"; expected one of float32"),
    "schema version as a string": (_set(["schema_version"], "1"), r"schema_version is \"1\"; expected the integer 1"),
    "a later schema version": (_set(["schema_version"], 2), r"has schema version 2; this SDK reads version 1 \(rebuild"),
    "model as a string": (_set(["model"], "minivlm-tiny"), r"model is \"minivlm-tiny\"; expected an object"),
    "model without config": (_set(["model", "config"], ...), r"lacks model\.config; expected the model's config"),
    "tokenizer without vocab_file": (_set(["tokenizer", "vocab_file"], ...), r"lacks tokenizer\.vocab_file; expected"),
    "an unknown target": (_set(["target"], "onnx"), r"target is \"onnx\"; expected one of executorch, coreml, tflite"),
    "a precision not in the tolerance table": (_set(["precision"], "fp8"),
                                               r"precision is \"fp8\"; expected one of (executorch|tflite)'s precisions: fp32"),
    "a delegate that does not exist": (_set(["delegate"], "npu"), r"delegate is \"npu\"; expected null or one of xnnpack"),
    "goldens outside the folder": (_set(["golden_dir"], "../golden"),
                                   r"manifest\.json lists '\.\./golden', which is not a path inside the build folder"),
    "a graph file outside the folder": (_set(["graphs", "vqa", "file"], "/etc/passwd"),
                                        r"lists '/etc/passwd', which is not a path inside the build folder"),
}


@pytest.mark.build
@pytest.mark.parametrize("case", MALFORMED)
def test_a_malformed_manifest_is_one_line_naming_the_key(copy, no_reference, case):
    """Wrong types anywhere (re-sealed, so only the structure check stands between them and a traceback)."""
    edit, match = MALFORMED[case]
    manifest = _manifest(copy)
    edit(manifest)
    _write_sealed(copy, manifest)
    _refused(copy, match)


@pytest.mark.build
@pytest.mark.parametrize("text, match", [
    ("[]", r"holds \[\]; expected a JSON object"),
    ("{", r"is unreadable: JSONDecodeError"),
    ("[" * 100_000 + "]" * 100_000, r"is unreadable: RecursionError"),
], ids=["a list", "truncated", "nested too deep"])
def test_a_manifest_that_is_not_an_object_is_one_line(copy, no_reference, text, match):
    (copy / "manifest.json").write_text(text)
    _refused(copy, match)


@pytest.mark.build
def test_parity_refuses_a_corrupted_graph_before_any_reference_work(copy, no_reference):
    from minivlm.parity import run_parity

    graph = _graph_file(copy)
    data = bytearray(graph.read_bytes())
    data[len(data) // 2] ^= 0xFF
    graph.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=f"{graph.name} fails its sha256 check"):
        run_parity(copy, write=False)
    _refused(copy, f"{graph.name} fails its sha256 check")
    assert not (copy / "parity_report.json").exists()


@pytest.mark.build
def test_a_symbolic_link_in_the_build_is_refused(copy, tmp_path, no_reference):
    outside = tmp_path / "vocab.txt"
    shutil.copyfile(copy / "vocab.txt", outside)
    (copy / "vocab.txt").unlink()
    (copy / "vocab.txt").symlink_to(outside)  # same bytes, so its sha256 still matches
    _refused(copy, r"vocab\.txt is a symbolic link; a build folder holds only the files minivlm-convert wrote")
    (copy / "vocab.txt").unlink()
    (copy / "vocab.txt").symlink_to("vocab.txt")  # a loop: resolving it raised RuntimeError
    _refused(copy, r"vocab\.txt is a symbolic link")


@pytest.mark.build
def test_a_graph_file_replaced_by_a_folder_is_refused(copy, no_reference):
    graph = _graph_file(copy)
    graph.unlink()
    graph.mkdir()
    _refused(copy, rf"{graph.name} is not a regular file")
    (graph / "model").write_bytes(b"")  # and a manifest forged to list what is inside
    manifest = _manifest(copy)
    manifest["files"] = file_hashes(copy)
    _write_sealed(copy, manifest)
    _refused(copy, rf"graph (tee_stage2|tee_stage1) file {graph.name} is a folder; expected a \.(pte|tflite) file")


@pytest.mark.build
def test_an_empty_graph_file_with_a_forged_checksum_is_refused(copy, no_reference):
    graph = _graph_file(copy)
    graph.write_bytes(b"")
    manifest = _manifest(copy)
    manifest["files"] = file_hashes(copy)
    _write_sealed(copy, manifest)
    _refused(copy, rf"graph (tee_stage2|tee_stage1) file {graph.name} is empty; rebuild it")


@pytest.mark.build
def test_a_forged_golden_index_is_one_line_in_parity(copy, tiny_reference):
    from minivlm.parity import check_goldens

    (copy / "golden" / "index.json").write_text(json.dumps({"images": []}))
    manifest = _manifest(copy)
    manifest["files"] = file_hashes(copy)
    _write_sealed(copy, manifest)
    with pytest.raises(ArtifactError, match=r"golden/index\.json is malformed \(KeyError: 'cases'\)") as err:
        check_goldens(copy, _manifest(copy), tiny_reference, "test")
    assert "\n" not in str(err.value)
