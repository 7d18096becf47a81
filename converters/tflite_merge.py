"""Several single-signature `.tflite` flatbuffers merged into one model with one signature per graph and one copy
of every weight.

The TFLite schema (tensorflow/compiler/mlir/lite/schema/schema.fbs, object API `ai_edge_litert.schema_py_generated`)
lets one model hold many subgraphs and name entry points into them (`SignatureDef`: key, subgraph index, input and
output tensor maps), with the constant data of every subgraph in one model-wide `buffers` list that tensors index.
Merging therefore:
- appends every model's subgraphs, shifting each subgraph index an operator holds (WHILE/IF/CALL_ONCE/CALL, the
  StableHLO region ops and composites' decomposition: every option field whose name contains "subgraph");
- unifies the operator codes (builtin code, custom code, version);
- keeps one buffer per distinct content: two buffers are the same only when their bytes are equal (sha256 to find a
  candidate, then the bytes compared), never by a tensor's shape or name, so two different weights of one shape stay
  two buffers; empty buffers (non-constant tensors) all become buffer 0, the schema's empty sentinel;
- writes each distinct table of quantization parameters once, every tensor with those parameters pointing to it;
- renames each model's one signature to its graph's name (tensor names and indices unchanged);
- keeps metadata entries that agree, `min_runtime_version` the highest of them.
Buffers that ai-edge-quantizer stores after the flatbuffer (`offset`/`size`) are read from there and stored inline.
What a merge cannot carry over correctly is refused (ConversionError): data in external files, large custom options,
debug metadata (its indices would have to be rewritten) and differing metadata of one name.
"""

from __future__ import annotations

import hashlib

import numpy as np

from minivlm.python_ref.errors import ConversionError

BUFFER_ALIGN = 16  # schema.fbs: Buffer.data is (force_align: 16), so weights map aligned for the kernels
RUNTIME_VERSION = b"min_runtime_version"


def _schema():
    from ai_edge_litert import schema_py_generated

    return schema_py_generated


def _aligned_buffer_type(schema):
    class AlignedBuffer(schema.BufferT):
        """A buffer whose data vector starts on a BUFFER_ALIGN boundary: the generated `BufferT.Pack` aligns only to
        the element size (1 byte)."""

        def Pack(self, builder):  # noqa: N802  flatbuffers' object API name
            data = None
            if self.data is not None and len(self.data):
                raw = np.ascontiguousarray(self.data, dtype=np.uint8).tobytes()
                builder.StartVector(1, len(raw), BUFFER_ALIGN)
                builder.head -= len(raw)
                builder.Bytes[builder.head:builder.head + len(raw)] = raw
                data = builder.EndVector()
            schema.BufferStart(builder)
            if data is not None:
                schema.BufferAddData(builder, data)
            return schema.BufferEnd(builder)

    return AlignedBuffer


def _shared_quantization_type(schema):
    class SharedQuantization(schema.QuantizationParametersT):
        """Quantization parameters written once per distinct content and referenced by every tensor that has them
        (a flatbuffer may point several tables at one sub-table): a per-channel int8 weight used by four graphs
        carries a float32 scale and an int64 zero point per channel, 366 kB for the demo model's word embeddings."""

        memo: dict

        def Pack(self, builder):  # noqa: N802  flatbuffers' object API name
            if self.details is not None:
                return super().Pack(builder)
            key = (self.quantizedDimension, *(None if v is None else np.asarray(v).tobytes()
                                              for v in (self.min, self.max, self.scale, self.zeroPoint)))
            if key not in self.memo:
                self.memo[key] = super().Pack(builder)
            return self.memo[key]

    return SharedQuantization


def _share_quantization(subgraphs, schema) -> None:
    shared, memo = _shared_quantization_type(schema), {}
    for sg in subgraphs:
        for tensor in sg.tensors or []:
            if tensor.quantization is not None:
                tensor.quantization.__class__ = shared
                tensor.quantization.memo = memo


class _Buffers:
    """The merged model's buffers: buffer 0 empty, then one per distinct byte content."""

    def __init__(self, schema) -> None:
        self._type = _aligned_buffer_type(schema)
        self.buffers = [self._type()]
        self._by_digest: dict[bytes, list[int]] = {}

    def add(self, data) -> int:
        if data is None or len(data) == 0:
            return 0
        raw = np.ascontiguousarray(data, dtype=np.uint8)
        digest = hashlib.sha256(raw).digest()
        for index in self._by_digest.get(digest, []):
            if np.array_equal(self.buffers[index].data, raw):  # equal bytes, not merely an equal digest
                return index
        buffer = self._type()
        buffer.data = raw
        self.buffers.append(buffer)
        self._by_digest.setdefault(digest, []).append(len(self.buffers) - 1)
        return len(self.buffers) - 1


def _buffer_data(model, data: bytes) -> list:
    """Every buffer's bytes: its `data` vector, or the `size` bytes at file `offset` after the flatbuffer (where
    ai-edge-quantizer writes quantized weights; schema.fbs Buffer.offset/size)."""
    out = []
    for b in model.buffers or []:
        if b.offset > 1:
            if b.offset + b.size > len(data):
                raise ConversionError(f"a TFLite buffer at bytes {b.offset}..{b.offset + b.size} lies past the end of "
                                      f"its {len(data)}-byte file (truncated?)")
            out.append(np.frombuffer(data, dtype=np.uint8, count=b.size, offset=b.offset))
        else:
            out.append(b.data)
    return out


def _check_mergeable(name: str, model) -> None:
    if len(model.signatureDefs or []) != 1:
        raise ConversionError(f"TFLite {name}: expected one signature to merge, found {len(model.signatureDefs or [])}")
    if model.externalBuffers or model.externalBufferGroups or any(b.offset == 1 for b in model.buffers or []):
        raise ConversionError(f"TFLite {name}: weights stored in external files cannot be merged")
    for sg in model.subgraphs:
        if sg.debugMetadataIndex != -1 or any(op.debugMetadataIndex != -1 for op in sg.operators or []):
            raise ConversionError(f"TFLite {name}: debug metadata cannot be merged (its indices are not remapped)")
        if any(op.largeCustomOptionsSize for op in sg.operators or []):
            raise ConversionError(f"TFLite {name}: large custom options (stored outside the flatbuffer) cannot be merged")
        if any(t.externalBuffer for t in sg.tensors or []):
            raise ConversionError(f"TFLite {name}: external tensor buffers cannot be merged")


def subgraph_fields(options) -> list[str]:
    """The fields of an operator's options object that hold subgraph indices (all and only those whose name
    contains "subgraph", as in schema.fbs)."""
    return [f for f in vars(options) if "subgraph" in f.lower()] if options is not None else []


def _shift_subgraph_indices(op, offset: int) -> None:
    for options in (op.builtinOptions, op.builtinOptions2):
        for f in subgraph_fields(options):
            value = getattr(options, f)
            if isinstance(value, (list, np.ndarray)):
                setattr(options, f, [int(v) + offset for v in value])
            elif value is not None:
                setattr(options, f, int(value) + offset)


def _version(raw: bytes) -> tuple[int, ...]:
    text = bytes(raw).rstrip(b"\0").decode("ascii", "replace")
    try:
        return tuple(int(p) for p in text.split("."))
    except ValueError:
        raise ConversionError(f"TFLite metadata {RUNTIME_VERSION.decode()} is {text!r}, not a dotted version") from None


def _merged_metadata(models: dict[str, object], contents: dict[str, list], buffers: _Buffers, schema) -> list:
    chosen: dict[bytes, bytes] = {}
    for name, model in models.items():
        for entry in model.metadata or []:
            data = contents[name][entry.buffer]
            raw = b"" if data is None else np.asarray(data, dtype=np.uint8).tobytes()
            key = bytes(entry.name)
            if key not in chosen or chosen[key] == raw:
                chosen[key] = raw
            elif key == RUNTIME_VERSION:
                chosen[key] = max(chosen[key], raw, key=_version)
            else:
                raise ConversionError(f"TFLite {name}: metadata {key.decode(errors='replace')!r} differs from another "
                                      f"graph's; cannot merge")
    merged = []
    for key, raw in chosen.items():
        entry = schema.MetadataT()
        entry.name, entry.buffer = key, buffers.add(np.frombuffer(raw, dtype=np.uint8))  # empty: buffer 0
        merged.append(entry)
    return merged


def read_model(data: bytes):
    """The `ModelT` (flatbuffer object API) of a `.tflite` file's bytes."""
    return _schema().ModelT.InitFromPackedBuf(bytearray(data), 0)


def merge(models: dict[str, bytes]) -> bytes:
    """One `.tflite` with a signature per entry of `models` (graph name -> flatbuffer of a one-signature model),
    in that order, the first graph's subgraph being the primary one. See the module docstring."""
    schema = _schema()
    parsed = {name: read_model(data) for name, data in models.items()}
    contents = {name: _buffer_data(model, models[name]) for name, model in parsed.items()}
    out = schema.ModelT()
    out.version = max(m.version for m in parsed.values())
    out.description = next(iter(parsed.values())).description
    out.operatorCodes, out.subgraphs, out.signatureDefs = [], [], []
    buffers = _Buffers(schema)
    codes: dict[tuple, int] = {}
    metadata_buffers: list[int] = []  # the deprecated Model.metadata_buffer list, remapped
    for name, model in parsed.items():
        _check_mergeable(name, model)
        buffer_map = [buffers.add(content) for content in contents[name]]
        metadata_buffers += [buffer_map[i] for i in model.metadataBuffer or [] if buffer_map[i] not in metadata_buffers]
        code_map = []
        for code in model.operatorCodes or []:
            key = (code.builtinCode, code.deprecatedBuiltinCode, code.customCode, code.version)
            if key not in codes:
                codes[key] = len(out.operatorCodes)
                out.operatorCodes.append(code)
            code_map.append(codes[key])
        offset = len(out.subgraphs)
        for i, sg in enumerate(model.subgraphs):
            for tensor in sg.tensors or []:
                tensor.buffer = buffer_map[tensor.buffer]
            for op in sg.operators or []:
                op.opcodeIndex = code_map[op.opcodeIndex]
                _shift_subgraph_indices(op, offset)
            sub = (sg.name or b"").decode(errors="replace")
            sg.name = name if i == 0 else f"{name}/{sub or i}"
            out.subgraphs.append(sg)
        signature = model.signatureDefs[0]
        signature.signatureKey, signature.subgraphIndex = name, signature.subgraphIndex + offset
        out.signatureDefs.append(signature)
    out.metadata = _merged_metadata(parsed, contents, buffers, schema)
    out.metadataBuffer = metadata_buffers or None
    out.buffers = buffers.buffers
    _share_quantization(out.subgraphs, schema)
    return _pack(out, schema)


def _pack(model, schema) -> bytes:
    import flatbuffers

    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def stored_buffers(data: bytes) -> list[bytes]:
    """The bytes of every non-empty buffer of a `.tflite` file, inside the flatbuffer or after it."""
    return [bytes(c) for c in _buffer_data(read_model(data), data) if c is not None and len(c)]


def weight_bytes(data: bytes) -> int:
    """Bytes of constant data (every non-empty buffer, inside or after the flatbuffer) in a `.tflite` file."""
    return sum(len(c) for c in stored_buffers(data))


__all__ = ["BUFFER_ALIGN", "merge", "read_model", "stored_buffers", "subgraph_fields", "weight_bytes"]
