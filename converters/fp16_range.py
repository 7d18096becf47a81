"""fp16 range check, before conversion: how close every tensor of every graph comes to the float16 maximum.

A graph that computes in fp16 (Core ML fp16/int8, GPU delegates) turns any value beyond 65504 into inf, and
one inf poisons everything downstream; nothing in an fp32 parity run shows it. So while a build traces the
reference graphs on its real calibration images (`samples.trace` with a `RangeRecorder`), a torch dispatch mode
records max |value| of every floating-point tensor they produce (each aten op's output, except ops that only move values, and each
graph input). Tensors are named `<module path>/<op>#<k>` (the k-th such op inside that module's call), so a
warning points at a line of python_ref. A tensor beyond the fp16 range, or within FP16_RANGE_MARGIN of it, is a warning in the convert
table and the manifest; the full per-tensor table goes into the build as `fp16_range.json`.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Iterable, Sequence

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from minivlm.python_ref.fusion import MASK_VALUE

from .tolerances import FP16_MAX, FP16_RANGE_MARGIN

RANGE_FILE = "fp16_range.json"
# The fusion graphs add MASK_VALUE (-10000) to the attention scores of hidden keys: those tensors sit at
# |MASK_VALUE| plus scores of a few units, exactly representable in fp16 and 6.5x below its maximum by design.
MASK_LEVEL = abs(MASK_VALUE)


@dataclass(frozen=True)
class TensorRange:
    """The largest |value| one tensor of one graph took over all inputs."""

    graph: str
    tensor: str
    max_abs: float

    @property
    def headroom(self) -> float:
        """How many times the tensor could grow before it overflows fp16 (< 1: it already does)."""
        return FP16_MAX / self.max_abs if self.max_abs > 0 else float("inf")

    @property
    def overflows(self) -> bool:
        return not self.max_abs < FP16_MAX  # inf and nan included

    @property
    def near(self) -> bool:
        """Beyond the fp16 range or within FP16_RANGE_MARGIN of it."""
        return self.headroom < FP16_RANGE_MARGIN

    @property
    def at_mask_level(self) -> bool:
        """Within 1 % of |MASK_VALUE|: the additive attention mask, or scores it was added to."""
        return abs(self.max_abs - MASK_LEVEL) <= 0.01 * MASK_LEVEL

    def describe(self) -> str:
        if self.overflows:
            return f"{self.graph}: {self.tensor} reaches |x| = {self.max_abs:.4g}, beyond the fp16 maximum {FP16_MAX:g}"
        why = f", the additive attention mask's level (MASK_VALUE = {MASK_VALUE:g})" if self.at_mask_level else ""
        return (f"{self.graph}: {self.tensor} reaches |x| = {self.max_abs:.4g}, within {FP16_RANGE_MARGIN:g}x of the "
                f"fp16 maximum {FP16_MAX:g} ({self.headroom:.1f}x headroom{why})")


@dataclass(frozen=True)
class RangeReport:
    """Every tensor's range over `calls` graph calls on `images` real images, largest first."""

    images: int
    calls: int
    tensors: tuple[TensorRange, ...]

    @property
    def warnings(self) -> list[TensorRange]:
        return [t for t in self.tensors if t.near]

    def worst(self) -> dict[str, TensorRange]:
        """Per graph, its tensor of largest |value|."""
        out: dict[str, TensorRange] = {}
        for t in self.tensors:  # largest first
            out.setdefault(t.graph, t)
        return out

    def summary(self) -> dict:
        """What the manifest records: per graph the largest tensor, and every warning."""
        return {
            "fp16_max": FP16_MAX, "margin": FP16_RANGE_MARGIN, "limit": "FP16_RANGE_MARGIN",
            "images": self.images, "graph_calls": self.calls, "tensors_checked": len(self.tensors),
            "per_graph": {g: {"tensor": t.tensor, "max_abs": t.max_abs, "headroom": round(t.headroom, 2)}
                          for g, t in self.worst().items()},
            "warnings": [t.describe() for t in self.warnings],
            "warnings_at_mask_level": sum(t.at_mask_level for t in self.warnings),
            "file": RANGE_FILE,
        }

    def table(self) -> list[dict]:
        """The full per-tensor record written to RANGE_FILE."""
        return [{"graph": t.graph, "tensor": t.tensor, "max_abs": t.max_abs} for t in self.tensors]


# Ops that only move or copy values: their output's range is their input's, already recorded.
_SAME_VALUES = frozenset({
    "view", "_unsafe_view", "reshape", "permute", "transpose", "t", "expand", "unsqueeze", "squeeze", "slice", "select",
    "clone", "contiguous", "detach", "alias", "split", "split_with_sizes", "unbind", "chunk", "narrow", "cat", "stack",
    "index_select", "_to_copy", "copy_", "lift_fresh", "flatten", "unflatten",
})


class _Recorder(TorchDispatchMode):
    """Records max |value| of every floating-point aten output, named by the innermost module running."""

    def __init__(self, graph: str, ranges: dict[tuple[str, str], float]) -> None:
        super().__init__()
        self.graph, self.ranges = graph, ranges
        self.path: list[str] = []
        self.counts: list[dict[str, int]] = []

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        # By default torch wraps a mode's __torch_dispatch__ in torch._dynamo.disable, which imports torch._dynamo
        # on the first op (15 s on a loaded 2-core machine) and adds a wrapper call to every op. Nothing is
        # compiled under this mode, so there is nothing to disable (torch/utils/_python_dispatch.py).
        return False

    def enter(self, name: str) -> None:
        self.path.append(name)
        self.counts.append(defaultdict(int))

    def leave(self) -> None:
        self.path.pop()
        self.counts.pop()

    def record(self, name: str, value: object) -> None:
        if isinstance(value, torch.Tensor) and value.is_floating_point() and value.numel():
            key = (self.graph, name)
            low, high = torch.aminmax(value.detach())
            peak = max(-float(low), float(high))
            if peak != peak:  # nan: as bad as an overflow, and max() would drop it
                peak = float("inf")
            self.ranges[key] = max(self.ranges.get(key, 0.0), peak)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        op = func.overloadpacket.__name__
        if self.counts and op not in _SAME_VALUES:
            k = self.counts[-1][op]
            self.counts[-1][op] += 1
            where = self.path[-1] or "<graph>"
            for i, value in enumerate(out if isinstance(out, (tuple, list)) else (out,)):
                self.record(f"{where}/{op}#{k}" + (f"[{i}]" if isinstance(out, (tuple, list)) else ""), value)
        return out


def _hooks(module: nn.Module, recorder: _Recorder) -> list:
    handles = []
    for name, sub in module.named_modules():
        handles.append(sub.register_forward_pre_hook(lambda m, args, n=name: recorder.enter(n)))
        handles.append(sub.register_forward_hook(lambda m, args, out: recorder.leave()))
    return handles


class RangeRecorder:
    """Max |value| of every tensor per graph, accumulated over graph calls made through it."""

    def __init__(self) -> None:
        self.ranges: dict[tuple[str, str], float] = {}
        self.calls = 0

    @torch.no_grad()
    def __call__(self, graph: str, module: nn.Module, input_names: Sequence[str], args: tuple[torch.Tensor, ...]):
        """`module(*args)`, recording its inputs and every tensor it computes under the name `graph`."""
        mode = _Recorder(graph, self.ranges)
        for name, value in zip(input_names, args, strict=True):
            mode.record(f"input:{name}", value)
        handles = _hooks(module, mode)
        try:
            with mode:
                outputs = module(*args)
        finally:
            for h in handles:
                h.remove()
        self.calls += 1
        return outputs

    def run(self, graph: str, module: nn.Module, args: tuple[torch.Tensor, ...]):
        """`module(*args)` recorded as `__call__` does, with the module's own `input_names`: a
        `minivlm.converters.recorder.Runner`, so a traced or parity run measures every graph call as it makes it."""
        return self(graph, module, module.input_names, args)

    def report(self, images: int) -> RangeReport:
        tensors = sorted((TensorRange(g, t, v) for (g, t), v in self.ranges.items()),
                         key=lambda t: (-t.max_abs, t.graph, t.tensor))
        return RangeReport(images, self.calls, tuple(tensors))


def measure(graphs: Iterable[tuple[str, nn.Module, Sequence[str], Sequence[tuple[torch.Tensor, ...]]]],
            images: int) -> RangeReport:
    """Run each (name, module, input names, calls) on its calls and record every tensor's max |value|."""
    recorder = RangeRecorder()
    for name, module, input_names, inputs in graphs:
        for args in inputs:
            recorder(name, module, input_names, args)
    return recorder.report(images)



__all__ = ["MASK_LEVEL", "RANGE_FILE", "RangeRecorder", "RangeReport", "TensorRange", "measure"]
