"""The parity harness's own arithmetic, on tensors whose statistics are worked out by hand here: error
statistics, IoU pairing of detections, the tolerance table, and the fp16 range recorder."""

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from minivlm.converters.fp16_range import measure
from minivlm.converters.targets import TARGETS
from minivlm.converters.tolerances import FP16_MAX, LIMITS, TOLERANCES, tolerance, tolerances_for
from minivlm.parity import Check, ErrorStats, judged, match_detections
from minivlm.python_ref.pipeline import Detection


def test_error_statistics_match_a_hand_computation():
    ref = torch.full((1, 4), 2.0)
    got = ref + torch.tensor([[0.01, -0.01, 0.01, -0.01]])
    s = ErrorStats()
    s.add(ref, got, "call 0")
    assert s.max_abs == pytest.approx(0.01)
    assert s.mean_abs == pytest.approx(0.01)
    assert s.relative_max_abs == pytest.approx(0.005)  # peak |ref| is 2
    assert s.psnr_db == pytest.approx(10 * math.log10(4 / 1e-4), abs=1e-4)  # 46.02 dB
    assert s.sqnr_db == pytest.approx(10 * math.log10(16 / 4e-4), abs=1e-4)
    assert s.min_cosine == pytest.approx(16 / (4 * math.sqrt(16.0004)), abs=1e-9)


def test_statistics_accumulate_over_calls_and_keep_the_worst_call():
    s = ErrorStats()
    s.add(torch.tensor([1.0, -1.0]), torch.tensor([1.0, -1.0]), "image a")
    s.add(torch.tensor([4.0, 0.0]), torch.tensor([4.5, 0.0]), "image b")
    assert (s.calls, s.numel, s.peak, s.max_abs, s.worst_call) == (2, 4, 4.0, 0.5, "image b")
    assert s.mean_abs == pytest.approx(0.5 / 4)
    assert s.psnr_db == pytest.approx(10 * math.log10(16 / (0.25 / 4)))


def test_a_sign_flip_is_caught_by_the_cosine_even_at_equal_magnitudes():
    s = ErrorStats()
    s.add(torch.tensor([3.0, 4.0]), torch.tensor([-3.0, -4.0]), "x")
    assert s.min_cosine == pytest.approx(-1.0)
    assert judged("graph", "g", "cosine", s.min_cosine, LIMITS["INT8_MIN_COSINE"]).status == "FAIL"


def test_non_finite_outputs_and_wrong_shapes_fail():
    s = ErrorStats()
    s.add(torch.ones(3), torch.tensor([1.0, float("inf"), 1.0]), "overflow")
    assert s.max_abs == math.inf and s.psnr_db == -math.inf and s.min_cosine == -1.0
    assert judged("graph", "g", "PSNR", s.psnr_db, LIMITS["FP16_MIN_PSNR_DB"]).status == "FAIL"
    assert judged("graph", "g", "max abs / peak", s.relative_max_abs, LIMITS["FP32_MAX_ABS"]).status == "FAIL"
    nan = ErrorStats()
    nan.add(torch.ones(2), torch.tensor([1.0, float("nan")]), "nan")
    assert nan.max_abs == math.inf
    shape = ErrorStats()
    shape.add(torch.ones(2, 3), torch.ones(3, 2), "image")
    assert "shape (3, 2), the reference's (2, 3)" in shape.shape_mismatch


def _det(box, label, score=0.9):
    return Detection(tuple(float(v) for v in box), label, score, "red")


def test_detections_are_paired_by_iou_and_label_never_by_index():
    ref = [_det((0, 0, 10, 10), "red circle", 0.9), _det((50, 50, 80, 80), "blue square", 0.8)]
    got = [_det((50, 50, 80, 80.5), "blue square", 0.7), _det((0, 0, 10, 10), "red circle", 0.95)]  # other order
    pairs = match_detections(ref, got, 0.9)
    assert sorted((i, j) for i, j, _ in pairs) == [(0, 1), (1, 0)]
    assert sorted(iou for *_, iou in pairs) == pytest.approx([900 / 915, 1.0])  # 30x30 vs 30x30.5
    relabelled = [_det((0, 0, 10, 10), "red square"), got[0]]
    assert [(i, j) for i, j, _ in match_detections(ref, relabelled, 0.9)] == [(1, 1)]  # no red circle found
    moved = [_det((0, 0, 10, 12), "red circle")]  # IoU 100/120 = 0.83
    assert match_detections(ref, moved, 0.9) == []
    assert [(i, j) for i, j, _ in match_detections(ref, moved, 0.5)] == [(0, 0)]
    assert match_detections(ref, [], 0.9) == []


def test_empty_boxes_are_paired_by_position():
    """A box clipped to a zero-height sliver at the image edge has IoU 0 with everything; the reference and a
    build that both found it in the same place have found the same detection."""
    sliver = _det((0.0, 427.0, 213.8, 427.0), "purple square")
    assert match_detections([sliver], [_det((0.0, 427.0, 213.8004, 427.0), "purple square")], 0.9) == [(0, 0, 1.0)]
    assert match_detections([sliver], [_det((0.0, 427.0, 212.0, 427.0), "purple square")], 0.9) == []  # moved
    assert match_detections([sliver], [_det((0.0, 427.0, 213.8, 427.0), "red square")], 0.9) == []  # relabelled
    assert match_detections([sliver], [_det((0.0, 400.0, 213.8, 427.0), "purple square")], 0.9) == []  # not empty


def test_every_buildable_target_and_precision_has_a_row_of_named_limits_with_reasons():
    buildable = {(t.name, p) for t in TARGETS.values() for p in t.precisions}
    assert set(TOLERANCES) == buildable
    for target, precision in buildable:
        row = tolerance(target, precision)
        assert row.graph_max_abs is not None or row.graph_min_psnr_db is not None
        for key, limit in vars(row).items():
            if limit is None:
                continue
            assert LIMITS[limit.name] is limit, key
            assert limit.reason and "\n" not in limit.reason and len(limit.reason) < 160
        recorded = tolerances_for(target, precision)
        assert recorded["captions"] == {"limit": row.captions.name, "value": row.captions.value, "bound": "min",
                                        "reason": row.captions.reason}
    assert tolerance("tflite", "fp32").graph_max_abs.name == "FP32_MAX_ABS"
    assert tolerance("executorch", "int8").captions.value == 0.95  # INT8_MIN_IDENTICAL_CAPTIONS: >= 95 %
    assert tolerance("coreml", "fp16").graph_min_psnr_db.value == 40.0


def test_a_check_prints_value_tolerance_and_verdict():
    c = judged("task", "captions", "identical", 0.9, LIMITS["INT8_MIN_IDENTICAL_CAPTIONS"], unit="%")
    assert (c.value_text(), c.limit_text(), c.status) == ("90.0 %", ">= 95 %", "FAIL")
    assert Check("graph", "vqa", "max abs", 1e-5).status == "-"


class _Scaled(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inner = nn.Linear(2, 2, bias=False)
        with torch.no_grad():
            self.inner.weight.copy_(torch.tensor([[70.0, 0.0], [0.0, 1.0]]))

    def forward(self, x):
        return (self.inner(x) * 10.0,)  # 70000: beyond fp16


def test_fp16_range_names_each_tensor_and_warns_within_the_margin():
    report = measure([("g", _Scaled(), ["x"], [(torch.tensor([[100.0, 0.5]]),), (torch.tensor([[50.0, 1.0]]),)])], images=2)
    ranges = {t.tensor: t.max_abs for t in report.tensors}
    assert ranges["input:x"] == 100.0  # max over both calls
    linear = next(name for name in ranges if name.startswith("inner/"))
    assert ranges[linear] == pytest.approx(7000.0)
    product = next(name for name in ranges if name.startswith("<graph>/mul"))
    assert ranges[product] == pytest.approx(70000.0)
    warned = {t.tensor: t for t in report.warnings}
    assert warned[product].overflows and not warned[linear].overflows  # 7000 is within 10x of 65504
    assert "within 10x of the fp16 maximum" in warned[linear].describe()
    assert "beyond the fp16 maximum" in warned[product].describe()
    assert report.worst()["g"].tensor == product and report.calls == 2
    summary = report.summary()
    assert summary["fp16_max"] == FP16_MAX and len(summary["warnings"]) == 2


class _Report:
    build = None

    def as_json(self) -> dict:
        return {"passed": True}


def test_the_report_file_gets_the_umask_mode_and_an_unwritable_folder_is_one_line(tmp_path):
    import os
    import stat

    from minivlm.errors import ArtifactError
    from minivlm.parity import REPORT_FILE, write_report

    old = os.umask(0o022)
    try:
        path = write_report(_Report(), tmp_path)
    finally:
        os.umask(old)
    assert path == tmp_path / REPORT_FILE and stat.S_IMODE(path.stat().st_mode) == 0o644
    assert [p.name for p in tmp_path.iterdir()] == [REPORT_FILE]
    with pytest.raises(ArtifactError, match=rf"^cannot write {REPORT_FILE} into /proc: .*the table above is the whole report$"):
        write_report(_Report(), Path("/proc"))
