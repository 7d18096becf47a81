"""Hard-concrete gates: the closed-form expected L0 against a Monte-Carlo estimate of the sampled gates, and the
fixed masks' count of zeros."""

import math

import pytest
import torch

from minivlm.pruning import gates


def _hard_concrete_by_hand(log_alpha: float, u: torch.Tensor) -> torch.Tensor:
    """The paper's sampling formula written out again (Louizos et al. 2018, eq. 10–12), in float64."""
    s = 1 / (1 + torch.exp(-(torch.log(u) - torch.log(1 - u) + log_alpha) / (2 / 3)))
    return torch.clamp(s * 1.2 - 0.1, 0, 1)


@pytest.mark.parametrize("log_alpha", [-3.0, -0.5, 0.0, 0.7, 2.5, math.log(100)])
def test_expected_l0_matches_monte_carlo(log_alpha):
    n = 200_000
    draws = gates.sample(torch.full((n,), log_alpha), torch.Generator().manual_seed(0))
    p = float(gates.keep_probability(torch.tensor(log_alpha)))
    observed = float((draws > 0).double().mean())
    sigma = math.sqrt(p * (1 - p) / n)
    assert abs(observed - p) < 5 * sigma + 1e-9, (observed, p)
    # The same probability from the distribution's CDF at 0 computed independently: s̄ ≤ 0 <=> s ≤ 0.1 / 1.2.
    x = 0.1 / 1.2
    cdf0 = 1 / (1 + math.exp(-((math.log(x) - math.log(1 - x)) * (2 / 3) - log_alpha)))
    assert p == pytest.approx(1 - cdf0, rel=1e-6)


def test_sample_is_the_stretched_clamped_concrete():
    u_gen = torch.Generator().manual_seed(3)
    z = gates.sample(torch.full((1000,), 0.3, dtype=torch.float64), u_gen)
    u = torch.rand(1000, generator=torch.Generator().manual_seed(3), dtype=torch.float64) * (1 - 2e-6) + 1e-6
    torch.testing.assert_close(z, _hard_concrete_by_hand(0.3, u))
    assert (z == 0).any() and (z == 1).any() and ((z > 0) & (z < 1)).any()  # mass at 0, at 1 and between


def test_sample_is_differentiable_in_log_alpha():
    log_alpha = torch.zeros(64, requires_grad=True)
    gates.sample(log_alpha, torch.Generator().manual_seed(0)).sum().backward()
    assert log_alpha.grad is not None and log_alpha.grad.abs().sum() > 0


def test_deterministic_zeros_the_expected_number_of_lowest_gates():
    log_alpha = torch.tensor([4.0, -4.0, 3.0, -3.5, 0.1, -0.2])
    expected_zeros = round(6 - float(gates.keep_probability(log_alpha).sum()))
    mask = gates.deterministic(log_alpha)
    assert int((mask == 0).sum()) == expected_zeros == 2
    assert mask[1] == 0 and mask[3] == 0  # the lowest log α
    kept = mask != 0
    torch.testing.assert_close(mask[kept], torch.sigmoid(log_alpha[kept] / (2 / 3) * 0.8))


def test_initial_log_alpha_by_kind():
    heads = gates.initial_log_alpha(1000, "heads", torch.Generator().manual_seed(0))
    neurons = gates.initial_log_alpha(1000, "neurons", torch.Generator().manual_seed(0))
    assert abs(float(heads.mean()) - 10.0) < 0.01 and abs(float(neurons.mean())) < 0.01
    assert 0.005 < float(neurons.std()) < 0.02
