"""MiniVLM's fusion encoder pruned physically: the smaller Fusion equals the masked one on every fusion graph
(classifiers, caption prefix and step), with uneven heads per layer, a layer with no heads and one with no FFN
neurons; its caption caches shrink to the most heads a layer keeps; cached greedy captions equal the uncached
reference; the state-dict keys are a subset of the unpruned ones and the model exports with no empty tensor."""

import dataclasses

import pytest
import torch

from minivlm.errors import ConfigError
from minivlm.python_ref.config import FusionConfig, tiny
from minivlm.python_ref.fusion import AttentionKind, Fusion
from minivlm.python_ref.fusion_graphs import CaptionPrefixGraph, CaptionStepGraph, ClassifierGraph
from minivlm.python_ref.generate import greedy
from minivlm.python_ref.packing import pack_inputs
from minivlm.python_ref.tokenizer import Tokenizer
from minivlm.pruning.physical import prune
from minivlm.pruning.units import masked, prunable_units

TOL = 1e-5  # fp32: the pruned model sums fewer (exactly zero) terms in another order
CFG = dataclasses.replace(tiny().fusion, num_layers=3)


def _model() -> Fusion:
    """A 3-layer tiny fusion with weights large enough that captions are not one repeated token, and biases
    away from 0 so that a wrongly kept or dropped one shows."""
    torch.manual_seed(0)
    f = Fusion(CFG).eval()
    with torch.no_grad():
        for name, p in f.named_parameters():
            if name.startswith("encoder.embeddings.") and p.dim() == 2:
                p.normal_(0, 0.3)
            elif p.dim() == 2:
                p.normal_(0, 1.0 / p.shape[1] ** 0.5)
            elif name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
        f.mlm_head.bias.normal_(0, 3.0)
    return f


def _masks(model: Fusion) -> dict[str, torch.Tensor]:
    """Kept values in (0.5, 1): layer 0 keeps no head and 3 of its neurons' masks at 0, layer 1 keeps 2 heads
    (uneven) and no FFN neuron, layer 2 keeps 3 heads and every neuron."""
    g = torch.Generator().manual_seed(1)
    masks = {u.name: 0.5 + 0.5 * torch.rand(u.count, generator=g) for u in prunable_units(model)}
    masks["encoder.layers.0.attn"] = torch.zeros(4)
    masks["encoder.layers.0"][[1, 5, 7]] = 0.0
    masks["encoder.layers.1.attn"][[0, 2]] = 0.0
    masks["encoder.layers.1"] = torch.zeros(CFG.intermediate_size)
    masks["encoder.layers.2.attn"][3] = 0.0
    return masks


def _err(got: torch.Tensor, want: torch.Tensor) -> float:
    """Max abs difference (0 for empty tensors: a layer without heads)."""
    assert got.shape == want.shape
    return float((got - want).abs().max()) if got.numel() else 0.0


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return Tokenizer.default()


@pytest.fixture(scope="module")
def pair():
    model = _model()
    masks = _masks(model)
    return model, masks, prune(model, masks)


def _inputs(tok, text: str, caption: bool = False):
    regions = torch.randn(4, CFG.region_dim, generator=torch.Generator().manual_seed(2))
    return pack_inputs(tok, text, ["red circle", "blue square"], regions, CFG, require_text=not caption)


def test_pruned_config_and_cache_heads(pair):
    model, _, pruned = pair
    cfg = pruned.cfg
    assert cfg.heads_per_layer == (0, 2, 3) and cfg.ffn_per_layer == (CFG.intermediate_size - 3, 0, CFG.intermediate_size)
    assert cfg.cache_heads == 3 and model.cfg.cache_heads == CFG.num_heads
    assert set(pruned.state_dict()) < set(model.state_dict())
    assert all(t.numel() for t in pruned.state_dict().values())
    assert "encoder.layers.0.attn.out.bias" in pruned.state_dict()
    assert "encoder.layers.1.ffn_out.bias" in pruned.state_dict()
    assert [u.name for u in prunable_units(pruned)] == ["encoder.layers.0", "encoder.layers.1.attn",
                                                         "encoder.layers.2", "encoder.layers.2.attn"]


@pytest.mark.parametrize("head", ["vqa", "match"])
def test_classifier_graphs_equal_the_masked_model(pair, tok, head):
    model, masks, pruned = pair
    args = _inputs(tok, "what color is the circle?").as_tuple()
    with torch.no_grad(), masked(model, prunable_units(model), masks):
        want = ClassifierGraph(model, head)(*args)
    with torch.no_grad():
        got = ClassifierGraph(pruned, head)(*args)
    assert float((got[0] - want[0]).abs().max()) <= TOL


def test_seq2seq_encoder_equals_the_masked_model(pair, tok):
    model, masks, pruned = pair
    x = _inputs(tok, "a red circle and a blue square")
    args = (*x.as_tuple(), AttentionKind.SEQ2SEQ)
    with torch.no_grad(), masked(model, prunable_units(model), masks):
        want = model.mlm_logits(model.encode(*args))
    with torch.no_grad():
        got = pruned.mlm_logits(pruned.encode(*args))
    assert float((got - want).abs().max()) <= TOL


def test_caption_graphs_equal_the_masked_model_in_their_own_heads(pair, tok):
    """The prefix and step graphs of the pruned model give each layer's kept heads exactly where the masked
    model has them (its zero heads removed, the rest zero), and the same logits."""
    model, masks, pruned = pair
    prefix = _inputs(tok, "", caption=True).caption_prefix(CFG.max_text_len)
    with torch.no_grad(), masked(model, prunable_units(model), masks):
        want_k, want_v = CaptionPrefixGraph(model)(*prefix)
    got_k, got_v = CaptionPrefixGraph(pruned)(*prefix)
    assert got_k.shape == (3, 1, 3, CFG.max_tags_len + CFG.max_regions, CFG.head_dim)
    for i in range(3):
        kept = torch.nonzero(masks[f"encoder.layers.{i}.attn"]).flatten()
        k = len(kept)
        for want, got in ((want_k, got_k), (want_v, got_v)):
            assert _err(got[i, :, :k], want[i, :, kept]) <= TOL
            assert not got[i, :, k:].any()  # the heads a layer does not have stay zero
    # One step at t = 2 with a cached token: random caches, then the pruned model's view of them.
    g = torch.Generator().manual_seed(3)
    step_in = list(CaptionStepGraph(model).example_inputs())
    step_in[0] = torch.tensor([[2417, tok.mask_id]])
    step_in[1] = torch.tensor([[1, 2]])
    step_in[2], step_in[3] = want_k, want_v
    step_in[4] = torch.cat([prefix[2], prefix[4]], dim=1)
    step_in[5], step_in[6] = (torch.randn(step_in[5].shape, generator=g) for _ in range(2))
    step_in[7][:, 0] = 1.0
    with torch.no_grad(), masked(model, prunable_units(model), masks):
        want = CaptionStepGraph(model)(*step_in)
    own = []
    for full in step_in[2], step_in[3], step_in[5], step_in[6]:
        small = torch.zeros(3, 1, 3, *full.shape[3:])
        for i in range(3):
            kept = torch.nonzero(masks[f"encoder.layers.{i}.attn"]).flatten()
            small[i, :, :len(kept)] = full[i, :, kept]
        own.append(small)
    got = CaptionStepGraph(pruned)(step_in[0], step_in[1], own[0], own[1], step_in[4], own[2], own[3], step_in[7])
    assert float((got[0] - want[0]).abs().max()) <= TOL
    for i in range(3):
        kept = torch.nonzero(masks[f"encoder.layers.{i}.attn"]).flatten()
        for w, o in ((want[1], got[1]), (want[2], got[2])):
            assert _err(o[i, :, :len(kept)], w[i, :, kept]) <= TOL
            assert not o[i, :, len(kept):].any()


def test_cached_greedy_caption_of_the_pruned_model_equals_uncached_and_masked(pair, tok):
    model, masks, pruned = pair
    x = _inputs(tok, "", caption=True)
    cached = greedy(pruned, tok, x)
    uncached = greedy(pruned, tok, x, cached=False)
    with masked(model, prunable_units(model), masks):
        reference = greedy(model, tok, x, cached=False)
    assert cached.token_ids == uncached.token_ids == reference.token_ids
    assert len(set(cached.token_ids)) >= 2, f"trivial caption {cached.token_ids}"
    assert float((cached.step_logits - reference.step_logits).abs().max()) <= TOL


def test_pruned_caption_graphs_export_without_empty_tensors(pair):
    _, _, pruned = pair
    for graph in (CaptionPrefixGraph(pruned), CaptionStepGraph(pruned)):
        program = torch.export.export(graph, graph.example_inputs(), strict=False)
        assert all(t.numel() for t in program.state_dict.values())
        outputs = graph(*graph.example_inputs())
        assert all(o.numel() for o in outputs)


def test_masks_reach_heads_and_neurons_with_gradients():
    model = _model()
    units = prunable_units(model)
    masks = {u.name: torch.ones(u.count, requires_grad=True) for u in units}
    tok = Tokenizer.default()
    x = _inputs(tok, "is there a red circle?")
    with masked(model, units, masks):
        model.vqa_logits(model.encode(*x.as_tuple(), AttentionKind.FULL)).sum().backward()
    assert all(float(m.grad.abs().sum()) > 0 for m in masks.values())
    assert all(getattr(model.get_submodule(u.name), "head_mask" if u.kind == "heads" else "neuron_mask") is None
               for u in units)


@pytest.mark.parametrize("field, value", [("heads_per_layer", (4, 4)), ("heads_per_layer", (4, 5, 0)),
                                          ("ffn_per_layer", (1, -1, 2)), ("heads_per_layer", [4, 4, 4])])
def test_bad_per_layer_counts_fail_in_one_line(field, value):
    with pytest.raises(ConfigError, match=field) as err:
        dataclasses.replace(CFG, **{field: value})
    assert "\n" not in str(err.value) and repr(value) in str(err.value)


def test_uniform_counts_are_the_unpruned_model():
    assert FusionConfig().cache_heads == 12
    cfg = dataclasses.replace(CFG, heads_per_layer=(4, 4, 4), ffn_per_layer=(64, 64, 64))
    assert {k: v.shape for k, v in Fusion(cfg).state_dict().items()} == {k: v.shape for k, v in Fusion(CFG).state_dict().items()}


def test_structure_round_trip_and_strictness(pair):
    from minivlm.python_ref.config import MiniVLMConfig, is_pruned, structure, with_structure

    _, _, pruned = pair
    base = MiniVLMConfig(name="minivlm-tiny", tee=tiny().tee, fusion=CFG)
    cfg = dataclasses.replace(base, fusion=pruned.cfg)
    described = structure(cfg)
    assert described == {"fusion": {"heads": [0, 2, 3], "ffn": [61, 0, 64]}}
    assert with_structure(base, described) == cfg and is_pruned(cfg) and not is_pruned(base)
    assert with_structure(base, structure(base)) == base  # full lists are stored as ()
    for bad, words in (({"fusion": {"heads": [0, 2, 3]}}, "exactly the keys"), ({"tee": {}}, "fusion"),
                       ({"fusion": {"heads": [9, 2, 3], "ffn": [1, 1, 1]}}, "heads_per_layer"),
                       ({"fusion": {"heads": "all", "ffn": [1, 1, 1]}}, "list")):
        with pytest.raises(ConfigError, match=words) as err:
            with_structure(base, bad)
        assert "\n" not in str(err.value)
