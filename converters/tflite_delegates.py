"""Which TFLite ops the GPU and NNAPI delegates can take, from their documentation, not from an analyzer.

`ai_edge_litert`'s GPU compatibility analyzer reports "compatible" for models that are not, so
the report here checks a model's ops (from the interpreter) against these tables:
- GPU: the "Supported ops" list of the TFLite GPU delegate guide (tensorflow/lite/g3doc/performance/gpu.md,
  republished as ai.google.dev/edge/litert/performance/gpu): 16- and 32-bit float ops only. Ops the
  delegate's source accepts beyond that list are reported as not documented, i.e. not counted on.
- NNAPI: `NNAPIDelegateKernel::Validate` in tensorflow/lite/delegates/nnapi/nnapi_delegate.cc (the NNAPI
  guide lists no ops): every op it maps, with the first Android API level that accepts it
  (NNAPI 1.0 = 27, 1.1 = 28, 1.2 = 29, 1.3 = 30). Per-op type and shape conditions are not modelled,
  except hybrid (dynamic-range int8) ops, which Validate rejects before NNAPI 1.2.
XNNPACK is not predicted: it runs here, so `tflite.py` counts the nodes it actually took.
"""

from __future__ import annotations

from collections import Counter

GPU_DOCUMENTED_OPS = frozenset({
    "ADD", "AVERAGE_POOL_2D", "CONCATENATION", "CONV_2D", "DEPTHWISE_CONV_2D", "EXP", "FULLY_CONNECTED",
    "LOGICAL_AND", "LOGISTIC", "LSTM", "MAX_POOL_2D", "MAXIMUM", "MINIMUM", "MUL", "PAD", "PRELU", "RELU",
    "RELU6", "RESHAPE", "RESIZE_BILINEAR", "SOFTMAX", "STRIDED_SLICE", "SUB", "TRANSPOSE_CONV",
})

NNAPI_MIN_API = {
    **dict.fromkeys(("ADD", "MUL", "AVERAGE_POOL_2D", "MAX_POOL_2D", "L2_POOL_2D", "CONV_2D", "DEPTHWISE_CONV_2D",
                     "FULLY_CONNECTED", "HARD_SWISH", "SOFTMAX", "RESHAPE", "RESIZE_BILINEAR", "L2_NORMALIZATION",
                     "LOCAL_RESPONSE_NORMALIZATION", "LSH_PROJECTION", "CONCATENATION", "DEQUANTIZE", "FLOOR", "RELU",
                     "RELU_N1_TO_1", "RELU6", "LOGISTIC", "TANH", "RNN", "SPACE_TO_DEPTH", "DEPTH_TO_SPACE",
                     "EMBEDDING_LOOKUP", "HASHTABLE_LOOKUP"), 27),
    **dict.fromkeys(("SQUEEZE", "SUB", "DIV", "PAD", "PADV2", "SPACE_TO_BATCH_ND", "BATCH_TO_SPACE_ND",
                     "STRIDED_SLICE", "TRANSPOSE", "SVDF", "LSTM", "MEAN", "SQUARED_DIFFERENCE"), 28),
    **dict.fromkeys(("ARG_MAX", "ARG_MIN", "RESIZE_NEAREST_NEIGHBOR", "UNIDIRECTIONAL_SEQUENCE_LSTM",
                     "UNIDIRECTIONAL_SEQUENCE_RNN", "ABS", "EXP", "LOG", "RSQRT", "POW", "SLICE", "SIN",
                     "TRANSPOSE_CONV", "SQRT", "MAXIMUM", "MINIMUM", "CAST", "LEAKY_RELU", "PRELU", "TILE",
                     "LOGICAL_OR", "LOGICAL_AND", "LOGICAL_NOT", "LESS", "LESS_EQUAL", "GREATER", "GREATER_EQUAL",
                     "EQUAL", "NOT_EQUAL", "NEG", "TOPK_V2", "SELECT", "GATHER", "BIDIRECTIONAL_SEQUENCE_LSTM",
                     "EXPAND_DIMS", "SPLIT", "LOG_SOFTMAX", "QUANTIZE", "REDUCE_ANY", "REDUCE_MIN", "REDUCE_MAX",
                     "REDUCE_PROD", "SUM"), 29),
    **dict.fromkeys(("SPLIT_V", "ELU", "FILL", "PACK", "DENSIFY"), 30),
}
HYBRID_CAPABLE = frozenset({"FULLY_CONNECTED", "CONV_2D", "DEPTHWISE_CONV_2D", "BATCH_MATMUL", "EMBEDDING_LOOKUP"})
NNAPI_HYBRID_MIN_API = 29
SOURCES = {
    "gpu": "TFLite GPU delegate guide, 'Supported ops' (tensorflow/lite/g3doc/performance/gpu.md)",
    "nnapi": "tensorflow/lite/delegates/nnapi/nnapi_delegate.cc, NNAPIDelegateKernel::Validate",
}


def _is_hybrid(op: dict) -> bool:
    """A dynamic-range op: float activations in, int8 weights, float out."""
    types = [t.__name__ if hasattr(t, "__name__") else str(t) for t in op.get("operand_types", [])]
    return op["op_name"] in HYBRID_CAPABLE and "int8" in types and "float32" in types


def compatibility(ops: list[dict]) -> dict:
    """Per delegate: ops it takes and does not (by name, with counts), and for NNAPI the Android API level
    the supported ones need. `ops` are `Interpreter._get_ops_details()` entries of the undelegated model."""
    names = [op["op_name"] for op in ops]
    gpu_bad = Counter(n if not _is_hybrid(op) else f"{n} (hybrid int8)" for n, op in zip(names, ops)
                      if n not in GPU_DOCUMENTED_OPS or _is_hybrid(op))
    nnapi_bad = Counter(n for n in names if n not in NNAPI_MIN_API)
    levels = [NNAPI_MIN_API[n] for n in names if n in NNAPI_MIN_API]
    levels += [NNAPI_HYBRID_MIN_API for op in ops if _is_hybrid(op) and op["op_name"] in NNAPI_MIN_API]
    return {
        "gpu": {"source": SOURCES["gpu"], "supported": len(ops) - sum(gpu_bad.values()),
                "unsupported": sum(gpu_bad.values()), "unsupported_ops": dict(gpu_bad.most_common())},
        "nnapi": {"source": SOURCES["nnapi"], "supported": len(ops) - sum(nnapi_bad.values()),
                  "unsupported": sum(nnapi_bad.values()), "unsupported_ops": dict(nnapi_bad.most_common()),
                  "min_android_api": max(levels, default=27)},
    }


__all__ = ["GPU_DOCUMENTED_OPS", "NNAPI_MIN_API", "SOURCES", "compatibility"]
