"""Per-layer parity of a Core AI asset (`minivlm.parity.coreai_layers`) on tiny modules converted here: a clean
conversion passes every layer, an edited weight is found at its own layer, and functions whose FX node names
collide (every function below has the same graph) are each paired with their own operations."""

import math

import pytest
import torch
from torch import nn

coreai_torch = pytest.importorskip("coreai_torch")

from minivlm.errors import InputError  # noqa: E402
from minivlm.parity.coreai_layers import CoreAILayers  # noqa: E402

# fp32 against fp32: a clean layer differs by float rounding only (measured >= 120 dB on these modules); an
# edited weight of relative size 1e-2 lands near 40 dB. 80 dB sits far from both.
MIN_PSNR_DB = 80.0
EDITED = "blocks.2.fc"  # the middle block's Linear
NAMES = ("ids", "x")


class Block(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.fc = nn.Linear(width, width)

    def forward(self, h):
        return h + torch.tanh(self.fc(h))


class Tiny(nn.Module):
    """Embedding of integer ids (with integer arithmetic before it), five residual blocks, a head."""

    def __init__(self, seed: int):
        super().__init__()
        torch.manual_seed(seed)
        self.embed = nn.Embedding(32, 16)
        self.blocks = nn.ModuleList(Block(16) for _ in range(5))
        self.head = nn.Linear(16, 4)

    def forward(self, ids, x):
        h = self.embed(ids * 2 + 1) + x
        for block in self.blocks:
            h = block(h)
        return self.head(h)


def _inputs():
    g = torch.Generator().manual_seed(1)
    return [torch.randint(0, 15, (2, 6), generator=g), torch.randn(2, 6, 16, generator=g)]


def _export(module):
    ep = torch.export.export(module.eval(), tuple(_inputs()))
    return ep.run_decompositions(coreai_torch.get_decomp_table())


@pytest.fixture(scope="module")
def asset(tmp_path_factory):
    """One asset, three functions with identical node names: `clean` (seed 0), `edited` (seed 0, EDITED's
    weight moved by 1 % of its scale) and `other` (seed 1). Returns the asset, the models and their programs."""
    models = {"clean": Tiny(0), "other": Tiny(1), "edited": Tiny(0)}
    weight = models["edited"].get_submodule(EDITED).weight
    with torch.no_grad():
        weight += 0.01 * weight.abs().max() * torch.randn(weight.shape, generator=torch.Generator().manual_seed(2))
    programs = {name: _export(m) for name, m in models.items()}
    converter = coreai_torch.TorchConverter()
    for name, ep in programs.items():
        converter.add_exported_program(ep, input_names=list(NAMES), output_names=["y"], entrypoint_name=name)
    path = tmp_path_factory.mktemp("coreai") / "model.aimodel"
    converter.to_coreai().save_asset(path)
    with CoreAILayers(path) as layers:
        yield layers, models, programs


def _first_reader(program, parameter: str) -> str:
    """The first node, in graph order, that reads a parameter (from the program's signature, not the report)."""
    placeholder = next(p for p, name in program.graph_signature.inputs_to_parameters.items() if name == parameter)
    return next(n.name for n in program.graph.nodes if n.op == "call_function"
                and placeholder in {a.name for a in n.all_input_nodes})


def _psnr(ref: torch.Tensor, got: torch.Tensor) -> float:
    """An independent PSNR (peak max |ref|), in float64 torch."""
    ref, got = ref.double(), got.double()
    return 10 * math.log10(float(ref.abs().max()) ** 2 / float(((got - ref) ** 2).mean()))


def test_clean_conversion_passes_every_layer(asset):
    layers, _, programs = asset
    report = layers.compare("clean", programs["clean"], _inputs(), NAMES, min_psnr_db=MIN_PSNR_DB)
    nodes = sum(n.op == "call_function" for n in programs["clean"].graph.nodes)
    assert report.compared >= 20, report.summary()
    assert report.compared + len(report.not_observable) + len(report.skipped) == nodes
    assert report.first_divergent is None, report.summary()
    assert all(row.psnr_db >= MIN_PSNR_DB for row in report.rows)
    # the integer arithmetic before the embedding is compared too, exactly
    integers = [row for row in report.rows if row.integer]
    assert integers and all(row.psnr_db == math.inf for row in integers)
    modules = {row.module for row in report.rows}
    assert {"blocks.0.fc", "blocks.4.fc", "head"} <= modules


def test_edited_weight_is_the_first_divergent_layer(asset):
    layers, models, programs = asset
    report = layers.compare("edited", programs["clean"], _inputs(), NAMES, min_psnr_db=MIN_PSNR_DB)
    first = report.first_divergent
    assert first is not None, report.summary()
    assert first.module == EDITED, report.summary()
    # the first node that reads the edited weight (its transpose), found in the reference program itself
    assert first.node == _first_reader(programs["clean"], f"{EDITED}.weight")
    index = report.rows.index(first)
    before = report.rows[:index]
    assert any(row.module == "blocks.1.fc" for row in before)
    assert all(row.psnr_db >= MIN_PSNR_DB for row in before)
    # Its PSNR is the edit's own, computed here in eager torch (fp32 noise sits ~100 dB below it): the weight's
    # transpose against the clean weight's, and the Linear's output (its addmm row) against the clean model's.
    clean, edited = (models[m].get_submodule(EDITED).weight.detach() for m in ("clean", "edited"))
    assert first.op == "aten.permute.default"
    assert first.psnr_db == pytest.approx(_psnr(clean.T, edited.T), abs=0.1)
    outputs = {}
    for name in ("clean", "edited"):
        hook = models[name].get_submodule(EDITED).register_forward_hook(
            lambda module, args, out, name=name: outputs.__setitem__(name, out.detach().reshape(-1, out.shape[-1])))
        with torch.no_grad():
            models[name](*_inputs())
        hook.remove()
    linear = next(row for row in report.rows if row.module == EDITED and row.op == "aten.addmm.default")
    assert linear.psnr_db == pytest.approx(_psnr(outputs["clean"], outputs["edited"]), abs=0.1)
    assert linear.psnr_db < MIN_PSNR_DB


def test_functions_with_colliding_node_names_are_compared_separately(asset):
    layers, _, programs = asset
    names = {name: {n.name for n in ep.graph.nodes if n.op == "call_function"} for name, ep in programs.items()}
    assert names["clean"] == names["other"]  # the collision this test is about
    maps = {name: layers.op_map(name) for name in ("clean", "other")}
    ops = {name: set(m.odix_ops()) for name, m in maps.items()}
    assert ops["clean"] and ops["other"] and not ops["clean"] & ops["other"]
    for name in ("clean", "other"):
        report = layers.compare(name, programs[name], _inputs(), NAMES, min_psnr_db=MIN_PSNR_DB)
        assert report.compared >= 20 and report.first_divergent is None, report.summary()
    # and the comparison can tell them apart: `other` is not `clean`'s conversion
    crossed = layers.compare("other", programs["clean"], _inputs(), NAMES, min_psnr_db=MIN_PSNR_DB)
    assert crossed.first_divergent is not None


def test_bad_input_is_a_one_line_error(asset):
    layers, _, programs = asset
    with pytest.raises(InputError, match=r"unknown Core AI function 'nope' in model.aimodel: it has "
                                         r"clean, other, edited$"):
        layers.compare("nope", programs["clean"], _inputs(), NAMES, min_psnr_db=MIN_PSNR_DB)
    with pytest.raises(InputError, match=r"input names \['x', 'idz'\] for 'clean': expected \['ids', 'x'\]"):
        layers.compare("clean", programs["clean"], _inputs(), ["x", "idz"], min_psnr_db=MIN_PSNR_DB)
    with pytest.raises(InputError, match="expected 2 torch tensors"):
        layers.compare("clean", programs["clean"], _inputs()[:1], NAMES, min_psnr_db=MIN_PSNR_DB)
    with pytest.raises(InputError, match="not a .aimodel folder"):
        CoreAILayers("missing.aimodel")

