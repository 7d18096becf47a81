"""Hard-concrete gates: the stochastic 0/1 masks that L0-regularised pruning learns (Louizos, Welling and Kingma,
"Learning Sparse Neural Networks through L0 Regularization", arXiv 1712.01312), with the settings of
EfficientVLM's modal-adaptive pruning (Wang et al., arXiv 2210.07795; upstream swaggy-TN/EfficientVLM
`xvlm_l0_module.py`, which follows princeton-nlp/CoFiPruning `models/l0_module.py`).

A gate with parameter log α draws u ~ U(0, 1) and

    s = sigmoid((log u − log(1 − u) + log α) / β),   z = clamp(s · (r − l) + l, 0, 1)

with l = −0.1, r = 1.1, β = 2/3: z is exactly 0 or exactly 1 with positive probability, and in between
otherwise. The probability that a gate is not zero has a closed form (the L0 norm's expectation), differentiable
in log α, which is what the sparsity constraint is written in:

    P(z ≠ 0) = sigmoid(log α − β · log(−l / r))

At the end, `deterministic` turns each group of gates (one layer's heads, one layer's neurons) into a fixed mask:
the round(E[#zeros]) gates with the lowest sigmoid(0.8 · log α / β) become 0, the others keep that value.
"""

from __future__ import annotations

import math

import torch

LEFT, RIGHT, BETA = -0.1, 1.1, 2.0 / 3.0  # the stretch interval (l, r) and temperature β of EfficientVLM / CoFi
LOG_ALPHA_RANGE = (math.log(1e-2), math.log(1e2))  # upstream's clamp of log α after every step
HEAD_INIT, NEURON_INIT = 10.0, 0.0  # log α at the start: heads kept almost surely, neurons at even odds
INIT_STD = 0.01  # upstream draws the initial log α from N(init, 0.01)
DETERMINISTIC_SCALE = 0.8  # upstream's "magical number": the kept gates' value is sigmoid(0.8 · log α / β)
_EPS = 1e-6  # u is drawn from [eps, 1 - eps], away from the logit's poles


def keep_probability(log_alpha: torch.Tensor) -> torch.Tensor:
    """P(z ≠ 0) of each gate: 1 − Q(s̄ ≤ 0), the expected L0 norm's terms; differentiable in `log_alpha`."""
    return torch.sigmoid(log_alpha - BETA * math.log(-LEFT / RIGHT))


def sample(log_alpha: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One draw of the gates z (same shape as `log_alpha`), differentiable in `log_alpha` (reparameterised)."""
    u = torch.rand(log_alpha.shape, generator=generator, dtype=log_alpha.dtype) * (1 - 2 * _EPS) + _EPS
    s = torch.sigmoid((torch.log(u) - torch.log1p(-u) + log_alpha) / BETA)
    return (s * (RIGHT - LEFT) + LEFT).clamp(0.0, 1.0)


def deterministic(log_alpha: torch.Tensor, offset: float = 0.0) -> torch.Tensor:
    """The fixed mask of one group of gates (1-D): round(E[#zeros]) of them 0 (those with the lowest log α),
    the others sigmoid(0.8 · log α / β) (close to 1 for a gate that is kept almost surely). `offset` shifts
    log α for counting the zeros only (`sparsity.PruningGates.deterministic` calibrates it to the target)."""
    with torch.no_grad():
        zeros = round(len(log_alpha) - float(keep_probability(log_alpha + offset).sum()))
        mask = torch.sigmoid(log_alpha / BETA * DETERMINISTIC_SCALE)
        if zeros > 0:
            mask[torch.topk(mask, zeros, largest=False).indices] = 0.0
    return mask


def initial_log_alpha(count: int, kind: str, generator: torch.Generator | None = None) -> torch.Tensor:
    """log α of `count` new gates: `HEAD_INIT` for heads, `NEURON_INIT` for neurons, plus N(0, `INIT_STD`)."""
    mean = {"heads": HEAD_INIT, "neurons": NEURON_INIT}[kind]
    return mean + INIT_STD * torch.randn(count, generator=generator)


__all__ = ["BETA", "DETERMINISTIC_SCALE", "HEAD_INIT", "LEFT", "LOG_ALPHA_RANGE", "NEURON_INIT", "RIGHT",
           "deterministic", "initial_log_alpha", "keep_probability", "sample"]
