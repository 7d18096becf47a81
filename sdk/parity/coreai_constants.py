"""The constants a Core AI build stores, for the weight audit, read from the asset's MLIR program
(`coreai.authoring.AIModelAsset.load(...).program`, its module `_module._mlir_module`).

How Core AI stores them. coreai-torch turns every parameter, buffer and lifted constant a function reads into a
`coreai.constant` op of that function's `coreai.graph`, its value an MLIR elements attribute: a small tensor (or
one value repeated, a splat) inline in the attribute (`DenseElementsAttr`), a larger one as `dense_resource<handle>`,
whose bytes are one blob of the module's `dialect_resources` section. MLIR names a blob by a hash of its bytes
and uniques attributes per module, so every function holding the same tensor (the word embeddings of each fusion
graph) refers to one blob, and identical inline attributes are one entry of the bytecode's attribute table.
One stored copy is therefore one resource blob (by handle) or one distinct inline attribute, however many
constant ops of however many functions use it. The MLIR Python bindings read inline values (the buffer protocol)
but not a blob's bytes: those come from the module's printed form, where each blob is hex, its first four bytes
the blob's alignment.

int8 weights (converters/coreai.py) are `coreai.blockwise_shift_scale(data, scale, offset1, offset2)`, output =
scale * (data - offset1) + offset2 blockwise, every operand a constant: one quantized `StoredConstant` per
(data, scale, offset1, offset2), `q` = data, `zero_point` = offset1, `axis` the one axis the scale is not 1 on
(None: one scale), values dequantized in float64 plus offset2. The scale and offsets are part of that constant
(their bytes counted with it), not constants of their own, as scales are in the other targets' readers. A
splat's bytes are one element's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from minivlm.errors import ArtifactError

from .stored_constants import StoredConstant, dequantized

# MLIR element type (as printed) -> numpy
_DTYPES = {"f32": np.float32, "f16": np.float16, "f64": np.float64, "i1": np.bool_, "si8": np.int8, "i8": np.int8,
           "ui8": np.uint8, "si16": np.int16, "i16": np.int16, "ui16": np.uint16, "si32": np.int32, "i32": np.int32,
           "ui32": np.uint32, "si64": np.int64, "i64": np.int64}
_QUANTIZE_OP = "coreai.blockwise_shift_scale"
_RESOURCE_REF = re.compile(r"dense_resource<([^>]+)>")
_BLOB = re.compile(r'([A-Za-z_][\w.]*)\s*:\s*"0x([0-9A-Fa-f]*)"')
_TORCH_NODE = re.compile(r'identifiers = \["([^"]+)"')
_CALL_STACK = re.compile(r'"call_stack": \[([^\]]*)\]')


@dataclass
class _Const:
    """One `coreai.constant` op: its graph, a name for it and the key of the stored copy it reads."""

    graph: str
    name: str
    key: tuple
    attr: object
    op: object


def coreai_constants(folder: Path, manifest: dict) -> list[StoredConstant]:
    """Every stored constant of the build's Core AI asset(s), one per stored copy (module doc)."""
    by_file: dict[str, dict[str, str]] = {}
    for graph, entry in manifest["graphs"].items():
        by_file.setdefault(entry["file"], {})[entry.get("function", graph)] = graph
    stored: list[StoredConstant] = []
    for file, graphs in by_file.items():
        stored += asset_constants(folder / file, file, graphs)
    return stored


def asset_constants(path: Path, file: str, graphs: dict[str, str]) -> list[StoredConstant]:
    """The constants of one asset; `graphs`: function -> graph name (a function the manifest does not name is
    reported under its own name: its constants are stored all the same)."""
    from minivlm.converters.coreai_asset import quiet_import

    quiet_import()
    from coreai.authoring import AIModelAsset

    try:
        module = AIModelAsset.load(path).program._module._mlir_module
    except Exception as err:  # coreai's native reader raises RuntimeError and others
        first = str(err).splitlines()[0] if str(err) else ""
        raise ArtifactError(f"{path} is not a Core AI asset coreai can read: {type(err).__name__}: {first}") from None
    consts, quantizers = _walk(module, graphs)
    blobs = _resource_blobs(module) if any(c.key[0] == "resource" for c in consts.values()) else {}
    reader = _Values(blobs, path)
    copies: dict[tuple, StoredConstant] = {}
    quantized_parts: set[tuple] = set()
    for op in quantizers:
        parts = [consts.get(_op_key(v.owner)) for v in op.operands]
        if len(parts) != 4 or any(p is None for p in parts):
            raise ArtifactError(f"{path}: a {_QUANTIZE_OP} whose operands are not four constants")
        key = tuple(p.key for p in parts)
        if key not in copies:
            copies[key] = _quantized(file, parts, reader, path)
        copies[key].users.append((parts[0].graph, parts[0].name))
        quantized_parts.update(key)
    for c in consts.values():
        if c.key in quantized_parts and all(u.owner.name == _QUANTIZE_OP for u in c.op.result.uses):
            continue  # part of a quantized weight above
        if c.key not in copies:
            values = reader.values(c.attr, c.key)
            copies[c.key] = StoredConstant(_where(file, c.key), values.dtype.name, values.shape, _widened(values),
                                           _stored_bytes(c.attr, values))
        copies[c.key].users.append((c.graph, c.name))
    return list(copies.values())


def _walk(module, graphs: dict[str, str]) -> tuple[dict, list]:
    """Every constant op (keyed by the op) with its graph and stored copy, and every quantizing op."""
    from coreai._compiler.ir import DenseResourceElementsAttr, WalkResult

    consts: dict[object, _Const] = {}
    quantizers: list = []
    inline: dict[object, int] = {}

    def visit(op) -> WalkResult:
        if op.name == _QUANTIZE_OP:
            quantizers.append(op)
        elif op.name == "coreai.constant":
            attr = op.attributes["value"]
            if DenseResourceElementsAttr.isinstance(attr):
                key = ("resource", _RESOURCE_REF.search(str(attr)).group(1))
            else:  # MLIR uniques attributes: equal values of equal type are one attribute, one table entry
                key = ("inline", inline.setdefault(attr, len(inline)), str(attr.type))
            consts[_op_key(op)] = _Const(graphs.get(_graph_of(op), _graph_of(op)), _name(op), key, attr, op)
        return WalkResult.ADVANCE

    module.operation.walk(visit)
    return consts, quantizers


def _op_key(op):
    return getattr(op, "operation", op)


def _graph_of(op) -> str:
    parent = op.parent
    while parent is not None and parent.name != "coreai.graph":
        parent = parent.parent
    return "?" if parent is None else str(parent.attributes["sym_name"]).strip('"')


def _name(op) -> str:
    """The torch node the constant was made for and its module path, from the op's debug location
    (`embedding in CaptionStepGraph$1/TextEmbeddings$1/Embedding$1`)."""
    loc = str(op.location)
    node, stack = _TORCH_NODE.search(loc), _CALL_STACK.search(loc)
    modules = "/".join(reversed(re.findall(r'"([^"]+)"', stack.group(1)))) if stack else ""
    name = node.group(1) if node else "constant"
    return f"{name} in {modules}" if modules else name


def _where(file: str, key: tuple) -> str:
    if key[0] == "resource":
        return f"{file} resource {key[1]}"
    return f"{file} inline attribute {key[1]}"


def _resource_blobs(module) -> dict[str, bytes]:
    """handle -> bytes of every resource blob, from the printed module's `dialect_resources` section (inline
    elements elided: they are read from their attributes)."""
    text = module.operation.get_asm(large_elements_limit=0, large_resource_limit=1 << 62, assume_verified=True)
    _, found, trailer = text.rpartition("dialect_resources:")
    if not found:
        return {}
    # a printed blob is its alignment (4 bytes, little-endian), then its data
    return {name: bytes.fromhex(payload)[4:] for name, payload in _BLOB.findall(trailer)}


class _Values:
    """Reads a constant attribute's values as numpy, in its stored dtype and shape."""

    def __init__(self, blobs: dict[str, bytes], path: Path) -> None:
        self.blobs, self.path = blobs, path

    def values(self, attr, key: tuple) -> np.ndarray:
        from coreai._compiler.ir import DenseElementsAttr

        kind = str(attr.type.element_type)
        dtype = _DTYPES.get(kind)
        if dtype is None:
            raise ArtifactError(f"{self.path}: a constant of element type {kind}, which the weight audit does not read")
        shape = tuple(int(d) for d in attr.type.shape)
        count = int(np.prod(shape)) if shape else 1
        if key[0] == "resource":
            data = self.blobs.get(key[1])
            if data is None or len(data) != count * np.dtype(dtype).itemsize:
                raise ArtifactError(f"{self.path}: resource {key[1]} holds {None if data is None else len(data)} bytes, "
                                    f"not the {count * np.dtype(dtype).itemsize} of its {attr.type}")
            return np.frombuffer(data, dtype).reshape(shape)
        dense = DenseElementsAttr(attr)
        array = np.array(dense, copy=True)  # the buffer protocol; a splat gives its value, or it repeated
        if array.size != count and dense.is_splat and array.size:
            array = np.full(shape, array.reshape(-1)[0], array.dtype)
        if array.size != count:
            raise ArtifactError(f"{self.path}: an inline constant of {attr.type} reads as {array.size} values")
        return array.astype(dtype, copy=False).reshape(shape)


def _stored_bytes(attr, values: np.ndarray) -> int:
    """A splat stores its one value; anything else every element."""
    from coreai._compiler.ir import DenseElementsAttr

    splat = DenseElementsAttr.isinstance(attr) and DenseElementsAttr(attr).is_splat
    return values.itemsize if splat else values.nbytes


def _widened(values: np.ndarray) -> np.ndarray:
    return values.astype(np.float32) if values.dtype == np.float16 else values


def _quantized(file: str, parts: list[_Const], reader: _Values, path: Path) -> StoredConstant:
    q, scale, offset1, offset2 = (reader.values(p.attr, p.key) for p in parts)
    if q.dtype.kind not in "iu" or scale.ndim != q.ndim:
        raise ArtifactError(f"{path}: {_QUANTIZE_OP} of {q.dtype} data with a rank-{scale.ndim} scale; the weight "
                            f"audit reads integer data with a scale of the same rank")
    channel = [d for d in range(q.ndim) if scale.shape[d] != 1]
    if len(channel) > 1 or any(scale.shape[d] != q.shape[d] for d in channel):
        raise ArtifactError(f"{path}: {_QUANTIZE_OP} of {list(q.shape)} data with {list(scale.shape)} scales (blocks); "
                            f"the weight audit reads one scale per tensor or per channel")
    axis = channel[0] if channel else None
    flat = lambda a: np.asarray(a, np.float64).reshape(-1)  # noqa: E731
    values = dequantized(q, flat(scale), flat(offset1), axis)
    values = values + (flat(offset2).reshape([-1 if d == axis else 1 for d in range(q.ndim)]) if axis is not None
                       else flat(offset2)[0])
    where = f"{_where(file, parts[0].key)} (scale {_where(file, parts[1].key).split(' ', 1)[1]})"
    nbytes = sum(_stored_bytes(p.attr, v) for p, v in zip(parts, (q, scale, offset1, offset2)))
    return StoredConstant(where, q.dtype.name, q.shape, values, nbytes, q=q, scale=flat(scale),
                          zero_point=flat(offset1), axis=axis, scale_dtype=scale.dtype.name)
