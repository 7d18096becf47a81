"""The parity tolerances a build is held to (docs/ARCHITECTURE.md §8): every bound is a named constant with a
one-line reason, and each target × precision picks its row from them.

Every build records its row in `manifest.json` (constant name, value, bound, reason), so a device test
replaying the goldens reads the same numbers that `minivlm parity` prints. Graph outputs are compared on the
raw tensors the graph returns (features, logits, keys/values), each on real inputs the reference produced;
tasks end to end (the build's own detections feed its own fusion graphs).
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType


@dataclass(frozen=True)
class Limit:
    """One tolerance: the constant's name, its value, whether a measurement must stay at most ("max") or at
    least ("min") that value, and why that value."""

    name: str
    value: float
    bound: str  # "max" | "min"
    reason: str

    def holds(self, measured: float) -> bool:
        return measured <= self.value if self.bound == "max" else measured >= self.value

    def describe(self) -> str:
        """`<= 0.0001` or `>= 40`: the tolerance as a report prints it."""
        return f"{'<=' if self.bound == 'max' else '>='} {self.value:g}"

    def as_json(self) -> dict:
        return {"limit": self.name, "value": self.value, "bound": self.bound, "reason": self.reason}


LIMITS: dict[str, Limit] = {}


def _limit(name: str, value: float, bound: str, reason: str) -> float:
    LIMITS[name] = Limit(name, value, bound, reason)
    return value


# --- per graph: every output of every graph, on the reference's own inputs ------------------------------------

FP32_MAX_ABS = _limit(
    "FP32_MAX_ABS", 1e-4, "max",
    "fp32 kernels differ only in summation order and FMAs (~1e-5 of an output's peak); 1e-4 of the peak catches any real bug")
FP32_MIN_COSINE = _limit(
    "FP32_MIN_COSINE", 0.99999, "min",
    "a correct fp32 graph keeps each output's direction to 5 nines; a swapped or mis-wired tensor falls far below")
FP16_MIN_PSNR_DB = _limit(
    "FP16_MIN_PSNR_DB", 40.0, "min",
    "10-bit mantissas keep ~3 digits per op; 40 dB over an output is what an fp16 graph keeps when nothing overflows")
INT8_MIN_PSNR_DB = _limit(
    "INT8_MIN_PSNR_DB", 25.0, "min",
    "8-bit steps give ~48 dB per tensor at best; after a network 25 dB is the floor of a healthy post-training quantization")
FP16_MIN_COSINE = _limit(
    "FP16_MIN_COSINE", 0.999, "min",
    "fp16 rounding bends an output's direction by ~1e-3 rad at most; a wrong weight or wiring bends it far more")
INT8_MIN_COSINE = _limit(
    "INT8_MIN_COSINE", 0.98, "min",
    "the worst single call of an int8 graph (~14 dB SQNR); 25 dB PSNR is the bar over all calls, one image may be noisier")

# --- per host step: the build's graph outputs through python_ref's host code --------------------------------

HOST_EXACT = _limit(
    "HOST_EXACT", 1.0, "min",
    "with fp32 graphs the integer host outputs (kept proposals, labels, token ids) must be identical on every image")
FP32_MIN_SAME_PROPOSALS = _limit(
    "FP32_MIN_SAME_PROPOSALS", 0.95, "min",
    "the cut at the 200th of thousands of near-equal low objectness scores may swap on a rare image; the regions must not")
PROPOSAL_MAX_SHIFT_PX = _limit(
    "PROPOSAL_MAX_SHIFT_PX", 0.5, "max",
    "kept proposals overlap each other by IoU < 0.7 (RPN NMS): one within half a pixel of the reference's is the same anchor's")

# --- per task: end to end, the build's detections feeding its own fusion graphs -----------------------------

DETECTION_MATCH_IOU = _limit(
    "DETECTION_MATCH_IOU", 0.9, "min",
    "detections are paired by IoU and label (NMS order is unstable under tiny score changes), never index by index")
LOSSY_DETECTION_MATCH_IOU = _limit(
    "LOSSY_DETECTION_MATCH_IOU", 0.5, "min",
    "fp16/int8 may move a box by a few pixels; it is still the same detection at the task's own criterion (mAP@0.5)")
FP32_MIN_AGREEMENT = _limit(
    "FP32_MIN_AGREEMENT", 1.0, "min",
    "fp32 moves outputs by ~1e-5 of their scale: every detection, tag, caption token and answer must be the reference's")
FP32_MAX_SCORE_DIFF = _limit(
    "FP32_MAX_SCORE_DIFF", 1e-3, "max",
    "end to end a score passes two graphs, a box decode and RoIAlign: 3e-5 on the demo in fp32; a real bug moves it by 1e-2+")
FP16_MIN_AGREEMENT = _limit(
    "FP16_MIN_AGREEMENT", 0.95, "min",
    "fp16 may flip a near-tie argmax on a rare image, never systematically")
INT8_MIN_IDENTICAL_CAPTIONS = _limit(
    "INT8_MIN_IDENTICAL_CAPTIONS", 0.95, "min",
    "quantization may flip a near-tie argmax now and then, never systematically")
INT8_MIN_AGREEMENT = _limit(
    "INT8_MIN_AGREEMENT", 0.95, "min",
    "detections, tags and answers meet the caption bar: an occasional near-tie flip, no systematic loss")
LOSSY_MAX_MEAN_SCORE_DIFF = _limit(
    "LOSSY_MAX_MEAN_SCORE_DIFF", 0.02, "max",
    "fp16/int8 move a probability by ~1e-2 on average (more near a decision boundary); a head that no longer agrees moves far more")

# --- per layer (Core AI: every node of a graph against the same program in torch, `minivlm.parity.layers`) -----

LAYER_MIN_PSNR_DB = _limit(
    "LAYER_MIN_PSNR_DB", 60.0, "min",
    "each layer against the program it was converted from, both in float32: layers measured 108-160 dB (an add, sub, "
    "sum or mean against its operands' peak, the scale float32 rounds it at); a mis-lowered or edited layer reads below 40 dB")

LAYER_FP16_MIN_PSNR_DB = _limit(
    "LAYER_FP16_MIN_PSNR_DB", 40.0, "min",
    "each layer of a Core ML fp16/int8 build in the SDK's executor against its program in torch float32: float16 "
    "rounding (and int8 weights) accumulated up to that layer measured 60-67 dB (fp16) and 47-56 dB (int8) at the worst "
    "layer of each graph; an edited weight, a swapped operation or a changed axis reads below 30 dB at its own layer")

# Which per-layer bound each target x precision with per-layer rows is held to (`minivlm.parity.layers`).
LAYER_LIMITS = MappingProxyType({
    ("coreai", "fp32"): "LAYER_MIN_PSNR_DB",
    ("coreai", "int8"): "LAYER_MIN_PSNR_DB",  # the reference widens the asset's int8 weights: fp32 against fp32
    ("coreml", "fp32"): "LAYER_MIN_PSNR_DB",
    ("coreml", "fp16"): "LAYER_FP16_MIN_PSNR_DB",
    ("coreml", "int8"): "LAYER_FP16_MIN_PSNR_DB",
})

# --- fp16 range (before conversion, on the reference) ---------------------------------------------------------

FP16_MAX = 65504.0  # the largest finite float16
FP16_RANGE_MARGIN = _limit(
    "FP16_RANGE_MARGIN", 10.0, "min",
    "a tensor within 10x of the fp16 maximum on real inputs can overflow to inf on a brighter photo or a longer text")


# --- rows per target x precision ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Tolerance:
    """The bounds of one target × precision, each a Limit of this module (None: not checked at that precision).

    graph_max_abs: max |build - ref| / max |ref| of each graph output; graph_min_psnr_db: PSNR of each output
    with peak max |ref|; graph_min_cosine: cosine of each call's output; host_exact: share of images whose
    integer host outputs are identical (region labels and indices, token ids); same_proposals: share of images
    keeping the same RPN proposals (each box within proposal_max_shift); detections: share of detections paired
    (IoU >= detection_match_iou, same label) both ways; tags/captions/answers: share identical; score_max_diff /
    score_mean_diff: largest / mean change of a paired detection's score or of a match probability.
    """

    graph_max_abs: Limit | None
    graph_min_psnr_db: Limit | None
    graph_min_cosine: Limit
    host_exact: Limit | None
    same_proposals: Limit | None
    proposal_max_shift: Limit
    detection_match_iou: Limit
    detections: Limit
    tags: Limit
    captions: Limit
    answers: Limit
    score_max_diff: Limit | None
    score_mean_diff: Limit | None

    def as_json(self) -> dict:
        return {key: (limit.as_json() if limit is not None else None) for key, limit in vars(self).items()}


def _row(**names: str | None) -> Tolerance:
    """A row from the names of its limits (None: not checked at that precision)."""
    names = {"proposal_max_shift": "PROPOSAL_MAX_SHIFT_PX", **names}
    return Tolerance(**{key: LIMITS[name] if name is not None else None for key, name in names.items()})


_FP32 = _row(graph_max_abs="FP32_MAX_ABS", graph_min_psnr_db=None, graph_min_cosine="FP32_MIN_COSINE",
             host_exact="HOST_EXACT", same_proposals="FP32_MIN_SAME_PROPOSALS", detection_match_iou="DETECTION_MATCH_IOU",
             detections="FP32_MIN_AGREEMENT", tags="FP32_MIN_AGREEMENT", captions="FP32_MIN_AGREEMENT",
             answers="FP32_MIN_AGREEMENT", score_max_diff="FP32_MAX_SCORE_DIFF", score_mean_diff=None)
_FP16 = _row(graph_max_abs=None, graph_min_psnr_db="FP16_MIN_PSNR_DB", graph_min_cosine="FP16_MIN_COSINE",
             host_exact=None, same_proposals=None, detection_match_iou="LOSSY_DETECTION_MATCH_IOU",
             detections="FP16_MIN_AGREEMENT", tags="FP16_MIN_AGREEMENT", captions="FP16_MIN_AGREEMENT",
             answers="FP16_MIN_AGREEMENT", score_max_diff=None, score_mean_diff="LOSSY_MAX_MEAN_SCORE_DIFF")
_INT8 = _row(graph_max_abs=None, graph_min_psnr_db="INT8_MIN_PSNR_DB", graph_min_cosine="INT8_MIN_COSINE",
             host_exact=None, same_proposals=None, detection_match_iou="LOSSY_DETECTION_MATCH_IOU",
             detections="INT8_MIN_AGREEMENT", tags="INT8_MIN_AGREEMENT", captions="INT8_MIN_IDENTICAL_CAPTIONS",
             answers="INT8_MIN_AGREEMENT", score_max_diff=None, score_mean_diff="LOSSY_MAX_MEAN_SCORE_DIFF")

# Every target x precision that `minivlm-convert` can build (converters/targets.py). Core ML int8 computes in
# fp16 with int8 weights; TFLite fp16 stores fp16 weights and computes in fp32; both are held to their
# lower-precision part's row; so is Core AI int8 (int8 weights, float32 compute).
TOLERANCES = MappingProxyType({
    ("executorch", "fp32"): _FP32,
    ("executorch", "int8"): _INT8,
    ("tflite", "fp32"): _FP32,
    ("tflite", "fp16"): _FP16,
    ("tflite", "int8"): _INT8,
    ("coreml", "fp32"): _FP32,
    ("coreml", "fp16"): _FP16,
    ("coreml", "int8"): _INT8,
    ("coreai", "fp32"): _FP32,
    ("coreai", "int8"): _INT8,
})


def tolerance(target: str, precision: str) -> Tolerance:
    """The row of a target × precision."""
    return TOLERANCES[(target, precision)]


def tolerances_for(target: str, precision: str) -> dict:
    """The row of a target × precision as recorded in a manifest (each limit's name, value, bound, reason)."""
    return tolerance(target, precision).as_json()


__all__ = [
    "DETECTION_MATCH_IOU",
    "FP16_MAX",
    "FP16_MIN_COSINE",
    "FP16_MIN_AGREEMENT",
    "FP16_MIN_PSNR_DB",
    "FP16_RANGE_MARGIN",
    "FP32_MAX_ABS",
    "FP32_MAX_SCORE_DIFF",
    "FP32_MIN_AGREEMENT",
    "FP32_MIN_COSINE",
    "HOST_EXACT",
    "INT8_MIN_AGREEMENT",
    "INT8_MIN_COSINE",
    "INT8_MIN_IDENTICAL_CAPTIONS",
    "INT8_MIN_PSNR_DB",
    "FP32_MIN_SAME_PROPOSALS",
    "LIMITS",
    "LOSSY_DETECTION_MATCH_IOU",
    "LAYER_FP16_MIN_PSNR_DB",
    "LAYER_LIMITS",
    "LAYER_MIN_PSNR_DB",
    "LOSSY_MAX_MEAN_SCORE_DIFF",
    "PROPOSAL_MAX_SHIFT_PX",
    "Limit",
    "TOLERANCES",
    "Tolerance",
    "tolerance",
    "tolerances_for",
]
