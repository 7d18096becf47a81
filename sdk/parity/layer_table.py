"""Per-layer comparison tables shared by the runtimes that expose intermediate values (Core AI, the Core ML
executor): one `LayerRow` per compared torch.export node, a `LayerReport` per function, and the reference side,
every node's value from torch's FX interpreter.

A float value is compared by PSNR and max|diff| / peak, with peak max|reference| (PSNR inf when identical); for an
additive operation (add, sub, sum, mean) the peak is the larger of that and its float operands' max|value|, since
float rounds a sum at the scale of its terms: a mean of values that cancel to ~1e-7 of their size differs in its
first digit between CPUs while right to the operands' last bits. Integer values must be equal (PSNR inf when they
are, -inf when not). A report's `first_divergent` is the first compared node, in graph order, below its
`min_psnr_db`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

# operations whose rounding error scales with their operands, not their result (see the module doc)
ADDITIVE = frozenset({torch.ops.aten.add.Tensor, torch.ops.aten.sub.Tensor, torch.ops.aten.rsub.Tensor,
                      torch.ops.aten.mean.dim, torch.ops.aten.mean.default, torch.ops.aten.sum.dim_IntList,
                      torch.ops.aten.sum.default})


@dataclass(frozen=True)
class LayerRow:
    """One compared node."""

    node: str  # FX node name in the reference program
    op: str  # its aten op, e.g. "aten.addmm.default"
    module: str  # nn.Module path from node.meta["nn_module_stack"] ("" at the root or when absent)
    shape: tuple[int, ...]
    psnr_db: float  # peak = max |reference| (additive ops: or their operands'); inf when identical; integers: inf
    # when equal, -inf when not
    max_diff_over_peak: float  # max |build - reference| / peak
    integer: bool = False
    build_shape: tuple[int, ...] | None = None  # the shape the build returned it in, when not `shape`

    def as_json(self) -> dict:
        return {"node": self.node, "op": self.op, "module": self.module, "shape": list(self.shape),
                "build_shape": list(self.build_shape) if self.build_shape else None,
                "psnr_db": json_number(self.psnr_db), "max_diff_over_peak": json_number(self.max_diff_over_peak),
                "integer": self.integer}


@dataclass(frozen=True)
class LayerReport:
    """Every node of one function, compared or accounted for."""

    function: str
    min_psnr_db: float
    rows: tuple[LayerRow, ...]  # compared nodes, graph order
    not_observable: tuple[str, ...]  # fused away or no value materialised
    skipped: dict[str, str] = field(default_factory=dict)  # node -> why (multi-output, shape mismatch)

    @property
    def compared(self) -> int:
        return len(self.rows)

    @property
    def first_divergent(self) -> LayerRow | None:
        """The first compared node, in graph order, whose PSNR is below `min_psnr_db` (None if none)."""
        return next((r for r in self.rows if not r.psnr_db >= self.min_psnr_db), None)

    @property
    def worst_psnr_db(self) -> float:
        return min((r.psnr_db for r in self.rows), default=math.inf)

    def summary(self) -> str:
        first = self.first_divergent
        where = f"first below {self.min_psnr_db:g} dB: {first.node} ({first.op}, {first.module or '<root>'}, " \
                f"{first.psnr_db:.1f} dB)" if first else f"all >= {self.min_psnr_db:g} dB"
        return (f"{self.function}: {self.compared} compared, {len(self.not_observable)} not observable, "
                f"{len(self.skipped)} skipped; min PSNR {self.worst_psnr_db:.1f} dB; {where}")

    def as_json(self) -> dict:
        first = self.first_divergent
        return {"function": self.function, "min_psnr_db": self.min_psnr_db, "compared": self.compared,
                "not_observable": list(self.not_observable), "skipped": dict(self.skipped),
                "worst_psnr_db": json_number(self.worst_psnr_db), "first_divergent": first.node if first else None,
                "rows": [r.as_json() for r in self.rows]}


def torch_values(program: torch.export.ExportedProgram, inputs: Sequence[torch.Tensor]) -> dict[str, list[np.ndarray]]:
    """Every call_function node's value(s) when torch runs `program` on `inputs` in its own precision: node name ->
    its tensor outputs as numpy arrays (one for a single tensor, in order for a tuple; non-tensor nodes absent)."""
    names = {n.name for n in program.graph.nodes if n.op == "call_function"}
    values: dict[str, list[np.ndarray]] = {}

    class Keeper(torch.fx.Interpreter):
        def run_node(self, node: torch.fx.Node) -> Any:
            out = super().run_node(node)
            if node.name in names:
                items = out if isinstance(out, (tuple, list)) else (out,)
                if items and all(isinstance(x, torch.Tensor) for x in items):
                    values[node.name] = [x.detach().cpu().numpy().copy() for x in items]
            return out

    with torch.no_grad():
        Keeper(program.module()).run(*inputs)
    return values


def placeholder_values(program: torch.export.ExportedProgram, inputs: Sequence[torch.Tensor]) -> dict[str, Any]:
    """The program's placeholders by node name: its parameters, buffers and constants, then the user inputs."""
    signature = program.graph_signature
    lifted = {**signature.inputs_to_parameters, **signature.inputs_to_buffers,
              **signature.inputs_to_lifted_tensor_constants}
    state = {**program.state_dict, **program.constants}
    values: dict[str, Any] = {name: state[target] for name, target in lifted.items() if target in state}
    values.update(zip(signature.user_inputs, inputs, strict=True))
    return values


def operand_peak(node: torch.fx.Node, values: dict[str, list[np.ndarray]], placeholders: dict[str, Any]) -> float:
    """max |finite value| over the float tensor operands of an additive node (0 for any other node)."""
    if node.target not in ADDITIVE:
        return 0.0
    peak = 0.0
    for arg in node.args:
        if not isinstance(arg, torch.fx.Node):
            continue
        value = values[arg.name][0] if arg.name in values else placeholders.get(arg.name)
        if isinstance(value, torch.Tensor):
            value = value.detach().cpu().numpy()
        if not isinstance(value, np.ndarray) or not np.issubdtype(value.dtype, np.floating):
            continue
        finite = np.abs(value[np.isfinite(value)])
        if finite.size:
            peak = max(peak, float(finite.max()))
    return peak


def module_path(node: torch.fx.Node) -> str:
    stack = node.meta.get("nn_module_stack") or {}
    return list(stack.values())[-1][0] if stack else ""


def layer_row(node: torch.fx.Node, ref: np.ndarray, got: np.ndarray, operand_peak: float = 0.0, *,
              reshape: bool = True) -> LayerRow | str:
    """The comparison of one node, or why it was skipped; `operand_peak` raises the PSNR peak of an additive node
    (`operand_peak`). `reshape=False`: a value whose shape differs other than by axes of size 1 is skipped (its
    layout may be a permutation of the reference's)."""
    ref, got = np.asarray(ref), np.asarray(got)
    build_shape = tuple(got.shape) if got.shape != ref.shape else None
    if build_shape is not None and not reshape and [d for d in ref.shape if d != 1] != [d for d in got.shape if d != 1]:
        return f"layout differs: reference {ref.shape}, build {got.shape}"
    if build_shape is not None:
        # A compiler fuses views into the operation beside them (a Linear's view -> addmm -> view becomes one
        # batched matmul), so the value can come back under the fused shape. Same element count: the same
        # row-major elements; had the layout changed, the comparison fails, it never passes wrongly.
        if got.size != ref.size:
            return f"shape mismatch: reference {ref.shape}, build {got.shape}"
        got = got.reshape(ref.shape)
    common = dict(node=node.name, op=str(node.target), module=module_path(node), shape=tuple(ref.shape),
                  build_shape=build_shape)
    if not np.issubdtype(ref.dtype, np.floating):
        # integer and boolean values (runtimes run int64 as int32 or int16) must be equal, element for element
        equal = bool(np.array_equal(ref.astype(np.int64), got.astype(np.int64)))
        return LayerRow(**common, psnr_db=math.inf if equal else -math.inf, max_diff_over_peak=0.0 if equal else
                        math.inf, integer=True)
    psnr, relative = psnr_db(ref, got, min_peak=operand_peak)
    return LayerRow(**common, psnr_db=psnr, max_diff_over_peak=relative)


def psnr_db(ref: np.ndarray, got: np.ndarray, *, min_peak: float = 0.0) -> tuple[float, float]:
    """(PSNR in dB, max |got - ref| / peak) with peak = max(max |ref|, `min_peak`), in float64. Non-finite values
    must sit in the same places with the same values; otherwise (-inf, inf)."""
    r, g = np.asarray(ref, np.float64).ravel(), np.asarray(got, np.float64).ravel()
    finite = np.isfinite(r)
    if not np.array_equal(finite, np.isfinite(g)) or not np.array_equal(r[~finite], g[~finite], equal_nan=True):
        return -math.inf, math.inf
    r, g = r[finite], g[finite]
    if r.size == 0 or np.array_equal(r, g):
        return math.inf, 0.0
    err = g - r
    peak, mse, biggest = max(float(np.abs(r).max()), min_peak), float(np.mean(err * err)), float(np.abs(err).max())
    if peak == 0:
        return -math.inf, math.inf
    return 10 * math.log10(peak * peak / mse), biggest / peak


def json_number(x: float) -> float | str:
    return x if math.isfinite(x) else ("inf" if x > 0 else "-inf")


__all__ = ["ADDITIVE", "LayerReport", "LayerRow", "json_number", "layer_row", "module_path", "operand_peak",
           "placeholder_values", "psnr_db", "torch_values"]
