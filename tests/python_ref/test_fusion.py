"""Fusion transformer: layout and packing, attention masks, heads, export graphs and parameter budget."""

import pytest
import torch
from torch import nn

from minivlm.python_ref.config import minivlm_paper, tiny
from minivlm.python_ref.errors import InputError
from minivlm.python_ref.errors import ConfigError
from minivlm.python_ref.fusion import AttentionKind, Fusion, LayerNorm, seq2seq_pattern
from minivlm.python_ref.fusion_graphs import CaptionPrefixGraph, CaptionStepGraph, ClassifierGraph
from minivlm.python_ref.packing import FUSION_INPUT_NAMES, pack_inputs
from minivlm.python_ref.tokenizer import Tokenizer

CFG = tiny().fusion
# name -> the graph of a Fusion, as Graphs.of builds it
GRAPHS = {
    "vqa": lambda f: ClassifierGraph(f, "vqa"),
    "match": lambda f: ClassifierGraph(f, "match"),
    "caption_prefix": CaptionPrefixGraph,
    "caption_step": CaptionStepGraph,
}


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return Tokenizer.default()


@pytest.fixture(scope="module")
def fusion() -> Fusion:
    torch.manual_seed(0)
    return Fusion(CFG).eval()


def _regions(k: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(k, CFG.region_dim, generator=torch.Generator().manual_seed(seed))


def _encode(fusion, inputs, kind):
    with torch.no_grad():
        return fusion.encode(*inputs.as_tuple(), kind)


def test_layer_norm_matches_torch():
    x = torch.randn(3, 5, 32) * 4 + 2
    ours, ref = LayerNorm(32, 1e-12), nn.LayerNorm(32, eps=1e-12)
    with torch.no_grad():
        for p in (ours.weight, ref.weight, ours.bias, ref.bias):
            p.copy_(torch.randn(32, generator=torch.Generator().manual_seed(p.numel())))
    torch.testing.assert_close(ours(x), ref(x), atol=1e-5, rtol=1e-5)
    assert [n for n, _ in ours.named_parameters()] == ["weight", "bias"]


@pytest.mark.parametrize("shape", [(2, 37, 32), (1, 32), (3, 1, 5, 32)])
def test_layer_norm_4d_statistics_are_the_last_dim_mean_bit_for_bit(shape):
    """The (N, 1, 1, H) view XNNPACK delegates reduces exactly the values `mean(-1)` reduces, in the same order."""
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(len(shape))) * 50 + 7
    ln = LayerNorm(32, 1e-12)
    centred = x - x.mean(dim=-1, keepdim=True)
    plain = centred * torch.rsqrt((centred * centred).mean(dim=-1, keepdim=True) + ln.eps) * ln.weight + ln.bias
    with torch.no_grad():
        assert torch.equal(ln(x), plain)


def test_exported_layer_norm_means_are_4d_over_the_inner_dims():
    """What XNNPACK's partitioner takes whole (mean.dim: rank 4, dims [2, 3], keepdim)."""
    graph = torch.export.export(LayerNorm(32, 1e-12), (torch.randn(2, 7, 32),)).graph
    means = [n for n in graph.nodes if n.op == "call_function" and "mean" in str(n.target)]
    assert len(means) == 2
    for n in means:
        assert n.args[0].meta["val"].dim() == 4 and sorted(d % 4 for d in n.args[1]) == [2, 3] and n.args[2] is True


# ---- packing ----------------------------------------------------------------------------------------------


def test_pack_layout(tok):
    x = pack_inputs(tok, "What color is the circle?", ["red circle", "blue square"], _regions(3), CFG)
    text = tok.encode("What color is the circle?")
    tags = tok.encode("red circle blue square")
    ids = x.input_ids[0].tolist()
    n = len(text) + 2
    assert ids[:n] == [tok.cls_id, *text, tok.sep_id]
    assert ids[n : CFG.max_text_len] == [tok.pad_id] * (CFG.max_text_len - n)
    assert ids[CFG.max_text_len : CFG.max_text_len + len(tags) + 1] == [*tags, tok.sep_id]
    assert x.input_ids.shape == x.token_type_ids.shape == x.token_mask.shape == (1, CFG.max_text_tags_len)
    assert x.input_ids.dtype == x.token_type_ids.dtype == torch.int64 and x.token_mask.dtype == torch.float32
    assert x.token_mask[0].tolist() == [1.0] * n + [0.0] * (CFG.max_text_len - n) + [1.0] * (len(tags) + 1) + [0.0] * (
        CFG.max_tags_len - len(tags) - 1
    )
    assert x.token_type_ids[0, CFG.max_text_len : CFG.max_text_len + len(tags) + 1].eq(1).all()
    assert x.token_type_ids[0, : CFG.max_text_len].eq(0).all()
    assert x.regions.shape == (1, CFG.max_regions, CFG.region_dim)
    assert x.region_mask[0].tolist() == [1.0] * 3 + [0.0] * 7
    assert torch.equal(x.regions[0, :3], _regions(3)) and x.regions[0, 3:].eq(0).all()


def test_pack_keeps_whole_tags_in_order(tok):
    # tiny: max_tags_len 8 -> 7 tag tokens + [SEP]; each tag below is 2 tokens
    tags = ["red circle", "blue square", "green triangle", "yellow circle", "purple square"]
    x = pack_inputs(tok, "hi", tags, _regions(0), CFG)
    seg_b = x.input_ids[0, CFG.max_text_len :].tolist()
    assert seg_b == [*tok.encode("red circle blue square green triangle"), tok.sep_id, tok.pad_id]


def test_pack_accepts_ids_and_empty_tags(tok):
    x = pack_inputs(tok, [2417, 4418], [], _regions(0), CFG)
    assert x.input_ids[0, :4].tolist() == [tok.cls_id, 2417, 4418, tok.sep_id]
    assert x.input_ids[0, CFG.max_text_len] == tok.sep_id and x.region_mask.sum() == 0


def test_pack_caption_prefix_without_text(tok):
    x = pack_inputs(tok, "", ["red circle"], _regions(2), CFG, require_text=False)
    tag_ids, tag_types, tag_mask, regions, region_mask = x.caption_prefix(CFG.max_text_len)
    assert tag_ids.shape == (1, CFG.max_tags_len) and tag_ids[0, :3].tolist() == [*tok.encode("red circle"), tok.sep_id]


@pytest.mark.parametrize(
    "text, regions, match",
    [
        ("", _regions(1), "has no tokens"),
        ("   ", _regions(1), "has no tokens"),
        ("word " * 15, _regions(1), "text is 15 tokens, the model takes at most 14"),
        ([30522], _regions(1), "token id 30522 is outside"),
        ([-1], _regions(1), "token id -1 is outside"),
        (3.5, _regions(1), "text must be a str or a list of token ids"),
        ("hi", torch.zeros(CFG.region_dim), r"regions have shape \(38,\)"),
        ("hi", torch.zeros(2, 7), r"regions have shape \(2, 7\), the model needs \(K, 38\)"),
        ("hi", torch.zeros(11, CFG.region_dim), "got 11 regions, the model takes at most 10"),
        ("hi", torch.full((1, CFG.region_dim), float("nan")), "finite"),
        ("hi", [[0.0] * 38], "regions must be a tensor or array"),
    ],
)
def test_pack_rejects_bad_input(tok, text, regions, match):
    with pytest.raises(InputError, match=match) as e:
        pack_inputs(tok, text, ["red circle"], regions, CFG)
    assert "\n" not in str(e.value)


def test_pack_rejects_non_str_tags(tok):
    with pytest.raises(InputError, match="tags must be a list of str"):
        pack_inputs(tok, "hi", ["red", 3], _regions(1), CFG)


# ---- masks ------------------------------------------------------------------------------------------------


def test_seq2seq_pattern_small():
    # 3 caption positions, then 2 prefix positions
    expected = torch.tensor(
        [
            [1, 0, 0, 1, 1],
            [1, 1, 0, 1, 1],
            [1, 1, 1, 1, 1],
            [0, 0, 0, 1, 1],
            [0, 0, 0, 1, 1],
        ],
        dtype=torch.float32,
    )
    assert torch.equal(seq2seq_pattern(5, 3), expected)


def test_seq2seq_caption_never_reaches_tags_or_regions(fusion, tok):
    """Changing caption tokens leaves every tag/region output unchanged (OSCAR's seq2seq mask)."""
    a = pack_inputs(tok, "a red circle", ["red circle"], _regions(4), CFG)
    b = pack_inputs(tok, "two blue squares and more", ["red circle"], _regions(4), CFG)
    ha, hb = _encode(fusion, a, AttentionKind.SEQ2SEQ), _encode(fusion, b, AttentionKind.SEQ2SEQ)
    prefix = slice(CFG.max_text_len, None)
    torch.testing.assert_close(ha[:, prefix], hb[:, prefix], atol=0, rtol=0)
    assert not torch.allclose(ha[:, 1], hb[:, 1])
    # under full attention the same change does reach the tags and regions
    fa, fb = _encode(fusion, a, AttentionKind.FULL), _encode(fusion, b, AttentionKind.FULL)
    assert not torch.allclose(fa[:, prefix], fb[:, prefix])


def test_seq2seq_caption_is_causal(fusion, tok):
    a = pack_inputs(tok, "a red circle and a square", ["red circle"], _regions(2), CFG)
    b = pack_inputs(tok, "a red triangle", ["red circle"], _regions(2), CFG)
    ha, hb = _encode(fusion, a, AttentionKind.SEQ2SEQ), _encode(fusion, b, AttentionKind.SEQ2SEQ)
    # positions 0..2 ([CLS] a red) agree, position 3 (circle / triangle) differs
    torch.testing.assert_close(ha[:, :3], hb[:, :3], atol=0, rtol=0)
    assert not torch.allclose(ha[:, 3], hb[:, 3])


def test_padding_is_invisible(fusion, tok):
    """Padded tokens and regions, whatever their content, do not change valid outputs."""
    x = pack_inputs(tok, "is there a red circle?", ["red circle"], _regions(3), CFG)
    ids, types, mask, regions, region_mask = x.as_tuple()
    noisy_ids = torch.where(mask.bool(), ids, torch.full_like(ids, 2000))
    noisy_regions = torch.where(region_mask.bool()[..., None], regions, torch.randn_like(regions) * 50)
    with torch.no_grad():
        clean = fusion.encode(ids, types, mask, regions, region_mask, AttentionKind.FULL)
        noisy = fusion.encode(noisy_ids, types, mask, noisy_regions, region_mask, AttentionKind.FULL)
    valid = torch.cat([mask, region_mask], 1)[0].bool()
    torch.testing.assert_close(clean[:, valid], noisy[:, valid], atol=1e-6, rtol=0)


# ---- heads ------------------------------------------------------------------------------------------------


def test_heads_shapes_and_tied_decoder(fusion, tok):
    x = pack_inputs(tok, "what shape is the red object?", ["red circle"], _regions(2), CFG)
    h = _encode(fusion, x, AttentionKind.FULL)
    assert h.shape == (1, CFG.max_text_tags_len + CFG.max_regions, CFG.hidden_size)
    assert fusion.vqa_logits(h).shape == (1, CFG.num_answers)
    assert fusion.match_logits(h).shape == (1, 2)
    assert fusion.mlm_logits(h).shape == (1, h.shape[1], CFG.vocab_size)
    keys = fusion.state_dict().keys()
    assert not any("decoder" in k for k in keys) and "mlm_head.bias" in keys
    m = Fusion(CFG).eval()
    m.load_state_dict(fusion.state_dict())
    with torch.no_grad():
        m.encoder.embeddings.word_embeddings.weight[5].add_(1.0)  # the decoder row of token 5 moves with it
        assert not torch.equal(m.mlm_logits(h)[..., 5], fusion.mlm_logits(h)[..., 5])
        torch.testing.assert_close(m.mlm_logits(h)[..., 6], fusion.mlm_logits(h)[..., 6])


def test_seq2seq_needs_the_full_layout(fusion):
    ids = torch.zeros(1, CFG.max_text_len, dtype=torch.int64)
    with pytest.raises(InputError, match="seq2seq needs the full text"):
        no_regions = torch.zeros(1, 0, CFG.region_dim), torch.zeros(1, 0)
        fusion.encode(ids, ids, ids.float(), *no_regions, AttentionKind.SEQ2SEQ)


# ---- export graphs ----------------------------------------------------------------------------------------


def _shapes():
    c = CFG
    p = c.max_tags_len + c.max_regions
    kv = (c.num_layers, 1, c.num_heads, p, c.head_dim)
    new = (c.num_layers, 1, c.num_heads, 1, c.head_dim)
    return {
        "vqa": [(1, c.num_answers)],
        "match": [(1, 2)],
        "caption_prefix": [kv, kv],
        "caption_step": [(1, c.vocab_size), new, new],
    }


@pytest.mark.parametrize("name", GRAPHS)
def test_graph_exports_and_matches_eager(fusion, name):
    graph = GRAPHS[name](fusion).eval()
    example = graph.example_inputs()
    assert len(example) == len(graph.input_names)
    program = torch.export.export(graph, example, strict=False)
    # random inputs of the example shapes: masks 0/1, ids in range, positions [t-1, t]
    gen = torch.Generator().manual_seed(3)
    inputs = []
    for input_name, x in zip(graph.input_names, example):
        if input_name.endswith("mask"):
            inputs.append((torch.rand(x.shape, generator=gen) > 0.3).float())
        elif input_name == "position_ids":
            inputs.append(torch.tensor([[4, 5]]))
        elif input_name.endswith("type_ids"):
            inputs.append(torch.randint(0, 2, x.shape, generator=gen))
        elif x.dtype == torch.int64:
            inputs.append(torch.randint(0, CFG.vocab_size, x.shape, generator=gen))
        else:
            inputs.append(torch.randn(x.shape, generator=gen))
    with torch.no_grad():
        eager = graph(*inputs)
        exported = program.module()(*inputs)
    assert isinstance(eager, tuple) and len(eager) == len(graph.output_names)
    assert [tuple(o.shape) for o in eager] == _shapes()[name]
    for a, b in zip(eager, exported):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
    # torch.export lifts every parameter a module owns: each graph must own only what it reads
    params = {spec.arg.name: spec.target for spec in program.graph_signature.input_specs if spec.target}
    unused = [params[n.name] for n in program.graph.nodes if n.op == "placeholder" and n.name in params and not n.users]
    assert unused == []
    assert not any(isinstance(n.target, torch._ops.OpOverload) and "nonzero" in str(n.target) for n in program.graph.nodes)


def test_graphs_share_parameters_with_the_fusion(fusion):
    for make in GRAPHS.values():
        graph = make(fusion)
        assert {id(p) for p in graph.parameters()} <= {id(p) for p in fusion.parameters()}
    assert CaptionStepGraph(fusion).embeddings.word_embeddings.weight is fusion.encoder.embeddings.word_embeddings.weight


def test_vqa_graph_matches_fusion_methods(fusion, tok):
    x = pack_inputs(tok, "how many shapes are there?", ["red circle", "blue square"], _regions(2), CFG)
    h = _encode(fusion, x, AttentionKind.FULL)
    with torch.no_grad():
        torch.testing.assert_close(ClassifierGraph(fusion, "vqa")(*x.as_tuple())[0], fusion.vqa_logits(h))
        torch.testing.assert_close(ClassifierGraph(fusion, "match")(*x.as_tuple())[0], fusion.match_logits(h))


def test_classifier_graphs_name_their_tensors_and_refuse_an_unknown_head(fusion):
    vqa, match = ClassifierGraph(fusion, "vqa"), ClassifierGraph(fusion, "match")
    assert vqa.input_names == match.input_names == FUSION_INPUT_NAMES == (
        "input_ids", "token_type_ids", "token_mask", "regions", "region_mask")
    assert (vqa.output_names, match.output_names) == (("answer_logits",), ("match_logits",))
    assert vqa.head is fusion.vqa_head and match.head is fusion.match_head
    with pytest.raises(ConfigError, match="classifier head 'caption' is not one of"):
        ClassifierGraph(fusion, "caption")


# ---- budget -----------------------------------------------------------------------------------------------


def test_paper_parameter_count():
    """MiniLM-L12-H384 ≈ 33M, 11.7M of them word embeddings (30522 x 384; heads counted apart)."""
    f = Fusion(minivlm_paper().fusion)
    count = {name: sum(p.numel() for p in m.parameters()) for name, m in f.named_children()}
    assert f.encoder.embeddings.word_embeddings.weight.numel() == 30522 * 384 == 11_720_448
    assert count["encoder"] + count["pooler"] == 33_756_672  # BERT body incl. region embedding (1030*384+384 + LN)
    assert count["vqa_head"] == 384 * 768 + 768 + 768 * 3129 + 3129
    assert sum(count.values()) == sum(p.numel() for p in f.parameters()) == 36_638_453
