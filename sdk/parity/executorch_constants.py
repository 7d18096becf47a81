"""The constants an ExecuTorch build stores, for the weight audit, read with executorch's own deserializers:
the program (`executorch.exir._serialize._program.deserialize_pte_binary`: constant buffers, delegate payloads,
named data inside the `.pte`), an external `weights.ptd` (`executorch.extension.flat_tensor.serialize
.serialize.FlatTensorSerializer.deserialize`), and each XNNPACK delegate's payload (its header as
`backends/xnnpack/serialization/xnnpack_graph_serialize.py` `XNNHeader` writes it, its flatbuffer decoded by
executorch's `flatc` against `backends/xnnpack/serialization/schema.fbs`). The int8 table of a
`quantized_decomposed::embedding_byte` lookup is read with its row scales (axis 0, zero point 0), as XNNPACK's
per-channel weights are; the scales are its quantization, not a constant of their own.

One stored copy per storage slot: a program constant buffer of one `.pte`, a delegate's inline constant of one
payload, or a named-data buffer of the file holding it (so every key naming one buffer of `weights.ptd`, read by
any number of programs, is one copy).
"""

from __future__ import annotations

import json
import re
import tempfile
from importlib import resources
from pathlib import Path

import numpy as np

from minivlm.errors import ArtifactError

from .stored_constants import StoredConstant, dequantized

# executorch ScalarType -> numpy (exir/scalar_type.py)
_ET_DTYPES = {0: np.uint8, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.int64, 5: np.float16, 6: np.float32,
              7: np.float64, 11: np.bool_}
# XNNDatatype (xnnpack schema.fbs; flatc writes enum names) -> numpy; the quantized ones carry quant_params
_XNN_DTYPES = {"xnn_datatype_fp32": np.float32, "xnn_datatype_fp16": np.float16, "xnn_datatype_qint8": np.int8,
               "xnn_datatype_quint8": np.uint8, "xnn_datatype_qint32": np.int32, "xnn_datatype_qcint8": np.int8,
               "xnn_datatype_qcint32": np.int32, "xnn_datatype_int32": np.int32}
_XNN_HEADER_MAGIC = b"XH00"


def executorch_constants(folder: Path, manifest: dict) -> list[StoredConstant]:
    """Every constant of the build's `.pte` files and of its `weights_file` (if any)."""
    from executorch.exir._serialize._program import deserialize_pte_binary

    external: dict[str, tuple[str, bytes]] = {}
    weights_file = manifest.get("weights_file")
    if weights_file:
        external = {key: (f"{weights_file} named data buffer {index}", data)
                    for key, (index, data) in _flat_tensor(folder / weights_file).items()}
    copies: dict[str, StoredConstant] = {}
    for graph, entry in manifest["graphs"].items():
        file = entry["file"]
        try:
            pte = deserialize_pte_binary((folder / file).read_bytes())
        except Exception as err:  # executorch's reader raises what the flatbuffer decoder hit
            raise ArtifactError(f"{folder / file} is not an ExecuTorch program: {type(err).__name__}: {err}") from None
        program = pte.program
        # key -> (its storage slot, bytes): keys that name one stored buffer are one copy
        named: dict[str, tuple[str, bytes]] = dict(external)
        if pte.named_data is not None:
            for key, data_entry in pte.named_data.pte_data.items():
                named[key] = (f"{file} named data buffer {data_entry.buffer_index}",
                              bytes(pte.named_data.buffers[data_entry.buffer_index]))
        for plan in program.execution_plan:
            tables = _int8_lookup_tables(plan)
            row_scales = set(tables.values())  # a table's scales are its quantization, not a constant of their own
            for i, value in enumerate(plan.values):
                found = _stored(plan, i, program, named, folder / file) if i not in row_scales else None
                if found is None:
                    continue
                quant = None
                if i in tables:
                    scales = plan.values[tables[i]].val
                    data = _stored(plan, tables[i], program, named, folder / file)[1]
                    quant = np.frombuffer(bytes(data), _ET_DTYPES[int(scales.scalar_type)]).astype(np.float64), 0
                _add(copies, found[0], graph, f"value {i}", int(value.val.scalar_type), value.val.sizes, found[1], quant)
            for k, delegate in enumerate(plan.delegates):
                if "xnnpack" not in delegate.id.lower():
                    continue
                blob = program.backend_delegate_data[delegate.processed.index].data
                _xnnpack(copies, f"{file} delegate {k}", graph, bytes(blob), named, folder / file)
    return list(copies.values())


def _stored(plan, i: int, program, named, path: Path) -> tuple[str, bytes] | None:
    """Where value `i` of `plan` is stored and its bytes; None if it is no constant tensor."""
    tensor = plan.values[i].val
    if type(tensor).__name__ != "Tensor":
        return None
    info = tensor.extra_tensor_info
    if info is not None and info.location == 1 and info.fully_qualified_name:  # EXTERNAL
        return _named(named, info.fully_qualified_name, path)
    if tensor.data_buffer_idx > 0:
        return f"{path.name} constant buffer {tensor.data_buffer_idx}", program.constant_buffer[tensor.data_buffer_idx].storage
    return None


def _int8_lookup_tables(plan) -> dict[int, int]:
    """The int8 tables the plan's `quantized_decomposed::embedding_byte` kernels read (value index -> value index of
    their per-row scales): stored int8, they mean (q - 0) * scale of their row, as XNNPACK's per-channel weights."""
    tables = {}
    for chain in plan.chains:
        for instruction in chain.instructions:
            call = instruction.instr_args
            if type(call).__name__ != "KernelCall":
                continue
            if plan.operators[call.op_index].name == "quantized_decomposed::embedding_byte":
                weight, scales, zero_points = call.args[:3]
                if type(plan.values[zero_points].val).__name__ == "Tensor":
                    raise ArtifactError(f"an embedding_byte lookup (value {weight}) has zero points; the weight audit "
                                        f"reads symmetric int8 tables only")
                tables[weight] = scales
    return tables


def _named(named: dict[str, tuple[str, bytes]], key: str, path: Path) -> tuple[str, bytes]:
    if key not in named:
        raise ArtifactError(f"{path} reads named data {key!r}, which neither it nor the build's weights file holds")
    return named[key]


def _flat_tensor(path: Path) -> dict[str, tuple[int, bytes]]:
    from executorch.exir._serialize._cord import Cord
    from executorch.extension.flat_tensor.serialize.serialize import FlatTensorSerializer

    try:
        payload = FlatTensorSerializer().deserialize(Cord(path.read_bytes()))
    except Exception as err:
        raise ArtifactError(f"{path} is not an ExecuTorch flat_tensor (.ptd) file: {type(err).__name__}: {err}") from None
    return {key: (e.buffer_index, bytes(payload.buffers[e.buffer_index])) for key, e in payload.named_data.items()}


def _add(copies: dict[str, StoredConstant], where: str, graph: str, name: str, dtype_name, shape, data: bytes,
         quant) -> None:
    dtype = _XNN_DTYPES.get(dtype_name) if isinstance(dtype_name, str) else _ET_DTYPES.get(dtype_name)
    if where in copies and quant is not None and copies[where].quantized \
            and not np.array_equal(copies[where].scale, quant[0]):
        # One stored int8 tensor read with other scales (a lookup and a delegate's weight) is another value: audit
        # it as its own copy.
        where = f"{where} read with other scales"
    if where in copies:
        copies[where].users.append((graph, name))
        return
    if dtype is None:
        raise ArtifactError(f"{where}: tensor type {dtype_name} is not one the weight audit reads")
    shape = tuple(int(d) for d in shape)
    count = int(np.prod(shape)) if shape else 1
    array = np.frombuffer(bytes(data), dtype, count).reshape(shape)
    if quant is not None:
        scale, axis = quant
        zero = np.zeros(1)
        stored = StoredConstant(where, np.dtype(dtype).name, shape, dequantized(array, scale, zero, axis), array.nbytes,
                                q=array, scale=scale, zero_point=zero, axis=axis, check_scale=np.dtype(dtype) == np.int8)
    else:
        stored = StoredConstant(where, np.dtype(dtype).name, shape, array, array.nbytes)
    stored.users.append((graph, name))
    copies[where] = stored


def _xnnpack(copies, where: str, graph: str, blob: bytes, named, path: Path) -> None:
    """The constants of one XNNPACK payload: header, flatbuffer, then inline constant data."""
    if blob[4:8] != _XNN_HEADER_MAGIC:
        raise ArtifactError(f"{where} of {path}: an XNNPACK payload without its header (magic {blob[4:8]!r})")
    fb_offset, fb_size = int.from_bytes(blob[10:14], "little"), int.from_bytes(blob[14:18], "little")
    const_offset = int.from_bytes(blob[18:22], "little")
    graph_json = _xnn_json(blob[fb_offset:fb_offset + fb_size])
    table = graph_json.get("constant_data", [])
    for value in graph_json.get("xvalues", []):
        union = value.get("xvalue_union", {})
        quantized = value.get("xvalue_union_type") == "XNNQuantizedTensorValue"
        tensor = union.get("tensor_value", union) if quantized else union
        index = tensor.get("constant_buffer_idx", 0)
        if not index:
            continue
        slot = table[index]
        if slot.get("named_key"):
            name, data = _named(named, slot["named_key"], path)
        else:
            start = const_offset + int(slot["offset"])
            name, data = f"{where} constant {index}", blob[start:start + int(slot["size"])]
        quant = _xnn_quant(union, blob, const_offset, table, named, path) if quantized else None
        _add(copies, name, graph, f"xnnpack value {tensor.get('id_out')}", tensor.get("datatype"), tensor.get("dims", []),
             data, quant)


def _xnn_quant(union: dict, blob: bytes, const_offset: int, table: list, named, path: Path,
               ) -> tuple[np.ndarray, int | None] | None:
    kind, params = union.get("quant_params_type"), union.get("quant_params", {})
    if kind == "PerTensorQuant":
        return np.asarray([params["scale"]], np.float64), None
    if kind == "PerChannelQuant":
        if params.get("scale"):
            scale = np.asarray(params["scale"], np.float64)
        else:  # scales stored as constant data
            slot = table[params["scale_buffer_idx"]]
            if slot.get("named_key"):  # in the named data, as the weights are (weights.ptd)
                data = _named(named, slot["named_key"], path)[1]
            else:
                start = const_offset + int(slot["offset"])
                data = blob[start:start + int(slot["size"])]
            scale = np.frombuffer(data, np.float32).astype(np.float64)
        return scale, int(params.get("channel_dim", 0))
    return None  # dynamic (per-token) quantization of an activation: not a constant


def _xnn_json(flatbuffer: bytes) -> dict:
    """The XNNGraph flatbuffer as JSON, decoded by executorch's flatc with the XNNPACK schema it serialised with."""
    from executorch.exir._serialize._flatbuffer import _flatc_decompile

    schema = resources.files("executorch.backends.xnnpack.serialization").joinpath("schema.fbs")
    with tempfile.TemporaryDirectory() as tmp, resources.as_file(schema) as schema_path:
        bin_path = Path(tmp, "graph.bin")
        bin_path.write_bytes(flatbuffer)
        _flatc_decompile(tmp, str(schema_path), str(bin_path), ["--raw-binary"])
        text = Path(tmp, "graph.json").read_text()
    # flatc writes non-finite floats (output_min_max of an unclamped node) as bare inf / nan
    return json.loads(re.sub(r"(?<=[\s:\[,])(-?)(inf|nan)\b", lambda m: m[1] + ("Infinity" if m[2] == "inf" else "NaN"), text))
