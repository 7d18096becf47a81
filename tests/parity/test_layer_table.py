"""The per-layer comparison shared by Core AI and the Core ML executor (`minivlm.parity.layer_table`): how a layer
is judged, independent of any runtime."""

import math

import pytest
import torch
from torch import nn

from minivlm.parity.layer_table import layer_row, operand_peak, placeholder_values, torch_values



class _Centred(nn.Module):
    """LayerNorm's first half twice: the second mean averages values that already cancel to ~0."""

    def forward(self, x):
        c = x - x.mean(-1, keepdim=True)
        return torch.tanh(c.mean(-1))


def test_additive_layer_is_judged_at_its_operands_scale():
    """A mean of cancelling values, off by float32 rounding of its operands, passes; the same absolute error on
    a non-additive layer, or an error at the operands' scale on the mean, does not."""
    x = torch.randn(4, 64, generator=torch.Generator().manual_seed(3)) * 5
    program = torch.export.export(_Centred(), (x,))
    nodes = {n.target: n for n in program.graph.nodes if n.op == "call_function"}
    means = [n for n in program.graph.nodes if n.target == torch.ops.aten.mean.dim]
    sub, second, tanh = nodes[torch.ops.aten.sub.Tensor], means[1], nodes[torch.ops.aten.tanh.default]
    c = (x - x.mean(-1, keepdim=True)).numpy()
    values = {sub.name: [c]}
    ref = c.mean(-1)
    peak = float(abs(c).max())
    assert abs(ref).max() < 1e-5 * peak  # it cancels
    assert operand_peak(second, values, placeholder_values(program, [x])) == peak
    assert operand_peak(tanh, values, {}) == 0.0

    rounding = (peak * 2.0 ** -23) * torch.randn(ref.shape, generator=torch.Generator().manual_seed(4)).numpy()
    row = layer_row(second, ref, ref + rounding, peak)
    expected = 10 * math.log10(peak ** 2 / float((rounding.astype("float64") ** 2).mean()))
    assert row.psnr_db == pytest.approx(expected, abs=0.01) and row.psnr_db > 120
    assert layer_row(second, ref, ref + rounding).psnr_db < 60  # judged at its own scale, as before
    assert layer_row(tanh, ref, ref + rounding, 0.0).psnr_db < 60
    wrong = c[:, :32].mean(-1)  # half the row: a mis-lowered reduction
    assert layer_row(second, ref, wrong, peak).psnr_db < 40


def test_torch_values_keeps_every_node_in_graph_order():
    """Each node's kept value equals the same computation done by hand."""
    x = torch.randn(3, 8, generator=torch.Generator().manual_seed(5))
    program = torch.export.export(_Centred(), (x,))
    values = torch_values(program, [x])
    names = [n.name for n in program.graph.nodes if n.op == "call_function"]
    assert list(values) == names
    c = x - x.mean(-1, keepdim=True)
    assert torch.allclose(torch.from_numpy(values[names[-1]][0]), torch.tanh(c.mean(-1)), atol=1e-7)
