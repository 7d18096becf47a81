"""The constant tensors a build stores, read from its files by each target's own schema, for the weight audit
(`weight_audit.py`): one `StoredConstant` per distinct stored copy, with the graphs and tensor names using it.

TFLite: the flatbuffer's object API (`ai_edge_litert.schema_py_generated`, the schema LiteRT reads); one file
per graph or one `model.tflite` with a signature per graph (its subgraphs named by `signatureDefs`). A buffer is
one copy however many tensors (of however many subgraphs) point at it. ExecuTorch: `executorch_constants.py`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from minivlm.errors import ArtifactError


@dataclass
class StoredConstant:
    """One stored copy of a constant. `values` are what the runtime computes with: floats (fp16 widened), or
    int8 dequantized with the build's own `scale` (per `axis`, None: per tensor) and `zero_point`; `q` the
    stored integers then. `users`: (graph, tensor name) pairs reading this copy."""

    where: str  # file and storage slot, unique per copy in a build
    dtype: str  # as stored: float32, float16, int8, int32, ...
    shape: tuple[int, ...]
    values: np.ndarray
    nbytes: int
    users: list[tuple[str, str]] = field(default_factory=list)
    q: np.ndarray | None = None
    scale: np.ndarray | None = None
    zero_point: np.ndarray | None = None
    axis: int | None = None
    check_scale: bool = True  # int8 weights: the scale must be what the reference implies
    scale_dtype: str = "float32"  # as stored: a float16 scale is held to the fp16 rounding of the implied one

    @property
    def quantized(self) -> bool:
        return self.q is not None

    @property
    def floating(self) -> bool:
        return self.quantized or self.dtype in ("float32", "float16", "bfloat16")

    def label(self) -> str:
        graphs = sorted({g for g, _ in self.users})
        name = self.users[0][1] if self.users else "?"
        return f"{'/'.join(graphs)} tensor {name!r} {list(self.shape)} {self.dtype} ({self.where})"


def dequantized(q: np.ndarray, scale: np.ndarray, zero_point: np.ndarray, axis: int | None) -> np.ndarray:
    """(q - zero point) * scale in float64, per channel along `axis` (None or one scale: per tensor)."""
    s, z = np.asarray(scale, np.float64), np.asarray(zero_point, np.float64)
    if axis is not None and s.size > 1:
        view = [1] * q.ndim
        view[axis] = -1
        s, z = s.reshape(view), (z.reshape(view) if z.size > 1 else z)
    return (q.astype(np.float64) - z) * s


# TFLite TensorType -> numpy dtype (ai_edge_litert schema: FLOAT32 0, FLOAT16 1, INT32 2, UINT8 3, INT64 4,
# BOOL 6, INT16 7, INT8 9, FLOAT64 10).
_TFLITE_DTYPES = {0: np.float32, 1: np.float16, 2: np.int32, 3: np.uint8, 4: np.int64, 6: np.bool_, 7: np.int16,
                  9: np.int8, 10: np.float64}


def tflite_constants(folder: Path, files: dict[str, tuple[str, str | None]]) -> list[StoredConstant]:
    """Every buffer with data in the build's `.tflite` files. `files`: graph -> (file, signature or None)."""
    from ai_edge_litert import schema_py_generated as schema

    by_file: dict[str, list[tuple[str, str | None]]] = {}
    for graph, (file, signature) in files.items():
        by_file.setdefault(file, []).append((graph, signature))
    stored: list[StoredConstant] = []
    for file, graphs in by_file.items():
        raw = (folder / file).read_bytes()
        try:
            model = schema.ModelT.InitFromPackedBuf(raw, 0)
        except Exception as err:  # a corrupt flatbuffer raises whatever the decoder hit
            raise ArtifactError(f"{folder / file} is not a TFLite flatbuffer: {type(err).__name__}: {err}") from None
        subgraph_of = {(s.signatureKey.decode() if isinstance(s.signatureKey, bytes) else s.signatureKey): s.subgraphIndex
                       for s in (model.signatureDefs or [])}
        copies: dict[int, StoredConstant] = {}
        for graph, signature in graphs:
            if signature is None and len(model.subgraphs) != 1 and len(graphs) == 1:
                index = subgraph_of.get("serving_default", 0)
            elif signature is None:
                index = 0
            elif signature in subgraph_of:
                index = subgraph_of[signature]
            else:
                raise ArtifactError(f"{folder / file} has no signature {signature!r}; it has {sorted(subgraph_of)}")
            for tensor in model.subgraphs[index].tensors:
                data = _buffer_bytes(model.buffers[tensor.buffer], raw) if tensor.buffer else None
                if data is None or not len(data):
                    continue
                name = tensor.name.decode() if isinstance(tensor.name, bytes) else tensor.name
                if tensor.buffer not in copies:
                    copies[tensor.buffer] = _tflite_constant(f"{file} buffer {tensor.buffer}", tensor, data)
                copies[tensor.buffer].users.append((graph, name))
        stored += copies.values()
    return stored


def _buffer_bytes(buffer, raw: bytes) -> np.ndarray | None:
    if buffer.data is not None and len(buffer.data):
        return np.asarray(buffer.data, np.uint8)
    if getattr(buffer, "offset", 0) > 1 and buffer.size:  # stored after the flatbuffer (models over 2 GB)
        return np.frombuffer(raw, np.uint8, buffer.size, buffer.offset)
    return None


def _tflite_constant(where: str, tensor, data: np.ndarray) -> StoredConstant:
    dtype = _TFLITE_DTYPES.get(tensor.type)
    if dtype is None:
        raise ArtifactError(f"{where}: tensor type {tensor.type} is not one the weight audit reads")
    shape = tuple(int(d) for d in (tensor.shape if tensor.shape is not None else ()))
    array = np.frombuffer(data.tobytes(), dtype)
    array = array.reshape(shape) if int(np.prod(shape)) == array.size else array
    quant = tensor.quantization
    scale = None if quant is None or quant.scale is None or not len(quant.scale) else np.asarray(quant.scale, np.float64)
    if scale is not None and np.dtype(dtype).kind in "iu":
        zero = np.asarray(quant.zeroPoint if quant.zeroPoint is not None else [0], np.float64)
        axis = int(quant.quantizedDimension) if scale.size > 1 else None
        return StoredConstant(where, np.dtype(dtype).name, shape, dequantized(array, scale, zero, axis), array.nbytes,
                              q=array, scale=scale, zero_point=zero, axis=axis)
    return StoredConstant(where, np.dtype(dtype).name, shape, array, array.nbytes)
