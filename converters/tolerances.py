"""The parity tolerances a build is held to (DESIGN §5), one named constant per precision with its reason.

Every build records the row for its precision in `manifest.json`, so a device test replaying the goldens
reads the same numbers the Python parity check uses. Graph outputs are compared on the raw tensors the graph
returns (logits, features, keys/values); host steps on integer outputs must match exactly.
"""

from __future__ import annotations

from types import MappingProxyType

# fp32 on any backend: kernels differ only in summation order and fused multiply-adds, which moves the last
# few bits of a value; 1e-4 max-abs leaves room for that through a dozen layers while catching any real bug.
FP32_MAX_ABS = 1e-4
# fp16 (Core ML default, TFLite fp16 weights): 10-bit mantissas give ~3 decimal digits per op; 40 dB PSNR
# over a graph output is what an fp16 pipeline keeps when nothing overflows.
FP16_MIN_PSNR_DB = 40.0
# int8 (PT2E XNNPACK, TFLite dynamic range, Core ML int8 weights): 8-bit steps give ~48 dB per tensor at
# best; after a network 25 dB is the usual floor of a healthy post-training quantization.
INT8_MIN_PSNR_DB = 25.0
# Task-level bar for int8: quantization may flip a near-tie argmax now and then, never systematically.
INT8_MIN_IDENTICAL_CAPTIONS = 0.95
# Detections are matched by IoU (NMS order is unstable under tiny score changes) before comparing.
DETECTION_MATCH_IOU = 0.9

TOLERANCES = MappingProxyType(
    {
        "fp32": {"graph_max_abs": FP32_MAX_ABS, "host_integer_outputs": "exact", "detection_match_iou": DETECTION_MATCH_IOU,
                 "captions": "identical", "answers": "identical"},
        "fp16": {"graph_min_psnr_db": FP16_MIN_PSNR_DB, "host_integer_outputs": "exact",
                 "detection_match_iou": DETECTION_MATCH_IOU},
        "int8": {"graph_min_psnr_db": INT8_MIN_PSNR_DB, "host_integer_outputs": "exact",
                 "min_identical_captions": INT8_MIN_IDENTICAL_CAPTIONS, "detection_match_iou": DETECTION_MATCH_IOU},
    }
)


def tolerances_for(precision: str) -> dict:
    """The tolerance row of a precision, as recorded in a manifest."""
    return dict(TOLERANCES[precision])


__all__ = [
    "DETECTION_MATCH_IOU",
    "FP16_MIN_PSNR_DB",
    "FP32_MAX_ABS",
    "INT8_MIN_IDENTICAL_CAPTIONS",
    "INT8_MIN_PSNR_DB",
    "TOLERANCES",
    "tolerances_for",
]
