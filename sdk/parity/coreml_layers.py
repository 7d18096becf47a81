"""Per-layer parity of a Core ML build off macOS: one function of the `.mlpackage`, run by the SDK's ML-program
executor (`minivlm.coreml_executor`) keeping every variable, against the program it was converted from
(`minivlm.converters.coreml.export`), node by node in graph order.

Pairing is by name: coremltools names each ML-program variable after the torch.export node it lowers, adding
a suffix per dtype cast it folds in (`linear_3_cast_fp16`, `embedding_cast_fp16_cast_uint16`) and a prefix when
it rewrites a division as a multiplication by the reciprocal (`_inversed_div_1`); a node lowered to several
operations is paired with the last one, which holds its value; a multi-output node's variable (a BatchNorm the
converter folded into its convolution) holds its first output and is paired with the `getitem` that takes it. The function's outputs, renamed to the manifest's
names at conversion, are paired with the nodes the reference returns. A node with no variable of its name was
fused away or renamed (*not observable*); multi-output nodes and values whose shape differs other than by axes
of size 1 are *skipped* (coremltools moves transposes across elementwise operations, so such a variable may
hold a permutation of the node's value: the demo's RoIAlign sum over levels comes back (48, 4, 32, 4) for
(48, 32, 4, 4)). Rows,
PSNR and peaks: `layer_table`.

A layer row of an fp16 build measures the executor's float16 storage and rounding after every operation
against torch in float32, accumulated from the inputs up to that layer, so its bound is lower than fp32's.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from minivlm.errors import InputError

from .layer_table import LayerReport, layer_row, operand_peak, placeholder_values, torch_values

_CAST_SUFFIX = re.compile(r"(_cast_(fp16|fp32|u?int\d+|bool)|_to_(fp16|fp32|u?int\d+|bool))+$")


def node_name(variable: str) -> str:
    """The torch.export node an ML-program variable was named after (see the module doc)."""
    return _CAST_SUFFIX.sub("", variable).removeprefix("_inversed_")


def compare(program: Any, function: str, reference: torch.export.ExportedProgram, inputs: Sequence[torch.Tensor],
            input_names: Sequence[str], *, min_psnr_db: float) -> LayerReport:
    """Run `function` of `program` (a `minivlm.coreml_executor.MILProgram`) and its reference on the same inputs
    and compare every node, in graph order. `inputs`: torch tensors in `input_names` order (each is fed in the
    dtype the function declares)."""
    if function not in program.functions:
        raise InputError(f"unknown Core ML function {function!r}: the package has {', '.join(program.functions)}")
    declared_inputs, declared_outputs = program.function_io(function)
    dtypes = {name: dtype for name, _, dtype in declared_inputs}
    if sorted(input_names) != sorted(dtypes) or len(inputs) != len(input_names):
        raise InputError(f"inputs {list(input_names)} for {function!r}: expected one tensor for each of {sorted(dtypes)}")
    feeds = {name: np.ascontiguousarray(x.detach().cpu().numpy(), dtype=dtypes[name])
             for name, x in zip(input_names, inputs, strict=True)}
    _, values = program.run(function, feeds, keep=True)
    variables: dict[str, str] = {}
    for variable in values:  # in execution order: a node's last variable holds its value
        variables[node_name(variable)] = variable
    for node in reference.graph.nodes:
        # A node with several outputs (an inference BatchNorm, folded into its convolution) is lowered to one
        # variable holding its first output, the one its `getitem(node, 0)` takes.
        source = node.args[0] if node.target is operator.getitem and node.args[1] == 0 else None
        if isinstance(source, torch.fx.Node) and source.name in variables and node.name not in variables:
            variables[node.name] = variables.pop(source.name)
    returned = reference.graph.output_node().args[0]
    for node, (output, _, _) in zip(returned, declared_outputs):
        if isinstance(node, torch.fx.Node) and output in values:
            variables[node.name] = output
    reference_values = torch_values(reference, inputs)
    operands = placeholder_values(reference, inputs)
    rows, hidden, skipped = [], [], {}
    for node in (n for n in reference.graph.nodes if n.op == "call_function"):
        ref, variable = reference_values.get(node.name), variables.get(node.name)
        if ref is None or variable is None:
            hidden.append(node.name)
        elif len(ref) > 1:
            skipped[node.name] = f"multi-output ({len(ref)} torch outputs)"
        else:
            row = layer_row(node, ref[0], values[variable], operand_peak(node, reference_values, operands),
                            reshape=False)
            if isinstance(row, str):
                skipped[node.name] = row
            else:
                rows.append(row)
    return LayerReport(function, float(min_psnr_db), tuple(rows), tuple(hidden), skipped)


__all__ = ["compare", "node_name"]
