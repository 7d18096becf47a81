"""Tracing a pipeline of each family on real images (converters/samples.py `trace`): every host step its family
declares is recorded, every graph is called, and a build's graph specs come from those calls."""

import pytest
import torch

from minivlm.converters.fp16_range import RangeRecorder, measure
from minivlm.converters.samples import golden_images, trace
from minivlm.converters.specs import graph_specs
from minivlm.python_ref.families import FAMILIES


@pytest.fixture(scope="module", params=list(FAMILIES.values()), ids=lambda f: f.name)
def traced(request):
    family = request.param
    cfg = family.config(next(p for p in family.presets if p.endswith("-tiny")))
    torch.manual_seed(0)
    pipeline = family.pipeline(family.model(cfg), family.tokenizer(cfg), family.vocabularies.placeholder(cfg))
    return family, pipeline, [trace(pipeline, sample) for sample in golden_images()[1:3]]  # a photo, a scene


def test_trace_records_the_declared_host_steps_and_every_graph(traced):
    family, _, traces = traced
    for tr in traces:
        assert tuple(tr.steps) == family.host_steps
        assert all(tr.calls[name] for name in family.graph_names)
        for step in tr.steps.values():
            assert set(step) == {"inputs", "outputs"}


def test_graph_specs_take_the_declared_call_with_static_shapes(traced):
    family, pipeline, traces = traced
    specs = graph_specs(pipeline, traces, traces)
    assert [s.name for s in specs] == list(family.graph_names)
    for spec in specs:
        calls = traces[0].calls[spec.name]
        index = family.export_call.get(spec.name, 0)
        assert all(torch.equal(a, b) for a, b in zip(spec.example_inputs, calls[index][0]))
        assert [t.name for t in spec.inputs] == list(spec.module.input_names)
        assert len(spec.calibration) == sum(len(tr.calls[spec.name]) for tr in traces)


def test_ranges_recorded_while_tracing_are_those_of_every_traced_call_run_again(traced):
    """A build measures the fp16 range as it traces: that must equal `measure` re-running each graph on every input
    the trace recorded (the separate pass it replaced), and measuring must not change what the trace records."""
    family, pipeline, traces = traced
    samples = golden_images()[1:3]
    recorder = RangeRecorder()
    measured = [trace(pipeline, s, recorder) for s in samples]
    for plain, tr in zip(traces, measured):  # same process, inputs and kernels: bit for bit
        for name in family.graph_names:
            assert len(plain.calls[name]) == len(tr.calls[name])
            for (ins, outs), (ins2, outs2) in zip(plain.calls[name], tr.calls[name]):
                assert all(torch.equal(a, b) for a, b in zip((*ins, *outs), (*ins2, *outs2)))
    modules = pipeline.graphs.modules()
    again = measure(((n, modules[n], modules[n].input_names, [ins for tr in traces for ins, _ in tr.calls[n]])
                     for n in family.graph_names), len(samples))
    during = recorder.report(len(samples))
    assert during.calls == again.calls == sum(len(tr.calls[n]) for tr in traces for n in family.graph_names)
    assert len(during.tensors) > 10 * len(family.graph_names)
    assert during.table() == again.table() and during.summary() == again.summary()
