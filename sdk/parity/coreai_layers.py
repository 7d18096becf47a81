"""Per-layer parity of a saved Core AI asset (`model.aimodel`) against its PyTorch reference: where, in one
function's graph, the build starts to differ.

The asset is compiled once with debug info (`CoreAILayers`, a context manager owning the compiled folder and the
loaded model). For one function, the reference `ExportedProgram` (decomposed with
`coreai_torch.get_decomp_table()`, fp32, as converted) runs in an FX interpreter that keeps every node's value; the
same function runs once in the Core AI runtime with an intermediate logger on every compiled instruction that holds
a torch node's value; the two are paired per function (`coreai_op_map`) and compared node by node in graph order.

A node is compared when Core AI materialised its value; it is *not observable* when the lowering fused it away
(no output map, or its output is a later node's) or the runtime produced no value for it; it is *skipped* when it
has several outputs (the runtime's output order of such an operation is not stable across compilations, so no
output can be identified) or when the element counts differ (a value returned under a fused view's shape, with
the same count, is compared in the reference's shape). Float values are compared by PSNR and max|diff| / peak,
with peak max|reference| (PSNR inf when identical); for an additive operation (add, sub, sum, mean) the peak is the
larger of that and its float operands' max|value|, since float32 rounds a sum at the scale of its terms: a mean of
values that cancel to ~1e-7 of their size differs in its first digit between CPUs while right to the operands'
last bits. Integer values must be equal (PSNR inf when they are, -inf when not). The report's `first_divergent` is the first compared node, in graph order, below the
caller's `min_psnr_db`.

Linux: the runtime has no specialization options there, so the asset is lowered by hand
(`AIModelAsset._write_odix(..., enable_debug_info=True)`) and loaded from that folder. The runtime's
"ODIE [default]: Loading function ..." line comes from its native code, written straight to file descriptor 2,
not through Python logging or `sys.stderr`, so it is left as is: redirecting descriptor 2 (as `minivlm.coreai_runtime`
does around its loads) across a run would also hide any real error the runtime prints meanwhile.
"""

from __future__ import annotations

import asyncio
import math
import operator
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from minivlm.errors import ArtifactError, InputError

from .coreai_op_map import FunctionOpMap, OpOutput, compiled_outputs, function_names, function_op_map

_BATCH_NORM = torch.ops.aten._native_batch_norm_legit_no_training.default
# operations whose float32 rounding error scales with their operands, not their result (see the module doc)
_ADDITIVE = frozenset({torch.ops.aten.add.Tensor, torch.ops.aten.sub.Tensor, torch.ops.aten.rsub.Tensor,
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
    max_diff_over_peak: float  # max |core ai - reference| / peak
    integer: bool = False
    coreai_shape: tuple[int, ...] | None = None  # the shape Core AI returned it in, when not `shape`

    def as_json(self) -> dict:
        return {"node": self.node, "op": self.op, "module": self.module, "shape": list(self.shape),
                "coreai_shape": list(self.coreai_shape) if self.coreai_shape else None,
                "psnr_db": _json_number(self.psnr_db), "max_diff_over_peak": _json_number(self.max_diff_over_peak),
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
                "worst_psnr_db": _json_number(self.worst_psnr_db), "first_divergent": first.node if first else None,
                "rows": [r.as_json() for r in self.rows]}


class CoreAILayers:
    """A saved Core AI asset compiled once with debug info; `compare` any of its functions layer by layer.

        with CoreAILayers("out/model.aimodel") as layers:
            report = layers.compare("tee_stage1", program, example_inputs, input_names, min_psnr_db=80)

    A synchronous context manager with its own event loop (`asyncio.Runner`): do not use it inside a running
    event loop. Leaving it deletes the compiled folder."""

    def __init__(self, asset: str | Path):
        self.path = Path(asset)
        if self.path.suffix != ".aimodel" or not self.path.is_dir():
            raise InputError(f"Core AI asset {str(self.path)!r} is not a .aimodel folder")
        self._runner: asyncio.Runner | None = None
        self._tmp: tempfile.TemporaryDirectory | None = None
        self._model: Any = None

    def __enter__(self) -> CoreAILayers:
        import coreai.runtime as rt
        from coreai.authoring import AIModelAsset

        try:
            self._asset = AIModelAsset.load(self.path)
            self._program = self._asset.program
        except RuntimeError as e:
            raise ArtifactError(f"cannot read Core AI asset {str(self.path)!r}: {e}") from None
        self.functions = tuple(function_names(self._program))
        self._tmp = tempfile.TemporaryDirectory(suffix=".aimodelx")
        self._runner = asyncio.Runner()
        try:
            self._asset._write_odix(Path(self._tmp.name), enable_debug_info=True)
            self._model = self._runner.run(rt.AIModel.load(self._tmp.name))
            self._compiled = compiled_outputs(self._model._debug_infos)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        if not self._compiled:
            self.__exit__(None, None, None)
            raise InputError(f"Core AI asset {str(self.path)!r} has no torch source locations: convert it with "
                             "coreai_torch.TorchConverter in Mode.DEBUG (the default)")
        return self

    def __exit__(self, *exc: object) -> None:
        self._model = None
        if self._runner is not None:
            self._runner.close()
            self._runner = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def op_map(self, function: str) -> FunctionOpMap:
        """The torch -> Core AI pairing of one function (`coreai_op_map.function_op_map`)."""
        self._check_function(function)
        return function_op_map(self._program, function, self._compiled)

    def compare(self, function: str, reference: torch.export.ExportedProgram, inputs: Sequence[torch.Tensor],
                input_names: Sequence[str], *, min_psnr_db: float) -> LayerReport:
        """Run `function` and its reference on the same inputs and compare every node, in graph order.

        `reference`: the program `function` was converted from (or one with the same graph, e.g. the unedited
        model's), decomposed with `coreai_torch.get_decomp_table()` (for a build's function,
        `minivlm.converters.coreai.export` of `prepared(graph, "fp32", example_inputs)`: the fp32 graph with its
        BatchNorms folded as the converter folds them); `inputs`: torch tensors in the function's input order (int64 ones are fed to Core AI as int32);
        `input_names`: the function's input names."""
        if self._model is None:
            raise InputError("CoreAILayers.compare needs the asset loaded: use it inside `with CoreAILayers(...)`")
        self._check_function(function)
        self._check_inputs(function, reference, inputs, input_names)
        op_map = function_op_map(self._program, function, self._compiled)
        nodes = [n for n in reference.graph.nodes if n.op == "call_function"]
        known = {n.name for n in nodes}
        absent = sorted({name for name, _ in op_map.outputs} - known)
        if absent:
            raise InputError(f"Core AI function {function!r} was not converted from this reference program: "
                             f"{len(absent)} of its torch nodes are not in it (e.g. {absent[0]!r})")
        torch_values = self._runner.run(_torch_values(reference, [n.name for n in nodes], inputs))
        coreai_values = self._runner.run(_coreai_values(self._model, function, op_map.odix_ops(), inputs,
                                                         input_names))
        paired = _paired_outputs(op_map, nodes)
        operands = _placeholder_values(reference, inputs)
        rows, hidden, skipped = [], [], {}
        for node in nodes:
            outputs = paired.get(node.name, [])
            ref = torch_values.get(node.name)
            if not outputs or ref is None:
                hidden.append(node.name)
                continue
            target = outputs[0]
            got = coreai_values.get(target.odix_op)
            if not got or got.get(target.odix_output) is None:
                hidden.append(node.name)
            elif len(ref) > 1 or len(got) > 1 or len(outputs) > 1:
                skipped[node.name] = f"multi-output ({len(ref)} torch, {len(got)} Core AI outputs)"
            else:
                row = _row(node, ref[0], got[target.odix_output], _operand_peak(node, torch_values, operands))
                if isinstance(row, str):
                    skipped[node.name] = row
                else:
                    rows.append(row)
        return LayerReport(function, float(min_psnr_db), tuple(rows), tuple(hidden), skipped)

    def _check_function(self, function: str) -> None:
        if function not in self.functions:
            raise InputError(f"unknown Core AI function {function!r} in {self.path.name}: "
                             f"it has {', '.join(self.functions)}")

    def _check_inputs(self, function: str, reference: Any, inputs: Sequence[torch.Tensor],
                      input_names: Sequence[str]) -> None:
        if not isinstance(reference, torch.export.ExportedProgram):
            raise InputError(f"reference for {function!r} must be a torch.export.ExportedProgram, "
                             f"got {type(reference).__name__}")
        expected = [name for name, _ in self._asset.summary(include_statistics=False).function_inputs(function)]
        if sorted(input_names) != sorted(expected):
            raise InputError(f"input names {list(input_names)} for {function!r}: expected {expected}")
        if len(inputs) != len(input_names) or not all(isinstance(x, torch.Tensor) for x in inputs):
            raise InputError(f"inputs for {function!r}: expected {len(input_names)} torch tensors "
                             f"(one per name in {list(input_names)}), got {len(inputs)} values")
        user_inputs = len(reference.graph_signature.user_inputs)
        if user_inputs != len(inputs):
            raise InputError(f"reference program for {function!r} takes {user_inputs} inputs, got {len(inputs)}")


def _paired_outputs(op_map: FunctionOpMap, nodes: list[torch.fx.Node]) -> dict[str, list[OpOutput]]:
    """Each node's Core AI outputs, in torch output order, with folded BatchNorms moved to their own output.

    The converter lowers an inference BatchNorm to a composite that the compiler folds into the convolution (or
    matmul) before it; the folded operation keeps the convolution's location and output map, so the value Core AI
    credits to the convolution is the BatchNorm's output (measured on the demo model's `tee_stage1`: 151 dB
    against the BatchNorm's output, 5 dB against the convolution's). When a node's only user is a BatchNorm that
    has no Core AI output of its own, nor has the `getitem` that takes its output, that value is compared to the
    `getitem` and the node itself is not observable. A BatchNorm that was not folded but has no output map either
    would then show as a divergence here, never as a pass."""
    by_node: dict[str, list[OpOutput]] = {}
    for (name, _), target in sorted(op_map.outputs.items(), key=lambda item: item[0]):
        by_node.setdefault(name, []).append(target)
    for node in nodes:
        users = list(node.users)
        if node.name not in by_node or len(users) != 1 or users[0].target != _BATCH_NORM or users[0].name in by_node:
            continue
        taken = [u for u in users[0].users if u.target is operator.getitem and u.args[1] == 0]
        if len(taken) == 1 and taken[0].name not in by_node and len(by_node[node.name]) == 1:
            by_node[taken[0].name] = by_node.pop(node.name)
    return by_node


def _placeholder_values(program: torch.export.ExportedProgram, inputs: Sequence[torch.Tensor]) -> dict[str, Any]:
    """The program's placeholders by node name: its parameters, buffers and constants, then the user inputs."""
    signature = program.graph_signature
    lifted = {**signature.inputs_to_parameters, **signature.inputs_to_buffers,
              **signature.inputs_to_lifted_tensor_constants}
    state = {**program.state_dict, **program.constants}
    values: dict[str, Any] = {name: state[target] for name, target in lifted.items() if target in state}
    values.update(zip(signature.user_inputs, inputs, strict=True))
    return values


def _operand_peak(node: torch.fx.Node, values: dict[str, list[np.ndarray]], placeholders: dict[str, Any]) -> float:
    """max |finite value| over the float tensor operands of an additive node (0 for any other node)."""
    if node.target not in _ADDITIVE:
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


def _module_path(node: torch.fx.Node) -> str:
    stack = node.meta.get("nn_module_stack") or {}
    return list(stack.values())[-1][0] if stack else ""


def _row(node: torch.fx.Node, ref: np.ndarray, got: np.ndarray, operand_peak: float = 0.0) -> LayerRow | str:
    """The comparison of one node, or why it was skipped; `operand_peak` raises the PSNR peak of an additive node
    (`_operand_peak`)."""
    ref, got = np.asarray(ref), np.asarray(got)
    coreai_shape = tuple(got.shape) if got.shape != ref.shape else None
    if coreai_shape is not None:
        # The compiler fuses views into the operation beside them (a Linear's view -> addmm -> view becomes one
        # batched matmul), so the value can come back under the fused shape. Same element count: the same
        # row-major elements; had the layout changed, the comparison fails, it never passes wrongly.
        if got.size != ref.size:
            return f"shape mismatch: reference {ref.shape}, Core AI {got.shape}"
        got = got.reshape(ref.shape)
    common = dict(node=node.name, op=str(node.target), module=_module_path(node), shape=tuple(ref.shape),
                  coreai_shape=coreai_shape)
    if not np.issubdtype(ref.dtype, np.floating):
        # integer and boolean values (Core AI runs int64 as int32) must be equal, element for element
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


async def _torch_values(program: torch.export.ExportedProgram, names: list[str],
                        inputs: Sequence[torch.Tensor]) -> dict[str, list[np.ndarray]]:
    from minivlm.converters.coreai_asset import quiet_import

    quiet_import()
    from coreai_torch.debugging.inspector import TorchFXInspector

    with torch.no_grad():
        values = await TorchFXInspector(program).get_intermediates_for_ops(names, tuple(inputs))
    return {name: v for name, v in values.items() if v is not None}


async def _coreai_values(model: Any, function: str, ops: list[int], inputs: Sequence[torch.Tensor],
                         input_names: Sequence[str]) -> dict[int, dict[int, np.ndarray]]:
    """Run `function` once with the runtime's intermediate logger on `ops`: ODIX instruction -> output index ->
    value (an instruction that never ran in this function, or produced nothing, is absent)."""
    import coreai.runtime as rt

    values: dict[int, dict[int, np.ndarray]] = {}

    def keep(arrays: list[Any], kind: str, ids: Any) -> None:
        if kind != "output":  # the logger also reports inputs
            return
        for index, array in enumerate(arrays):
            if array is not None:
                values.setdefault(ids.id, {})[index] = np.array(rt.NDArray._wrap(array).numpy())

    logger = rt.IntermediateLogger(requested_intermediates=[rt.CompileIdentifiers(op, None) for op in ops],
                                   callback=keep, is_enabled=True)
    feeds = {name: rt.NDArray(np.ascontiguousarray(_runtime_array(x))) for name, x in zip(input_names, inputs,
                                                                                           strict=True)}
    await model.load_function(function, intermediate_logger=logger)(feeds)
    return values


def _runtime_array(x: torch.Tensor) -> np.ndarray:
    """What the Core AI runtime takes: int64 as int32 (its integer type), everything else as is."""
    a = x.detach().cpu().numpy()
    if a.dtype != np.int64:
        return a
    if a.size and (a.min() < np.iinfo(np.int32).min or a.max() > np.iinfo(np.int32).max):
        raise InputError(f"an int64 input holds {a.min()}..{a.max()}, outside int32, which Core AI runs it as")
    return a.astype(np.int32)


def _json_number(x: float) -> float | str:
    return x if math.isfinite(x) else ("inf" if x > 0 else "-inf")
