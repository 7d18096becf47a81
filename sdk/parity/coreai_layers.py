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
the same count, is compared in the reference's shape). Rows, PSNR and peaks: `layer_table`.

Linux: the runtime has no specialization options there, so the asset is lowered by hand
(`AIModelAsset._write_odix(..., enable_debug_info=True)`) and loaded from that folder. The runtime's
"ODIE [default]: Loading function ..." line comes from its native code, written straight to file descriptor 2,
not through Python logging or `sys.stderr`, so it is left as is: redirecting descriptor 2 (as `minivlm.coreai_runtime`
does around its loads) across a run would also hide any real error the runtime prints meanwhile.
"""

from __future__ import annotations

import asyncio
import operator
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from minivlm.errors import ArtifactError, InputError

from .layer_table import LayerReport, layer_row, operand_peak, placeholder_values, torch_values
from .coreai_op_map import FunctionOpMap, OpOutput, compiled_outputs, function_names, function_op_map

_BATCH_NORM = torch.ops.aten._native_batch_norm_legit_no_training.default


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
        reference_values = torch_values(reference, inputs)
        coreai_values = self._runner.run(_coreai_values(self._model, function, op_map.odix_ops(), inputs,
                                                         input_names))
        paired = _paired_outputs(op_map, nodes)
        operands = placeholder_values(reference, inputs)
        rows, hidden, skipped = [], [], {}
        for node in nodes:
            outputs = paired.get(node.name, [])
            ref = reference_values.get(node.name)
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
                row = layer_row(node, ref[0], got[target.odix_output], operand_peak(node, reference_values, operands))
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
