"""The weight audit's matching rules (sdk/parity/weight_audit.py) on synthetic constants: layouts, int8 steps and
scales, duplicates, the small-constant rule. Expected int8 values come from numpy's own symmetric quantization
here, not from the code under test."""

import numpy as np
import torch

from minivlm.parity.reference_constants import RefTensor, reference_tensors
from minivlm.python_ref.bifpn import SeparableConvBN
from minivlm.parity.stored_constants import StoredConstant, dequantized
from minivlm.parity.weight_audit import SMALL, audit, not_audited

RNG = np.random.default_rng(0)


def _ref(name, values, derived=False):
    return RefTensor(name, values.astype(np.float32), derived, {name}, {"g"})


def _fp32(values, where="f buffer 1", name="t"):
    v = np.ascontiguousarray(values, np.float32)
    return StoredConstant(where, "float32", v.shape, v, v.nbytes, [("g", name)])


def _int8(w, axis=0, where="f buffer 1", scale=None):
    """Symmetric per-channel int8 of `w` along `axis`, as XNNPACK and LiteRT quantize: scale = max|w| / 127."""
    other = tuple(a for a in range(w.ndim) if a != axis)
    amax = np.max(np.abs(w), axis=other, keepdims=True)
    s = (amax / 127).astype(np.float32) if scale is None else scale
    q = np.clip(np.round(w / s), -127, 127).astype(np.int8)
    flat = s.reshape(-1).astype(np.float64)
    zero = np.zeros(1)
    return StoredConstant(where, "int8", q.shape, dequantized(q, flat, zero, axis), q.nbytes, [("g", "w")],
                          q=q, scale=flat, zero_point=zero, axis=axis)


def test_conv_weight_stored_ohwi_matches_exactly_and_a_changed_value_fails():
    w = RNG.standard_normal((8, 4, 3, 3)).astype(np.float32)
    refs = {"conv.weight": _ref("conv.weight", w)}
    ok = audit([_fp32(w.transpose(0, 2, 3, 1))], refs, one_weights_file=False)
    assert ok.passed and ok.matched == 1 and ok.worst_error == 0
    bad = w.transpose(0, 2, 3, 1).copy()
    bad.reshape(-1)[100] = np.nextafter(bad.reshape(-1)[100], np.float32(9))  # one ulp: fp32 must be exact
    result = audit([_fp32(bad, name="conv")], refs, one_weights_file=False)
    assert not result.passed
    assert "'conv'" in result.reason() and "nearest conv.weight: 1 of 288 values differ" in result.reason()


def test_int8_within_half_a_step_passes_two_steps_fails_and_a_wrong_scale_fails():
    w = RNG.standard_normal((16, 32)).astype(np.float32)
    refs = {"fc.weight": _ref("fc.weight", w)}
    assert audit([_int8(w)], refs, one_weights_file=False).passed
    moved = _int8(w)
    moved.q[3, 5] += 2 if moved.q[3, 5] < 120 else -2
    moved.values = dequantized(moved.q, moved.scale, moved.zero_point, 0)
    result = audit([moved], refs, one_weights_file=False)
    assert not result.passed and "1 of 512 values differ" in result.reason()
    amax = np.max(np.abs(w), axis=1, keepdims=True)
    off = _int8(w, scale=(amax / 127 * 1.01).astype(np.float32))  # values still round back: only the scale is wrong
    result = audit([off], refs, one_weights_file=False)
    assert not result.passed and "scale off by" in result.reason()


def test_duplicates_fail_only_with_one_weights_file_and_equal_values_are_not_duplicates():
    w = RNG.standard_normal((32, 32)).astype(np.float32)
    refs = {"a": _ref("a", w)}
    two = [_fp32(w, "x.tflite buffer 1"), _fp32(w, "y.tflite buffer 4")]
    per_graph = audit(two, refs, one_weights_file=False)
    assert per_graph.passed and per_graph.duplicates and per_graph.duplicates[0].startswith("a x2")
    shared = audit(two, refs, one_weights_file=True)
    assert not shared.passed and "stored more than once: a x2" in shared.reason()
    ones = np.ones(SMALL, np.float32)  # two LayerNorm weights at identity: two reference tensors, two copies
    refs2 = {"ln1": _ref("ln1", ones), "ln2": _ref("ln2", ones)}
    assert not audit([_fp32(ones, "f buffer 1"), _fp32(ones, "f buffer 2")], refs2, one_weights_file=True).duplicates


def test_a_weight_merged_into_another_of_the_same_shape_is_missing():
    a, b = (RNG.standard_normal((16, 16)).astype(np.float32) for _ in range(2))
    refs = {"a": _ref("a", a), "b": _ref("b", b)}
    result = audit([_fp32(a)], refs, one_weights_file=False)  # both layers read the copy of `a`
    assert not result.passed and result.missing == ["b"] and "reference weight b is in no stored constant" in result.reason()


def test_small_untraced_constants_are_counted_not_failed_and_derived_constants_get_ulps():
    shape_operand = StoredConstant("f buffer 9", "int32", (4,), np.array([1, 3, 1, 16], np.int32), 16, [("g", "shape")])
    w = RNG.standard_normal((8, 16)).astype(np.float32)
    folded = (w * np.float32(1.0000001)).astype(np.float32)  # a converter's own product: a few ulps away
    refs = {"folded": _ref("folded", w, derived=True)}
    result = audit([shape_operand, _fp32(folded)], refs, one_weights_file=False)
    assert result.passed and result.untraced_bytes == 16 and result.matched == 1
    assert not audit([_fp32(w * 1.001)], refs, one_weights_file=False).passed


class _SeparableConv(torch.nn.Module):
    """The BiFPN's separable convolution (depthwise 3x3 -> pointwise 1x1 with bias -> BN) at the paper's width,
    with BN statistics a trained model would have."""

    def __init__(self, channels=SMALL):
        super().__init__()
        torch.manual_seed(0)
        self.conv = SeparableConvBN(channels, bn_eps=1e-3)
        bn = self.conv.bn
        with torch.no_grad():
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.normal_()
            bn.running_mean.normal_()
            bn.running_var.uniform_(0.5, 2.0)
            self.conv.conv_pw.bias.normal_()

    def forward(self, x):
        return (self.conv(x),)

    def example_inputs(self, batch):
        return (torch.randn(batch, self.conv.conv_pw.in_channels, 8, 8),)


def test_a_pointwise_conv_bias_folded_through_its_batch_norm_is_traced_and_one_dropped_fails():
    model = _SeparableConv().eval()
    refs = reference_tensors(model, {"g": model}, {"g": 1})
    c = model.conv
    w, b = c.conv_pw.weight.detach().double().numpy(), c.conv_pw.bias.detach().double().numpy()
    gamma, beta, mean, var = (t.detach().double().numpy() for t in (c.bn.weight, c.bn.bias, c.bn.running_mean, c.bn.running_var))
    scale = gamma / np.sqrt(var + 1e-3)  # the fold written out here in float64, as a converter folds it
    folded_w = (w * scale[:, None, None, None]).astype(np.float32).transpose(0, 2, 3, 1)  # OHWI, as TFLite stores it
    folded_b = ((b - mean) * scale + beta).astype(np.float32)
    dw = c.conv_dw.weight.detach().numpy().transpose(1, 2, 3, 0)  # depthwise 1HWC
    result = audit([_fp32(dw, "f buffer 1"), _fp32(folded_w, "f buffer 2"), _fp32(folded_b, "f buffer 3")], refs,
                   one_weights_file=True)
    assert result.passed and not result.unmatched and not result.missing, result.reason()
    # the BN folded without the convolution's bias: the bias is lost, and the stored one traces to nothing
    dropped = ((0 - mean) * scale + beta).astype(np.float32)
    result = audit([_fp32(dw, "f buffer 1"), _fp32(folded_w, "f buffer 2"), _fp32(dropped, "f buffer 3")], refs,
                   one_weights_file=True)
    assert not result.passed and "f buffer 3" in result.reason() and "conv.conv_pw.bias" in result.missing


def test_builds_whose_weights_the_audit_cannot_open_are_not_checked_rather_than_failed():
    # The ExecuTorch Core ML delegate keeps its weights inside Core ML payloads, which no reader here opens: the
    # audit would find none of them and fail a correct build, so parity lists it as not checked instead.
    assert not_audited({"target": "executorch", "delegate": "xnnpack"}) is None
    assert not_audited({"target": "executorch", "delegate": "portable"}) is None
    assert not_audited({"target": "tflite", "delegate": "xnnpack"}) is None
    assert "coreml delegate" in not_audited({"target": "executorch", "delegate": "coreml"})
    assert "coreml builds have no constant reader" in not_audited({"target": "coreml", "delegate": None})
