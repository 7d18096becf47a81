"""The learned part of modal-adaptive pruning: one hard-concrete gate per prunable head and neuron
(`PruningGates`), the model's expected sparsity under them, and the Lagrangian that holds it at a target
(EfficientVLM, Wang et al., arXiv 2210.07795; upstream swaggy-TN/EfficientVLM `xvlm_l0_module.py`, after
princeton-nlp/CoFiPruning).

    expected size  = Σ_units Σ_gates P(z ≠ 0) · unit_params        (`gates.keep_probability`)
    ŝ              = 1 − expected size / prunable size              (one number for every modality together)
    Lagrangian     = λ₁ (ŝ − t) + λ₂ (ŝ − t)²                       (λ by gradient *ascent*)

There is a single target t for all modalities: how much each modality keeps is left to the task loss.
The target rises linearly from 0 over a warm-up (`target_at`), so the model is not asked for all of it at once.
"""

from __future__ import annotations

import torch
from torch import nn

from minivlm.errors import ConfigError

from . import gates
from .units import Unit


class PruningGates(nn.Module):
    """log α of every gate of `units` (one 1-D parameter per unit, in unit order), and what follows from them."""

    def __init__(self, units: list[Unit], generator: torch.Generator | None = None) -> None:
        super().__init__()
        if not units:
            raise ConfigError("the model has no heads or neurons left to prune")
        self.units = units
        self.log_alpha = nn.ParameterList(nn.Parameter(gates.initial_log_alpha(u.count, u.kind, generator))
                                          for u in units)
        self.register_buffer("unit_params", torch.tensor([float(u.unit_params) for u in units]), persistent=False)
        self.prunable = sum(u.params for u in units)

    def sample(self, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """One draw of every gate (training), by unit name."""
        return {u.name: gates.sample(a, generator) for u, a in zip(self.units, self.log_alpha)}

    def deterministic(self, target: float | None = None) -> tuple[dict[str, torch.Tensor], float]:
        """The fixed masks (`gates.deterministic`, one group per unit) by unit name, and the offset used.

        Upstream counts each group's zeros as round(E[#zeros]); a layer's few heads round coarsely (one head
        of the demo student is 0.8 % of its prunable parameters), so the masks can miss a target ŝ had met. With
        `target`, one common offset added to every log α for that count (bisection) makes the masks' sparsity
        the closest to the target it can be; which gates are kept within a group, and their values, stay
        upstream's. Without `target` the offset is 0."""
        if target is None:
            return self._fixed(0.0), 0.0
        low, high = -2 * gates.LOG_ALPHA_RANGE[1], 2 * gates.LOG_ALPHA_RANGE[1]  # raising the offset keeps more
        best = (abs(self.sparsity_of(self._fixed(0.0)) - target), 0.0)
        for _ in range(40):
            offset = (low + high) / 2
            reached = self.sparsity_of(self._fixed(offset))
            best = min(best, (abs(reached - target), offset))
            low, high = (offset, high) if reached > target else (low, offset)
        return self._fixed(best[1]), best[1]

    def _fixed(self, offset: float) -> dict[str, torch.Tensor]:
        return {u.name: gates.deterministic(a.detach(), offset) for u, a in zip(self.units, self.log_alpha)}

    def sparsity_of(self, masks: dict[str, torch.Tensor]) -> float:
        """The fraction of the prunable parameters that fixed `masks` remove."""
        kept = sum(int((masks[u.name] != 0).sum()) * u.unit_params for u in self.units)
        return 1.0 - kept / self.prunable

    def expected_kept(self) -> torch.Tensor:
        """(units,) the expected parameters each unit keeps: Σ P(z ≠ 0) · unit_params."""
        return torch.stack([gates.keep_probability(a).sum() for a in self.log_alpha]) * self.unit_params

    def expected_sparsity(self) -> torch.Tensor:
        """ŝ: the expected fraction of the prunable parameters removed, all modalities together."""
        return 1.0 - self.expected_kept().sum() / self.prunable

    def expected_by_modality(self) -> dict[str, float]:
        """ŝ of each modality alone (reported, never constrained)."""
        kept = self.expected_kept().detach()
        out = {}
        for modality in dict.fromkeys(u.modality for u in self.units):
            rows = [i for i, u in enumerate(self.units) if u.modality == modality]
            if rows:
                total = sum(self.units[i].params for i in rows)
                out[modality] = 1.0 - float(kept[rows].sum()) / total
        return out

    def clamp_(self) -> None:
        """Keep log α in upstream's range after each optimiser step."""
        with torch.no_grad():
            for a in self.log_alpha:
                a.clamp_(*gates.LOG_ALPHA_RANGE)


class Lagrangian(nn.Module):
    """λ₁ (ŝ − t) + λ₂ (ŝ − t)², λ starting at 0. The optimiser must *ascend* on λ (upstream: AdamW with a
    negative learning rate): λ₁ then grows against the side ŝ is on, and minimising over the gates pulls ŝ to t."""

    def __init__(self) -> None:
        super().__init__()
        self.lambda_1 = nn.Parameter(torch.zeros(()))
        self.lambda_2 = nn.Parameter(torch.zeros(()))

    def forward(self, expected: torch.Tensor, target: float) -> torch.Tensor:
        gap = expected - target
        return self.lambda_1 * gap + self.lambda_2 * gap * gap


def target_at(step: int, target: float, warmup_steps: int) -> float:
    """The sparsity asked for at `step`: rising linearly from 0 to `target` over `warmup_steps`, then `target`."""
    if warmup_steps <= 0:
        return target
    return target * min(1.0, step / warmup_steps)


__all__ = ["Lagrangian", "PruningGates", "target_at"]
