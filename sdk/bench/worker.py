"""One runtime at one thread count, in a process of its own so that its memory and threads touch no other:
`python -m minivlm.bench.worker SPEC.json OUT.json` (the parent, `run.py`, writes SPEC and reads OUT).

The runtime is the eager reference ("eager"), ONNX Runtime on the exported graphs ("onnxruntime") or a build
folder ("build", through `minivlm.load_artifact`). Every one is driven by the same host code: its graph callables
go through the model family's `assemble`. Measured here: load time, each graph on the recorded inputs (and its
outputs' largest difference from the eager outputs), each task end to end on the traced image, cached against
uncached caption decoding (eager MiniVLM), and the process's peak RSS from loading on.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

from minivlm.converters.atomic import atomic_file
from minivlm.loading import model_config
from minivlm.python_ref.families import family_of

from .measure import peak_rss_mb, reset_peak_rss, rss_mb, timed
from .onnx_graphs import ort_graphs
from .workload import image_array, load_reference, saved

TASK_WARMUP = 1


def set_executorch_threads(threads: int) -> None:
    """ExecuTorch's Python runtime has one process-wide thread pool (XNNPACK's): resize it before any program
    loads. `_unsafe_reset_threadpool` is "unsafe" only while a method runs on the pool."""
    from executorch.extension.pybindings.portable_lib import _threadpool_get_thread_count, _unsafe_reset_threadpool

    _unsafe_reset_threadpool(threads)
    if _threadpool_get_thread_count() != threads:
        raise RuntimeError(f"ExecuTorch's thread pool has {_threadpool_get_thread_count()} threads, asked {threads}")


def _load(spec: dict, threads: int):
    """The pipeline of the spec's runtime, the seconds its loading took (backend imports excluded)."""
    kind = spec["runtime"]
    if kind == "build":
        from minivlm.runtime import load_artifact

        if spec["target"] == "executorch":
            set_executorch_threads(threads)
        if spec["target"] == "tflite":
            import ai_edge_litert.interpreter  # noqa: F401  (imported before the clock starts)
        start = time.perf_counter()
        pipeline = load_artifact(spec["build"], threads=threads).pipeline
        return pipeline, time.perf_counter() - start
    if kind == "onnxruntime":
        import onnxruntime  # noqa: F401

        start = time.perf_counter()
        cfg = model_config(spec["model"])  # a weights file's own config: a pruned model's widths included
        family = family_of(cfg)
        graphs = ort_graphs(spec["onnx_files"], spec["io_names"], threads)
        vocab = family.vocabularies_from_json(spec["vocabularies"])
        pipeline = family.assemble(cfg, family.tokenizer(cfg), vocab, graphs)
        return pipeline, time.perf_counter() - start
    start = time.perf_counter()
    pipeline = load_reference(spec["model"], spec["random_init"]).pipeline
    return pipeline, time.perf_counter() - start


def _peak_diff(got: tuple[torch.Tensor, ...], want: tuple[torch.Tensor, ...]) -> float:
    """The largest |got - want| over a graph's outputs, relative to each output's peak |want| (parity's
    `graph_max_abs` measure)."""
    worst = 0.0
    for g, w in zip(got, want, strict=True):
        g, w = g.double(), w.double()
        worst = max(worst, float((g - w).abs().max()) / max(float(w.abs().max()), 1e-12))
    return worst


def _tasks(family: str, pipeline, image, question: str, text: str) -> dict:
    """The end-to-end tasks of a family: name -> (call, how its result is shown)."""
    if family == "minivlm":
        return {"detect": (lambda: pipeline.detect(image), lambda r: " ".join(d.label for d in r) or "(none)"),
                "caption": (lambda: pipeline.caption(image), str),
                "answer": (lambda: pipeline.answer(image, question), str)}
    return {"caption": (lambda: pipeline.caption(image), str),
            "answer": (lambda: pipeline.answer(image, question), str),
            "match": (lambda: pipeline.match(image, text), lambda r: f"{r:.4f}")}


def _caption_decoding(pipeline, image, runs: int) -> dict:
    """Greedy captioning of the traced image with the cached prefix (`CachedDecoder`: the graphs a phone runs)
    and recomputing the whole sequence per token (`UncachedDecoder`), both on the eager modules; and the
    vocabulary head alone, whose per-token cost both pay, which bounds what caching can gain."""
    from minivlm.python_ref.generate import greedy

    fusion, tokenizer = pipeline.model.fusion, pipeline.tokenizer
    inputs = pipeline.pack(pipeline.regions(image), "", require_text=False)
    out = {}
    for name, cached in (("cached", True), ("uncached", False)):
        caption = greedy(fusion, tokenizer, inputs, cached=cached)
        out[name] = {**timed(lambda c=cached: greedy(fusion, tokenizer, inputs, cached=c), runs, TASK_WARMUP),
                     "tokens": len(caption.token_ids) + int(caption.finished), "caption": tokenizer.decode(list(caption.token_ids))}
    out["speedup"] = out["uncached"]["median_ms"] / out["cached"]["median_ms"]
    # Both decoders compute the vocabulary logits of one position per token (the tied decoder reads the whole
    # word-embedding table), so caching cannot make a caption faster than `uncached / (tokens * head)`.
    hidden = torch.zeros(1, fusion.cfg.hidden_size)
    out["vocab_head"] = timed(lambda: fusion.mlm_logits(hidden), runs * 5)
    out["speedup_bound"] = out["uncached"]["median_ms"] / (out["cached"]["tokens"] * out["vocab_head"]["median_ms"])
    return out


@torch.no_grad()
def run(spec: dict) -> dict:
    """Measure the runtime `spec` names; returns everything measured (see the module docstring)."""
    threads = spec["threads"]
    torch.set_num_threads(threads)  # host steps, and the eager graphs
    data = saved(Path(spec["workdir"]))
    rss_before, peak_reset = rss_mb(), reset_peak_rss()
    pipeline, load_seconds = _load(spec, threads)
    family = family_of(pipeline.cfg)
    graphs = pipeline.graphs.modules()
    result = {"load_seconds": load_seconds, "graphs": {}, "tasks": {}}
    for name in family.graph_names:
        inputs = data["inputs"][name]
        result["graphs"][name] = timed(lambda g=graphs[name], i=inputs: g(*i), spec["runs"])
        result["graphs"][name]["max_abs_vs_eager"] = _peak_diff(graphs[name](*inputs), data["outputs"][name])
    image = image_array(data)
    for task, (call, show) in _tasks(family.name, pipeline, image, spec["question"], spec["text"]).items():
        result["tasks"][task] = {**timed(call, spec["task_runs"], TASK_WARMUP), "result": show(call())}
    if spec["runtime"] == "eager" and family.name == "minivlm":
        result["caption_decoding"] = _caption_decoding(pipeline, image, spec["task_runs"])
    result["rss_before_load_mb"] = rss_before  # torch, the SDK and the recorded inputs
    result["peak_rss_mb"] = peak_rss_mb()  # from loading on, if `peak_rss_reset`; else since the process started
    result["peak_rss_reset"] = peak_reset
    return result


def main(argv: list[str]) -> int:
    spec_path, out_path = map(Path, argv)
    result = run(json.loads(spec_path.read_text()))
    with atomic_file(out_path, "w", encoding="utf-8") as f:
        f.write(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
