"""Core ML builds broken on purpose and caught on Linux, where the SDK's ML-program executor runs them
(`minivlm.coreml_executor`; per-layer rows in minivlm/parity/coreml_layers.py): a weight edit, an operation
swapped for a similar one and a changed axis, each made in a copy of the demo model's Core ML fp16 build by
editing its program (`model.mlmodel`) or weights (`weight.bin`) and re-hashing the manifest, as a converter bug
or a forger would. Each fails its graph and its layer row, names the edited operation as the first divergent
layer, and leaves every other graph's rows passing.

The build itself is held to its full parity row with the other default builds (test_parity.py,
parity_models.py); these checks run on one photo to stay fast."""

import json
import shutil
import struct

import numpy as np
import pytest
from torch import nn

from minivlm.converters.coreml import export
from minivlm.converters.manifest import MANIFEST, MANIFEST_DIGEST, file_hashes, manifest_digest
from minivlm.parity import REPORT_FILE, check_parity, parity_images, run_reference
from minivlm.parity.coreml_layers import node_name

PROGRAM = "model.mlpackage/Data/com.apple.CoreML/model.mlmodel"
WEIGHTS = "model.mlpackage/Data/com.apple.CoreML/weights/weight.bin"
FUNCTION = "vqa"
# The executor's float16 layers read >= 50 dB on the demo model; each sabotage below moves its layer far lower.
MIN_CLEAN_DB = 45.0


@pytest.fixture(scope="module")
def one_photo_run(demo):
    return run_reference(demo, parity_images(scenes=0, photos=("astronaut",)))


@pytest.fixture
def coreml_copy(demo_build, tmp_path):
    folder = tmp_path / "coreml"
    shutil.copytree(demo_build("coreml", "fp16").path, folder)
    (folder / REPORT_FILE).unlink(missing_ok=True)
    return folder


def _spec(folder):
    from coremltools.proto import Model_pb2

    spec = Model_pb2.Model()
    spec.ParseFromString((folder / PROGRAM).read_bytes())
    return spec


def _operations(spec, function: str = FUNCTION):
    fn = spec.mlProgram.functions[function]
    return fn.block_specializations[fn.opset].operations


def _save(folder, spec) -> None:
    """Write the edited program and re-hash every file into the manifest, as a forger would."""
    (folder / PROGRAM).write_bytes(spec.SerializeToString())
    manifest = json.loads((folder / MANIFEST).read_text())
    manifest["files"] = file_hashes(folder)
    manifest[MANIFEST_DIGEST] = manifest_digest(manifest)
    (folder / MANIFEST).write_text(json.dumps(manifest))


def _producer(operations, var: str):
    return next(op for op in operations if any(o.name == var for o in op.outputs))


def _argument(op, name: str) -> str:
    return op.inputs[name].arguments[0].name


def _check_caught(folder, run, edited_node: str):
    report = check_parity(folder, run)
    failed = {(c.kind, c.name) for c in report.failures}
    assert ("layer", FUNCTION) in failed, report.table()
    assert {kn for kn in failed if kn[0] in ("graph", "layer")} <= {("graph", FUNCTION), ("layer", FUNCTION)}, failed
    table = report.as_json()["layers"][FUNCTION]
    assert table["first_divergent"] == edited_node, (table["first_divergent"], edited_node)
    rows = table["rows"]
    first = next(r for r in rows if r["node"] == table["first_divergent"])
    before = rows[:rows.index(first)]
    assert before and all(r["psnr_db"] == "inf" or r["psnr_db"] >= MIN_CLEAN_DB for r in before)
    return report, first


def test_a_weight_edit_is_caught_at_its_layer(coreml_copy, one_photo_run, demo):
    """The answer head's weight, stored in weight.bin: its first row moved by a quarter of the row's peak."""
    spec = _spec(coreml_copy)
    ops = _operations(spec)
    head = _producer(ops, "answer_logits")
    weight = _producer(ops, _argument(head, "weight")).attributes["val"]
    assert weight.WhichOneof("value") == "blobFileValue", weight
    data = bytearray((coreml_copy / WEIGHTS).read_bytes())
    record = weight.blobFileValue.offset
    sentinel, _dtype, size, offset = struct.unpack_from("<IIQQ", data, record)  # MIL blob storage v2 record
    assert sentinel == 0xDEADBEEF
    columns = weight.type.tensorType.dimensions[1].constant.size
    assert size % (2 * columns) == 0  # float16 rows, the build's precision
    row = np.frombuffer(bytes(data[offset:offset + 2 * columns]), dtype=np.float16).astype(np.float32)
    row += 0.25 * np.abs(row).max()
    data[offset:offset + 2 * columns] = row.astype(np.float16).tobytes()
    (coreml_copy / WEIGHTS).write_bytes(bytes(data))
    _save(coreml_copy, spec)
    # The head's linear layer is the node the graph returns as answer_logits.
    graph = demo.pipeline.graphs.vqa
    name = [n for n, m in graph.named_modules() if isinstance(m, nn.Linear) and n.startswith(graph.head_name)][-1]
    returned = export(graph, graph.example_inputs()).graph.output_node().args[0][0].name
    _, first = _check_caught(coreml_copy, one_photo_run, returned)
    assert first["module"] == name and first["op"] == "aten.linear.default" and first["psnr_db"] < 40


def test_an_operation_swapped_for_a_similar_one_is_caught(coreml_copy, one_photo_run):
    """A LayerNorm's mean in the middle of the encoder computed as a max (same inputs, same output shape)."""
    spec = _spec(coreml_copy)
    means = [op for op in _operations(spec) if op.type == "reduce_mean"]
    op = means[len(means) // 2]
    op.type = "reduce_max"
    _save(coreml_copy, spec)
    _, first = _check_caught(coreml_copy, one_photo_run, node_name(op.outputs[0].name))
    assert first["op"] == "aten.mean.dim" and first["psnr_db"] < 30


def test_a_changed_axis_is_caught(coreml_copy, one_photo_run):
    """An attention softmax over the query axis instead of the key axis ((B, heads, T, T): same shape)."""
    spec = _spec(coreml_copy)
    ops = _operations(spec)
    softmax = [op for op in ops if op.type == "softmax"][1]
    axis = _producer(ops, _argument(softmax, "axis")).attributes["val"]
    values = axis.immediateValue.tensor.ints.values
    assert list(values) == [-1], list(values)
    values[0] = -2
    _save(coreml_copy, spec)
    _, first = _check_caught(coreml_copy, one_photo_run, node_name(softmax.outputs[0].name))
    assert first["op"] == "aten.softmax.int" and first["psnr_db"] < 30
