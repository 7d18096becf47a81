"""Error statistics of one graph output against the reference's, accumulated over every call: max and mean abs
error, PSNR, SQNR and the worst call's cosine (`minivlm.parity` module doc)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass
class ErrorStats:
    """Error of one graph output over every call (executorch's error_statistics, accumulated)."""

    calls: int = 0
    numel: int = 0
    max_abs: float = 0.0
    sum_abs: float = 0.0
    sum_sq_err: float = 0.0
    sum_sq_ref: float = 0.0
    peak: float = 0.0  # max |ref|
    min_cosine: float = 1.0
    worst_call: str = ""  # where the largest error was
    shape_mismatch: str = ""

    def add(self, ref: torch.Tensor, got: torch.Tensor, where: str) -> None:
        self.calls += 1
        if tuple(ref.shape) != tuple(got.shape):
            self.shape_mismatch = self.shape_mismatch or f"{where}: shape {tuple(got.shape)}, the reference's {tuple(ref.shape)}"
            return
        r, g = ref.detach().to(torch.float64).flatten(), got.detach().to(torch.float64).flatten()
        err = g - r
        finite = bool(torch.isfinite(g).all())
        biggest = (float(err.abs().max()) if r.numel() else 0.0) if finite else math.inf
        if biggest > self.max_abs or not self.worst_call:
            self.max_abs, self.worst_call = biggest, where
        self.numel += r.numel()
        self.sum_abs += float(err.abs().sum()) if finite else math.inf
        self.sum_sq_err += float((err * err).sum()) if finite else math.inf
        self.sum_sq_ref += float((r * r).sum())
        self.peak = max(self.peak, float(r.abs().max()) if r.numel() else 0.0)
        self.min_cosine = min(self.min_cosine, cosine(r, g) if finite else -1.0)

    @property
    def relative_max_abs(self) -> float:
        """max |build - ref| / max |ref|: the error on the output's own scale."""
        return self.max_abs / self.peak if self.peak > 0 else (0.0 if self.max_abs == 0 else math.inf)

    @property
    def mean_abs(self) -> float:
        return self.sum_abs / self.numel if self.numel else 0.0

    @property
    def psnr_db(self) -> float:
        mse = self.sum_sq_err / self.numel if self.numel else 0.0
        if mse == 0:
            return math.inf
        return 10 * math.log10(self.peak ** 2 / mse) if self.peak > 0 and math.isfinite(mse) else -math.inf

    @property
    def sqnr_db(self) -> float:
        if self.sum_sq_err == 0:
            return math.inf
        finite = math.isfinite(self.sum_sq_err)
        return 10 * math.log10(self.sum_sq_ref / self.sum_sq_err) if self.sum_sq_ref > 0 and finite else -math.inf

    def as_json(self) -> dict:
        return {"calls": self.calls, "max_abs": json_number(self.max_abs), "max_abs_over_peak": json_number(self.relative_max_abs),
                "mean_abs": json_number(self.mean_abs), "psnr_db": json_number(self.psnr_db), "sqnr_db": json_number(self.sqnr_db),
                "min_cosine": json_number(self.min_cosine), "peak": json_number(self.peak), "worst_call": self.worst_call,
                "shape_mismatch": self.shape_mismatch or None}


def cosine(r: torch.Tensor, g: torch.Tensor) -> float:
    nr, ng = float(r.norm()), float(g.norm())
    if nr == 0 or ng == 0:
        return 1.0 if nr == ng else 0.0
    return float(r @ g) / (nr * ng)


def json_number(x: float) -> float | str:
    """JSON has no inf/nan: they become strings."""
    return x if math.isfinite(x) else str(x)
