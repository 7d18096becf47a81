"""`converters/tflite_merge.py`: single-signature `.tflite` files merged into one model, one copy of each weight.

The toy graphs are converted by litert-torch (build tier); the subgraph-index remapping is checked on flatbuffers
written here with the schema's object API (fast tier), since nothing in our graphs has control flow.
"""

import numpy as np
import pytest
import torch
from torch import nn

from minivlm.converters.tflite_merge import merge, read_model, stored_buffers, subgraph_fields
from minivlm.python_ref.errors import ConversionError


class _Toy(nn.Module):
    """y = x @ shared.T + x @ own.T: `shared` is the same tensor in both toy graphs, `own` differs but has its shape."""

    def __init__(self, shared: torch.Tensor, own: torch.Tensor) -> None:
        super().__init__()
        self.shared, self.own = nn.Parameter(shared), nn.Parameter(own)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.shared.T + torch.tanh(x @ self.own.T)


def _convert(module: nn.Module, x: torch.Tensor, path) -> bytes:
    import litert_torch

    litert_torch.convert(module.eval(), (x,)).export(str(path))
    return path.read_bytes()



def _run(data: bytes, x: np.ndarray, key: str | None = None) -> np.ndarray:
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_content=data).get_signature_runner(key)
    (name,) = runner.get_input_details()
    return next(iter(runner(**{name: x}).values()))


@pytest.mark.build
def test_a_shared_weight_is_stored_once_and_same_shape_weights_both_stay(tmp_path):
    torch.manual_seed(0)
    shared, own_a, own_b = (torch.randn(24, 16) for _ in range(3))
    x = torch.randn(1, 16)
    a, b = _Toy(shared, own_a), _Toy(shared, own_b)
    files = {"a": _convert(a, x, tmp_path / "a.tflite"), "b": _convert(b, x, tmp_path / "b.tflite")}
    merged = merge(files)

    model = read_model(merged)
    assert [s.signatureKey.decode() for s in model.signatureDefs] == ["a", "b"]
    assert [s.subgraphIndex for s in model.signatureDefs] == [0, 1]
    # The weights' bytes as PyTorch holds them (FULLY_CONNECTED keeps PyTorch's (out, in) layout): each alone
    # is in each graph's file, and in the merged one exactly once.
    weights = {n: w.detach().numpy().astype(np.float32).tobytes() for n, w in (("shared", shared), ("a", own_a), ("b", own_b))}
    assert stored_buffers(files["a"]).count(weights["shared"]) == 1 and stored_buffers(files["a"]).count(weights["a"]) == 1
    constants = stored_buffers(merged)
    assert {n: constants.count(w) for n, w in weights.items()} == {"shared": 1, "a": 1, "b": 1}
    assert len(constants) == len(set(constants))  # nothing else stored twice
    assert len(merged) < len(files["a"]) + len(files["b"]) - len(weights["shared"]) // 2

    # Each signature computes what its graph alone computes (same runtime and kernels: a tight bound, not
    # bit-exact), and what PyTorch computes (fp32 across runtimes).
    for key, module in (("a", a), ("b", b)):
        alone, together = _run(files[key], x.numpy(), None), _run(merged, x.numpy(), key)
        np.testing.assert_allclose(together, alone, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(together, module(x).detach().numpy(), rtol=1e-4, atol=1e-5)
    # LiteRT's own loader verifies the flatbuffer (shared quantization tables, aligned buffers) before use.
    from ai_edge_litert.compiled_model import CompiledModel

    (tmp_path / "model.tflite").write_bytes(merged)
    assert CompiledModel.from_file(str(tmp_path / "model.tflite")).get_num_signatures() == 2


def _model_with_while(schema, n_subgraphs: int) -> bytes:
    """A flatbuffer (not runnable) whose first subgraph holds a WHILE op naming subgraphs 1 and 2 and a StableHLO
    composite naming subgraph 2."""
    import flatbuffers

    model = schema.ModelT()
    model.version, model.buffers = 3, [schema.BufferT()]
    code = schema.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = schema.BuiltinOperator.WHILE
    model.operatorCodes = [code]
    model.subgraphs = []
    for i in range(n_subgraphs):
        sg = schema.SubGraphT()
        sg.tensors, sg.inputs, sg.outputs, sg.operators, sg.name = [], [], [], [], f"sg{i}"
        model.subgraphs.append(sg)
    loop = schema.OperatorT()
    loop.opcodeIndex, loop.inputs, loop.outputs = 0, [], []
    loop.builtinOptionsType, loop.builtinOptions = schema.BuiltinOptions.WhileOptions, schema.WhileOptionsT()
    loop.builtinOptions.condSubgraphIndex, loop.builtinOptions.bodySubgraphIndex = 1, 2
    loop.builtinOptions2Type = schema.BuiltinOptions2.StableHLOCompositeOptions
    loop.builtinOptions2 = schema.StableHLOCompositeOptionsT()
    loop.builtinOptions2.decompositionSubgraphIndex = 2
    model.subgraphs[0].operators = [loop]
    signature = schema.SignatureDefT()
    signature.inputs, signature.outputs, signature.signatureKey, signature.subgraphIndex = [], [], "serving_default", 0
    model.signatureDefs = [signature]
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def test_subgraph_indices_inside_ops_follow_their_subgraphs():
    from ai_edge_litert import schema_py_generated as schema

    merged = read_model(merge({"first": _model_with_while(schema, 4), "second": _model_with_while(schema, 3)}))
    assert [sg.name.decode() for sg in merged.subgraphs] == ["first", "first/sg1", "first/sg2", "first/sg3",
                                                              "second", "second/sg1", "second/sg2"]
    assert [(s.signatureKey.decode(), s.subgraphIndex) for s in merged.signatureDefs] == [("first", 0), ("second", 4)]
    ops = [merged.subgraphs[0].operators[0], merged.subgraphs[4].operators[0]]
    assert [(op.builtinOptions.condSubgraphIndex, op.builtinOptions.bodySubgraphIndex) for op in ops] == [(1, 2), (5, 6)]
    assert [op.builtinOptions2.decompositionSubgraphIndex for op in ops] == [2, 6]
    assert len(merged.operatorCodes) == 1  # the same WHILE code in both: unified


def test_every_subgraph_index_field_of_the_schema_is_remapped():
    """The remapping treats every options field whose name contains "subgraph" as a subgraph index: these are the
    schema's (a new kind of field, or an index under another name, shows up here)."""
    from ai_edge_litert import schema_py_generated as schema

    found = {(name, f) for name in dir(schema) if name.endswith("OptionsT")
             for f in subgraph_fields(getattr(schema, name)())}
    assert found == {
        ("CallOnceOptionsT", "initSubgraphIndex"), ("CallOptionsT", "subgraph"),
        ("IfOptionsT", "thenSubgraphIndex"), ("IfOptionsT", "elseSubgraphIndex"),
        ("WhileOptionsT", "condSubgraphIndex"), ("WhileOptionsT", "bodySubgraphIndex"),
        ("StableHLOCompositeOptionsT", "decompositionSubgraphIndex"),
        ("StablehloCaseOptionsT", "branchSubgraphIndices"), ("StablehloReduceOptionsT", "bodySubgraphIndex"),
        ("StablehloReduceWindowOptionsT", "bodySubgraphIndex"), ("StablehloScatterOptionsT", "updateComputationSubgraphIndex"),
        ("StablehloSortOptionsT", "comparatorSubgraphIndex"), ("StablehloWhileOptionsT", "condSubgraphIndex"),
        ("StablehloWhileOptionsT", "bodySubgraphIndex"),
    }


def test_a_model_with_two_signatures_is_refused():
    from ai_edge_litert import schema_py_generated as schema

    import flatbuffers

    model = read_model(_model_with_while(schema, 1))
    model.signatureDefs = model.signatureDefs * 2
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    with pytest.raises(ConversionError, match="TFLite x: expected one signature to merge, found 2"):
        merge({"x": bytes(builder.Output())})
