"""Which compiled (ODIX) instruction output holds each torch FX node's value, in ONE function of a Core AI asset.

A Core AI asset holds several functions (one per graph) in one program. A program converted in
`coreai_torch.TorchConverter.Mode.DEBUG` carries, in every operation's location, the torch node it came from (a
torch operation id and the FX node name), and a model compiled with debug info carries, per ODIX instruction,
the output maps torch (operation, output) -> Core AI (operation, output) -> ODIX (instruction, output).

Which ids can be trusted to name one thing (measured on coreai-torch 0.4.3 / coreai-core 1.0.0b3):
- FX node names repeat across functions (every graph has its own `add_3`);
- Core AI operation ids repeat too: a decomposed `addmm`'s matmul and add both carry an id that another
  operation of the same function, or of another function, also carries;
- torch operation ids are unique across the program (one counter over every converted graph, in graph order),
  and ODIX instruction ids are unique across the compiled model.
So the pairing goes torch id -> ODIX instruction, joined on the Core AI id within ONE instruction's debug record
(never across records), and node names are attached per function, from the operations inside that function's
graph only. (`coreai_torch.debugging.torch_utils.get_torch_to_coreai_output_mapping` keys the whole program by
node name, so one function's names land on another function's operations.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from minivlm.errors import InputError

TORCH = "torch"
COREAI = "coreai"


@dataclass(frozen=True)
class OpOutput:
    """Where one torch node output's value is observable in the compiled model."""

    odix_op: int  # ODIX instruction id (what the runtime's intermediate logger is asked for)
    odix_output: int  # output index of that instruction
    torch_op: int  # the torch operation id the converter gave the node


@dataclass(frozen=True)
class FunctionOpMap:
    """The torch -> compiled pairing of one function: `outputs[(node name, torch output index)]`."""

    function: str
    outputs: dict[tuple[str, int], OpOutput]
    merged: frozenset[str]  # nodes whose only observable output is a later node's (fused into it)

    def odix_ops(self) -> list[int]:
        """The ODIX instruction ids to capture, each once."""
        return sorted({o.odix_op for o in self.outputs.values()})


def function_names(program: Any) -> list[str]:
    """The names of the graphs (functions) in an `AIProgram`, namespaces included, in program order."""
    from coreai.authoring.graph_builder import GraphOp

    names: list[str] = []

    def visit(region: Any) -> None:
        for op in region.blocks[0].operations:
            if isinstance(op, GraphOp):
                names.append(op.sym_name.value)
            elif op.regions:  # a namespace holds graphs in its own region
                visit(op.regions[0])

    visit(program._module._body.region)
    return names


def torch_nodes(program: Any, function: str) -> dict[int, str]:
    """Torch operation id -> FX node name, for the operations inside `function`'s graph only."""
    import coreai._compiler._mlir_libs._coreaiIR._bindings.mlir as mlir
    from coreai._compiler.ir import WalkResult

    graph = program._get_graph(function)
    if graph is None:
        raise InputError(f"unknown Core AI function {function!r}: the program has {', '.join(function_names(program))}")
    names: dict[int, str] = {}

    def visit(op: Any) -> Any:
        for source in mlir.get_source_info(op.location):
            if getattr(source, "name", None) == TORCH and source.identifiers and source.id is not None:
                # a fused location names several nodes; the binding gives the latest (highest id) first
                names[int(source.id)] = str(source.identifiers[0])
        return WalkResult.ADVANCE

    graph.operation.walk(visit)
    return names


def compiled_outputs(debug_infos: bytes) -> dict[tuple[int, int], tuple[int, int]]:
    """(torch op, torch output) -> (ODIX instruction, output) over the whole compiled model, from its debug info
    (`AIModel._debug_infos`). Only ODIX records are read: delegate records (Apple accelerators) do not occur in a
    Linux compile. When a torch output reaches several instructions, the highest id wins: instructions follow
    program order, so it is the last of the node's lowering, the one holding its result."""
    from minivlm.converters.coreai_asset import quiet_import

    quiet_import()
    from coreai_torch.debugging.debug_info import parse_debug_infos

    found: dict[tuple[int, int], tuple[int, int]] = {}
    for record in parse_debug_infos(debug_infos):
        if not record.identifier.startswith("odix"):
            continue
        for info in record.operations:
            produced = {(m.source_op_id, m.source_output): (m.target_op_id, m.target_output)
                        for m in info.get_output_mappings(COREAI)}
            for m in info.get_output_mappings(TORCH):
                target = produced.get((m.target_op_id, m.target_output))  # the join stays inside this record
                key = (m.source_op_id, m.source_output)
                if target is not None and (key not in found or target[0] > found[key][0]):
                    found[key] = target
    return found


def function_op_map(program: Any, function: str, compiled: dict[tuple[int, int], tuple[int, int]]) -> FunctionOpMap:
    """The pairing of `function`'s torch nodes with compiled outputs (see the module doc).

    When several torch nodes map to the same compiled output (a view fused into the matmul after it), that value
    is the latest node's (highest torch id: ids follow graph order); the others are `merged`, not observable."""
    names = torch_nodes(program, function)
    owner: dict[tuple[int, int], tuple[int, int]] = {}  # compiled output -> the torch output whose value it is
    for key, target in compiled.items():
        if key[0] in names and (target not in owner or key[0] > owner[target][0]):
            owner[target] = key
    kept = {key: target for target, key in owner.items()}
    outputs = {(names[t], o): OpOutput(*target, t) for (t, o), target in kept.items()}
    merged = {names[t] for (t, o) in compiled if t in names and (t, o) not in kept} - {n for n, _ in outputs}
    return FunctionOpMap(function, outputs, frozenset(merged))
