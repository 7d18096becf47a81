"""A Core ML build of the demo model is one multifunction package, one function per graph, holding one copy of
every weight (docs/ARCHITECTURE.md §6); a package that lacks a graph's function is refused in one line.

The weights are counted in the package's `weights/weight.bin` itself, not through coremltools: MIL blob storage
(coremltools' `milstorage`, version 2) is a 64-byte header whose first word is the blob count, then per blob a
64-byte record (sentinel 0xDEADBEEF, data type, size in bytes, offset of the data) and the data, each at a
64-byte aligned offset. Constants of a few values live inside the program itself, not in the blob file.
"""

import hashlib
import json
import shutil
import struct
from pathlib import Path

import pytest
from typer.testing import CliRunner

from minivlm.python_ref.minivlm_family import MINIVLM
from minivlm.build_checks import verify_build
from minivlm.cli import app
from minivlm.converters.manifest import MANIFEST, MANIFEST_DIGEST, file_hashes, manifest_digest
from minivlm.errors import ArtifactError
from minivlm.python_ref.pipeline import GRAPH_NAMES

PACKAGE = "model.mlpackage"
WEIGHTS = f"{PACKAGE}/Data/com.apple.CoreML/weights/weight.bin"
MODEL_SPEC = f"{PACKAGE}/Data/com.apple.CoreML/model.mlmodel"
# The package's bytes per byte of the model's fp32 parameters. fp32 stores each weight once, plus the program
# and constants the converter derives (one more copy of the word embeddings, 70 % of the demo model, would add 0.7);
# fp16 halves the weights; int8 stores int8 values with a scale per output channel.
MAX_RATIO = {"fp32": 1.15, "fp16": 0.6, "int8": 0.35}


def _params(default, slow):
    return [*(pytest.param(p, id=p) for p in default), *(pytest.param(p, id=p, marks=pytest.mark.slow) for p in slow)]


def weight_blobs(path: Path) -> list[tuple[int, str]]:
    """(size in bytes, sha256 of the data) of every blob in a MIL blob storage file (see the module doc)."""
    data = path.read_bytes()
    count, version = struct.unpack_from("<II", data, 0)
    assert version == 2, f"{path}: blob storage version {version}, this reader knows version 2"
    blobs, record = [], 64
    for _ in range(count):
        sentinel, _dtype, size, offset = struct.unpack_from("<IIQQ", data, record)
        assert sentinel == 0xDEADBEEF and offset + size <= len(data), (record, hex(sentinel), offset, size)
        blobs.append((size, hashlib.sha256(data[offset:offset + size]).hexdigest()))
        record = (offset + size + 63) // 64 * 64
    assert record >= len(data), f"{path}: {len(data) - record} bytes after the last of {count} blobs"
    return blobs


@pytest.mark.parametrize("precision", _params(["fp16"], ["fp32", "int8"]))
def test_one_package_holds_every_weight_once(demo_build, demo, precision):
    folder = demo_build("coreml", precision).path
    params = sum(p.numel() * p.element_size() for p in demo.pipeline.model.parameters())  # tied ones once
    assert sorted(p.name for p in folder.iterdir() if p.suffix == ".mlpackage") == [PACKAGE]
    blobs = weight_blobs(folder / WEIGHTS)
    duplicates = len(blobs) - len({digest for _, digest in blobs})
    assert duplicates == 0, f"{duplicates} of {len(blobs)} weight blobs are stored more than once"
    package = sum(p.stat().st_size for p in (folder / PACKAGE).rglob("*") if p.is_file())
    assert package <= MAX_RATIO[precision] * params, f"{package} bytes for {params} bytes of fp32 weights"
    manifest = json.loads((folder / MANIFEST).read_text())
    assert {g["file"] for g in manifest["graphs"].values()} == {PACKAGE}
    assert [manifest["graphs"][g]["function"] for g in GRAPH_NAMES] == list(GRAPH_NAMES)


@pytest.fixture
def without_vqa(demo_build, tmp_path):
    """A copy of the fp16 build whose package lost its `vqa` function, every checksum redone to match."""
    from coremltools.proto import Model_pb2

    folder = tmp_path / "coreml"
    shutil.copytree(demo_build("coreml", "fp16").path, folder)
    spec = Model_pb2.Model()
    spec.ParseFromString((folder / MODEL_SPEC).read_bytes())
    kept = [f for f in spec.description.functions if f.name != "vqa"]
    assert len(kept) == len(MINIVLM.build_graphs) - 1
    del spec.description.functions[:]
    spec.description.functions.extend(kept)
    del spec.mlProgram.functions["vqa"]
    (folder / MODEL_SPEC).write_bytes(spec.SerializeToString())
    manifest = json.loads((folder / MANIFEST).read_text())
    manifest["files"] = file_hashes(folder)
    manifest[MANIFEST_DIGEST] = manifest_digest(manifest)
    (folder / MANIFEST).write_text(json.dumps(manifest))
    return folder


def test_a_package_missing_a_function_is_refused_in_one_line(without_vqa):
    with pytest.raises(ArtifactError, match=r"^model\.mlpackage has no function 'vqa' \(it has \['tee_stage1', .*'match', 'caption_step_beam'\]\)"):
        verify_build(without_vqa)
    result = CliRunner().invoke(app, ["parity", str(without_vqa)])
    assert result.exit_code == 2 and result.output.count("\n") == 1, result.output
    assert "model.mlpackage has no function 'vqa'" in result.output
