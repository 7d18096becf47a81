"""The sparsity accounting and the Lagrangian alone (fast): expected sparsity from the gates, per modality, and
λ by gradient ascent driving ŝ to the target with nothing pulling back; the settings' one-line errors."""


import pytest
import torch

from minivlm.errors import ConfigError
from minivlm.pruning import gates
from minivlm.pruning.run import PruneSettings
from minivlm.pruning.sparsity import Lagrangian, PruningGates, target_at
from minivlm.pruning.units import prunable_units
from minivlm.python_ref.efficientvlm.config import efficientvlm_tiny
from minivlm.python_ref.efficientvlm.model import EfficientVLM


def _gates() -> PruningGates:
    torch.manual_seed(0)
    return PruningGates(prunable_units(EfficientVLM(efficientvlm_tiny())), torch.Generator().manual_seed(0))


def test_expected_sparsity_is_the_keep_probabilities_weighted_by_unit_params():
    g = _gates()
    kept = sum(float(gates.keep_probability(a).sum()) * u.unit_params for u, a in zip(g.units, g.log_alpha))
    total = sum(u.count * u.unit_params for u in g.units)
    assert float(g.expected_sparsity()) == pytest.approx(1 - kept / total, abs=1e-6)
    by = g.expected_by_modality()
    assert list(by) == ["vision", "text", "cross"]
    weights = {m: sum(u.params for u in g.units if u.modality == m) for m in by}
    overall = sum(by[m] * weights[m] for m in by) / sum(weights.values())
    assert overall == pytest.approx(float(g.expected_sparsity()), abs=1e-6)


def test_lagrangian_by_ascent_drives_expected_sparsity_to_target():
    g, lagrangian = _gates(), Lagrangian()
    for p in lagrangian.parameters():
        p.register_hook(torch.neg)
    opt = torch.optim.AdamW([{"params": g.parameters(), "lr": 0.05, "weight_decay": 0.0},
                             {"params": lagrangian.parameters(), "lr": 0.05, "weight_decay": 0.0}])
    start = float(g.expected_sparsity())
    for step in range(400):
        loss = lagrangian(g.expected_sparsity(), target_at(step, 0.4, 100))
        opt.zero_grad()
        loss.backward()
        opt.step()
        g.clamp_()
    assert start < 0.3
    assert abs(float(g.expected_sparsity()) - 0.4) < 0.01
    assert float(lagrangian.lambda_2) > 0  # ascent: (ŝ - t)² >= 0 only ever raises λ₂ (descent would lower it)


def test_target_ramps_linearly_over_the_warmup():
    assert [target_at(s, 0.5, 100) for s in (0, 50, 100, 300)] == [0.0, 0.25, 0.5, 0.5]
    assert target_at(0, 0.5, 0) == 0.5


def test_log_alpha_is_clamped_to_upstream_range():
    g = _gates()
    with torch.no_grad():
        g.log_alpha[0].fill_(50.0)
    g.clamp_()
    assert float(g.log_alpha[0].max()) == pytest.approx(gates.LOG_ALPHA_RANGE[1])


@pytest.mark.parametrize("field, value, words", [("sparsity", 1.5, "fraction"), ("task", "detect", "caption"),
                                                 ("warmup_steps", 700, "steps"), ("lr", -1.0, "> 0")])
def test_bad_settings_fail_in_one_line(field, value, words):
    with pytest.raises(ConfigError, match=words) as err:
        PruneSettings(model="efficientvlm-demo-student", **{field: value})
    assert "\n" not in str(err.value) and repr(value) in str(err.value)


@pytest.mark.parametrize("target", [0.25, 0.5])
def test_fixed_masks_calibrated_to_the_target(target):
    from minivlm.python_ref.efficientvlm.config import efficientvlm_demo_student

    torch.manual_seed(0)
    g = PruningGates(prunable_units(EfficientVLM(efficientvlm_demo_student())))
    with torch.no_grad():
        for a in g.log_alpha:
            a.copy_(torch.randn(a.shape) * 2)
    upstream, offset0 = g.deterministic()
    assert offset0 == 0.0
    calibrated, offset = g.deterministic(target)
    assert abs(g.sparsity_of(calibrated) - target) <= min(0.005, abs(g.sparsity_of(upstream) - target))
    # The sparsity counted independently: zeroed heads and neurons times what each holds.
    removed = sum(int((calibrated[u.name] == 0).sum()) * u.unit_params for u in g.units)
    assert g.sparsity_of(calibrated) == pytest.approx(removed / g.prunable)
    for u, a in zip(g.units, g.log_alpha):  # within a group the zeros are still the lowest log α, values upstream's
        m = calibrated[u.name]
        if (m == 0).any() and (m != 0).any():
            assert float(a[m == 0].max()) <= float(a[m != 0].min())
        kept = m != 0
        torch.testing.assert_close(m[kept], torch.sigmoid(a.detach()[kept] / (2 / 3) * 0.8))
