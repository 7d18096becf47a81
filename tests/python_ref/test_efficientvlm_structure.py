"""Structurally pruned EfficientVLMs (config.py `heads_per_layer` & co., the per-layer modules of text.py, vit.py and
cross_modal.py): the config refuses a structure that does not fit in one line, a model keeping fewer heads and
neurons per layer (0 included) runs every export graph with the keys of the unpruned model minus the pruned ones
and no zero-size tensor, and the pruning masks act as removing those heads and neurons would."""

import copy
from dataclasses import replace

import pytest
import torch

from minivlm.python_ref.efficientvlm.config import (TextConfig, ViTConfig, efficientvlm_demo_tiny, is_pruned,
                                                    structure, with_structure)
from minivlm.python_ref.efficientvlm.graphs import export_graphs
from minivlm.python_ref.efficientvlm.model import EfficientVLM
from minivlm.python_ref.efficientvlm.taps import recording
from minivlm.python_ref.efficientvlm.text import Attention
from minivlm.python_ref.errors import ConfigError

BASE = efficientvlm_demo_tiny()  # 2 vision / 2 text / 2 cross layers, 2 heads of 16, MLP 128, FFN 64
# Uneven heads and widths, and in each modality an attention with 0 heads and a feed-forward with 0 neurons.
PRUNED_STRUCTURE = {
    "vision": {"heads": [1, 0], "mlp": [0, 37]},
    "text": {"self_heads": [0, 2, 1, 0], "cross_heads": [2, 0], "ffn": [0, 21, 64, 0]},
}
PRUNED = with_structure(BASE, PRUNED_STRUCTURE)


def _model(cfg, seed: int = 0) -> EfficientVLM:
    torch.manual_seed(seed)
    model = EfficientVLM(cfg).eval()
    with torch.no_grad():  # biases off zero, so that a bias-only layer shows
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


def _fused_inputs(cfg, batch: int = 2):
    g = torch.Generator().manual_seed(3)
    tokens = torch.randn(batch, cfg.vision.num_tokens, cfg.vision.width, generator=g)
    ids = torch.randint(5, cfg.text.vocab_size, (batch, cfg.text.max_text_len), generator=g)
    mask = torch.ones(batch, cfg.text.max_text_len)
    mask[1, 7:] = 0.0
    return tokens, ids, mask


def _graph_inputs(cfg, name: str):
    if name == "vision":
        return (torch.randn(2, 3, cfg.vision.image_size, cfg.vision.image_size, generator=torch.Generator().manual_seed(4)),)
    fused = _fused_inputs(cfg)
    return fused[1:] if name == "text_feature" else fused


# --- config ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("part, field, value, message", [
    ("vision", "heads_per_layer", (1,), "vision.heads_per_layer has 1 entries [1]; expected 2 (one per layer) or none"),
    ("vision", "heads_per_layer", (1, 3), "vision.heads_per_layer[1] is 3; expected an int in [0, 2]"),
    ("vision", "mlp_per_layer", (-1, 4), "vision.mlp_per_layer[0] is -1; expected an int in [0, 128]"),
    ("vision", "mlp_per_layer", [4, 4], "vision.mlp_per_layer is [4, 4]; expected a tuple of 2 ints in [0, 128]"),
    ("text", "self_heads_per_layer", (2, 2), "text.self_heads_per_layer has 2 entries [2, 2]; expected 4"),
    ("text", "cross_heads_per_layer", (True, 1), "text.cross_heads_per_layer[0] is True; expected an int in [0, 2]"),
    ("text", "ffn_per_layer", (1, 2, 3, 64.0), "text.ffn_per_layer[3] is 64.0; expected an int in [0, 64]"),
    ("text", "ffn_per_layer", (1, 2, 3, 65), "text.ffn_per_layer[3] is 65; expected an int in [0, 64]"),
])
def test_the_config_refuses_per_layer_widths_that_do_not_fit_in_one_line(part, field, value, message):
    with pytest.raises(ConfigError) as err:
        replace(BASE, **{part: replace(getattr(BASE, part), **{field: value})})
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_layer_methods_read_the_per_layer_tuples_or_the_uniform_width():
    v, t = ViTConfig(), TextConfig()
    assert [v.layer_heads(i) for i in (0, 11)] == [12, 12] and v.layer_mlp(3) == 3072 and v.head_dim == 64
    assert (t.layer_self_heads(11), t.layer_cross_heads(5), t.layer_ffn(0), t.head_dim) == (12, 12, 3072, 64)
    assert [PRUNED.vision.layer_heads(i) for i in range(2)] == [1, 0]
    assert [PRUNED.text.layer_ffn(i) for i in range(4)] == [0, 21, 64, 0]
    assert [PRUNED.text.layer_cross_heads(j) for j in range(2)] == [2, 0]
    assert PRUNED.text.head_dim == BASE.text.head_dim == 16


def test_structure_round_trips_and_a_full_structure_is_the_preset():
    assert structure(PRUNED) == PRUNED_STRUCTURE and is_pruned(PRUNED) and not is_pruned(BASE)
    assert with_structure(BASE, structure(PRUNED)) == PRUNED
    assert with_structure(PRUNED, structure(BASE)) == BASE  # full layers are stored as (): equal to the preset
    # A full entry is stored as (), a pruned one as given.
    assert PRUNED.text.cross_heads_per_layer == (2, 0) and with_structure(
        BASE, {**PRUNED_STRUCTURE, "text": {**PRUNED_STRUCTURE["text"], "cross_heads": [2, 2]}}).text.cross_heads_per_layer == ()


@pytest.mark.parametrize("described, message", [
    ([], "structure is []; expected an object with exactly the keys ['text', 'vision']"),
    ({"vision": PRUNED_STRUCTURE["vision"]}, "structure is ['vision']; expected an object with exactly the keys"),
    ({**PRUNED_STRUCTURE, "audio": {}}, "structure is ['audio', 'text', 'vision']; expected"),
    ({**PRUNED_STRUCTURE, "vision": {"heads": [1, 0]}}, "structure.vision is ['heads']; expected an object with exactly the keys ['heads', 'mlp']"),
    ({**PRUNED_STRUCTURE, "vision": {"heads": [1, 0], "mlp": [0, 1], "ffn": [1, 1]}}, "structure.vision is ['ffn', 'heads', 'mlp']"),
    ({**PRUNED_STRUCTURE, "vision": {"heads": "1 0", "mlp": [0, 1]}}, "structure.vision.heads is '1 0'; expected a list of 2 ints"),
    ({**PRUNED_STRUCTURE, "vision": {"heads": [1, 0, 1], "mlp": [0, 1]}},
     "structure: vision.heads_per_layer has 3 entries [1, 0, 1]; expected 2"),
    ({**PRUNED_STRUCTURE, "text": {**PRUNED_STRUCTURE["text"], "cross_heads": [2, 3]}},
     "structure: text.cross_heads_per_layer[1] is 3; expected an int in [0, 2]"),
])
def test_with_structure_is_strict(described, message):
    with pytest.raises(ConfigError) as err:
        with_structure(BASE, described)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


# --- modules -----------------------------------------------------------------------------------------------------


def test_a_pruned_model_has_a_subset_of_the_keys_and_no_zero_size_tensor():
    full, pruned = EfficientVLM(BASE).state_dict(), EfficientVLM(PRUNED).state_dict()
    assert set(pruned) < set(full)
    assert all(t.numel() > 0 for t in pruned.values())
    # The fully pruned parts keep only their output bias; the rest their kept heads / neurons.
    for gone in ("vision.blocks.1.attn.query.weight", "vision.blocks.0.mlp_in.weight", "text.layers.0.attn.key.bias",
                 "text.layers.0.ffn.ffn_in.weight", "cross.layers.1.attn.value.weight",
                 "cross.layers.1.cross_attn.query.weight", "cross.layers.1.ffn.ffn_out.weight"):
        assert gone in full and gone not in pruned, gone
    for kept in ("vision.blocks.1.attn.out.bias", "vision.blocks.0.mlp_out.bias", "text.layers.0.ffn.ffn_out.bias",
                 "cross.layers.1.cross_attn.out.bias", "cross.layers.1.ffn.ffn_out.bias"):
        assert pruned[kept].shape == full[kept].shape, kept
    hd = BASE.text.head_dim
    assert pruned["vision.blocks.0.attn.query.weight"].shape == (1 * hd, BASE.vision.width)
    assert pruned["vision.blocks.0.attn.out.weight"].shape == (BASE.vision.width, 1 * hd)
    assert pruned["vision.blocks.1.mlp_in.weight"].shape == (37, BASE.vision.width)
    assert pruned["text.layers.1.ffn.ffn_out.weight"].shape == (BASE.text.hidden_size, 21)
    assert pruned["cross.layers.0.attn.query.weight"].shape == (1 * hd, BASE.text.hidden_size)
    assert pruned["cross.layers.0.cross_attn.key.weight"].shape == (2 * hd, BASE.vision.width)


def test_every_export_graph_of_a_pruned_model_runs():
    full, pruned = export_graphs(_model(BASE)), export_graphs(_model(PRUNED))
    for name, graph in pruned.items():
        with torch.no_grad():
            got = graph(*_graph_inputs(PRUNED, name))
            want = full[name](*_graph_inputs(BASE, name))
            zeros = graph(*graph.example_inputs(1))
        assert [o.shape for o in got] == [o.shape for o in want], name
        assert all(torch.isfinite(o).all() for o in (*got, *zeros)), name


def test_a_zero_head_attention_is_its_out_bias_and_a_zero_neuron_ffn_its_output_bias():
    """Built independently: a full attention whose out weight is zero computes exactly its out bias."""
    torch.manual_seed(0)
    empty, full = Attention(8, 0, 6, head_dim=4), Attention(8, 2, 6)
    with torch.no_grad():
        empty.out.bias.normal_()
        full.out.weight.zero_()
        full.out.bias.copy_(empty.out.bias)
    x, ctx = torch.randn(2, 3, 8), torch.randn(2, 5, 6)
    assert torch.equal(empty(x, ctx), full(x, ctx))
    assert torch.equal(Attention(8, 0, 6).out.bias, torch.zeros(8))  # no head_dim needed without heads
    model = _model(PRUNED)
    layer = model.text.layers[0]  # 0 heads and 0 neurons: attention and FFN are their biases
    x = torch.randn(2, 4, BASE.text.hidden_size)
    mask = torch.zeros(2, 1, 4)
    want = layer.attn_norm(x + layer.attn.out.bias)
    want = layer.ffn.ffn_norm(want + layer.ffn.ffn_out.bias)
    torch.testing.assert_close(layer(x, mask), want, rtol=0, atol=0)


def test_recording_a_pruned_model_gives_one_map_per_layer_with_its_heads():
    model = _model(PRUNED)
    tokens, ids, mask = _fused_inputs(PRUNED)
    with recording(model) as rec:
        model.fuse(model.encode_text(ids, mask), mask, model.encode_image(torch.zeros(2, 3, 32, 32)))
    assert [a.shape[1] for a in rec.vision.attention] == [1, 0]
    assert [a.shape[1] for a in rec.text.attention] == [0, 2]
    assert [a.shape[1] for a in rec.cross.attention] == [1, 0] and [a.shape[1] for a in rec.cross.cross_attention] == [2, 0]


# --- masks -------------------------------------------------------------------------------------------------------


def _run_all(model: EfficientVLM, cfg) -> tuple[torch.Tensor, ...]:
    graphs = export_graphs(model)
    return tuple(o for name, g in graphs.items() for o in g(*_graph_inputs(cfg, name)))


def _masked_modules(model: EfficientVLM):
    """(attention or FFN module, its mask attribute, the output Linear, how many columns per unit) of every part."""
    hd = BASE.text.head_dim
    for block in model.vision.blocks:
        yield block.attn, "head_mask", block.attn.out, hd
        yield block, "neuron_mask", block.mlp_out, 1
    for layer in [*model.text.layers, *model.cross.layers]:
        yield layer.attn, "head_mask", layer.attn.out, hd
        yield layer.ffn, "neuron_mask", layer.ffn.ffn_out, 1
        if hasattr(layer, "cross_attn"):
            yield layer.cross_attn, "head_mask", layer.cross_attn.out, hd


def _units(module, attribute: str) -> int:
    return module.heads if attribute == "head_mask" else module.neurons


@torch.no_grad()
def test_masks_of_ones_change_nothing():
    model = _model(BASE)
    want = _run_all(model, BASE)
    for module, attribute, _, _ in _masked_modules(model):
        setattr(module, attribute, torch.ones(_units(module, attribute)))
    for got, w in zip(_run_all(model, BASE), want):
        assert torch.equal(got, w)


@torch.no_grad()
def test_zeroing_a_mask_entry_equals_zeroing_its_columns_of_the_output_linear():
    """The mask of one head (neuron) per part set to 0 against a copy whose output Linear has that head's
    head_dim input columns (that neuron's column) set to 0: the head's contribution removed by hand."""
    model = _model(BASE)
    edited = copy.deepcopy(model)
    for (module, attribute, _, width), (_, _, out, _) in zip(_masked_modules(model), _masked_modules(edited)):
        unit = _units(module, attribute) - 1  # the last head / neuron
        mask = torch.ones(_units(module, attribute))
        mask[unit] = 0.0
        setattr(module, attribute, mask)
        out.weight[:, unit * width:(unit + 1) * width] = 0.0
    before = _run_all(_model(BASE), BASE)
    for got, want, unmasked in zip(_run_all(model, BASE), _run_all(edited, BASE), before):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
        assert not torch.allclose(got, unmasked, atol=1e-4)  # the masks did act


def test_gradients_reach_the_masks():
    model = _model(BASE).train()
    masks = []
    for module, attribute, _, _ in _masked_modules(model):
        mask = torch.full((_units(module, attribute),), 0.5, requires_grad=True)
        setattr(module, attribute, mask)
        masks.append(mask)
    loss = sum(o.square().sum() for o in _run_all(model, BASE))
    loss.backward()
    assert all(m.grad is not None and m.grad.abs().sum() > 0 for m in masks)
