import pytest

from minivlm.python_ref.config import get_config
from minivlm.python_ref.pipeline import MiniVLM
from minivlm.python_ref.profile import format_report, profile_model


def test_rows_cover_every_parameter_once_and_flops_are_counted():
    reports = profile_model("minivlm-tiny")
    total = reports[-1]
    assert total.params == sum(p.numel() for p in MiniVLM(get_config("minivlm-tiny")).parameters())
    assert all(r.flops > 0 for r in reports if r.part != "word embeddings")
    backbone = next(r for r in reports if r.part.startswith("backbone"))
    assert backbone.flops > 0
    assert "params (M)" in format_report(reports)


@pytest.mark.slow
def test_paper_preset_matches_the_design_budget():
    by_part = {(r.model, r.part): r for r in profile_model("minivlm-paper")}
    assert 3.4e6 < by_part[("tee", "backbone (EfficientNet)")].params < 3.8e6
    assert 14.5e6 < by_part[("tee", "total")].params < 16e6  # TEE ≈ 15M: scripts/update_readme.py PAPER_BUDGET
    fusion = by_part[("fusion", "total")].params - sum(
        r.params for (m, p), r in by_part.items() if m == "fusion" and p.startswith("heads")
    )
    assert 32e6 < fusion < 35e6  # MiniLM-L12-H384: ≈ 33M without task heads
    assert 11.6e6 < by_part[("fusion", "word embeddings")].params < 11.8e6
