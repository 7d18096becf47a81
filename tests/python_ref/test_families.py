"""The family declarations (python_ref/family.py, families.py): each family's presets, graphs, pipeline assembly,
tokenizer and vocabularies are consistent with each other, and lookups by preset, config and name find them."""

import dataclasses

import pytest
import torch

from minivlm.python_ref.errors import ConfigError
from minivlm.python_ref.families import FAMILIES, PRESET_FAMILIES, family_named, family_of, get_config, preset_family

ALL_PRESETS = sorted(PRESET_FAMILIES)
VOCAB_SIZE = {"minivlm": lambda cfg: cfg.fusion.vocab_size, "efficientvlm": lambda cfg: cfg.text.vocab_size}


def test_every_preset_belongs_to_exactly_one_family():
    assert set(FAMILIES) == {"minivlm", "efficientvlm"}
    assert sum(len(f.presets) for f in FAMILIES.values()) == len(PRESET_FAMILIES)
    assert {"minivlm-demo", "minivlm-tiny", "efficientvlm-tiny", "efficientvlm-demo-student"} <= set(PRESET_FAMILIES)
    for preset in ALL_PRESETS:
        cfg = get_config(preset)
        assert cfg.name == preset and family_of(cfg) is preset_family(preset)


def test_unknown_names_are_one_line_config_errors():
    with pytest.raises(ConfigError, match="unknown model preset 'nope'; known presets: minivlm-demo, .*, minivlm-tiny, efficientvlm-demo, efficientvlm-demo-student, "):
        preset_family("nope")
    with pytest.raises(ConfigError, match="unknown model family 'nope'; this SDK has minivlm, efficientvlm"):
        family_named("nope")
    with pytest.raises(ConfigError, match="unknown efficientvlm preset 'minivlm-tiny'"):
        FAMILIES["efficientvlm"].config("minivlm-tiny")
    with pytest.raises(ConfigError, match="is the config of no model family"):
        family_of(object())


@pytest.mark.parametrize("preset", ALL_PRESETS)
def test_graphs_are_declared_named_and_take_their_example_inputs(preset):
    """On the meta device (shapes only): every graph of every preset, at its declared static shapes."""
    family, cfg = preset_family(preset), get_config(preset)
    with torch.device("meta"), torch.no_grad():
        graphs = family.graphs(family.model(cfg).eval())
        assert tuple(graphs) == family.graph_names
        for name, graph in graphs.items():
            inputs = graph.example_inputs(1)
            assert len(inputs) == len(graph.input_names) > 0, name
            assert len(graph(*inputs)) == len(graph.output_names) > 0, name
            assert all(t.dtype in (torch.float32, torch.int64) for t in inputs), name


@pytest.mark.parametrize("family", FAMILIES.values(), ids=lambda f: f.name)
def test_a_pipeline_is_assembled_from_any_graph_callables(family):
    tiny = get_config(next(p for p in family.presets if p.endswith("-tiny")))
    torch.manual_seed(0)
    model = family.model(tiny)
    tokenizer, vocab = family.tokenizer(tiny), family.vocabularies.placeholder(tiny)
    eager = family.pipeline(model, tokenizer, vocab)
    assert eager.model is model and tuple(eager.graphs.modules()) == family.graph_names
    calls = []
    wrapped = {name: (lambda *a, n=name, g=g: calls.append(n) or g(*a)) for name, g in eager.graphs.modules().items()}
    runtime = family.assemble(tiny, tokenizer, vocab, wrapped)
    assert runtime.model is None and list(runtime.graphs.modules().values()) == list(wrapped.values())
    runtime.caption(torch.zeros(40, 30, 3, dtype=torch.uint8).numpy())
    assert calls and set(calls) <= set(family.graph_names)
    with pytest.raises(ValueError, match="are missing"):
        family.assemble(tiny, tokenizer, vocab, dict(list(wrapped.items())[1:]))


@pytest.mark.parametrize("preset", ALL_PRESETS)
def test_tokenizer_and_vocabularies_fit_every_preset(preset):
    family, cfg = preset_family(preset), get_config(preset)
    tokenizer = family.tokenizer(cfg)
    assert tokenizer.vocab_size == VOCAB_SIZE[family.name](cfg)
    vocab = family.vocabularies.placeholder(cfg)
    vocab.check(cfg)
    raw = {k: list(v) for k, v in dataclasses.asdict(vocab).items()}
    assert family.vocabularies_from_json(raw) == vocab
    assert family.host_steps and len(set(family.host_steps)) == len(family.host_steps)
    assert set(family.export_call) <= set(family.graph_names) >= set(family.golden_calls)
    assert set(family.slowest) <= set(family.graph_names)
