"""`minivlm.load_artifact`: a build folder run by its real runtime behind the reference API (docs/ARCHITECTURE.md §6).

A build is verified before anything runs (`build_checks.py`: the manifest, every file's sha256, the config, each
graph's inputs and outputs against the model and against its runtime), and its vocabularies are checked. Each
graph then gets one runner: ExecuTorch (`executorch.runtime`), TFLite (`ai_edge_litert` Interpreter, inputs and
outputs mapped by the manifest's runtime names, never by position), Core AI (`coreai.runtime`, on Linux too) or
Core ML (macOS only). Runners are
callables on torch tensors returning tuples, and the build's model family assembles its pipeline from them
(`python_ref/family.py`), so python_ref's own host code (MiniVLM: preprocess, proposals, region selection,
packing, greedy/beam decoding; EfficientVLM: preprocess, packing, greedy decoding) drives them exactly as it
drives the eager graphs.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

from minivlm.build_checks import (TORCH_DTYPES, coreai_function_io, coreml_function_io, first_line, inside,
                                  load_error, load_executorch, load_tflite, manifest_family, verified_manifest)
from minivlm.converters.manifest import needs_macos
from minivlm.efficientvlm_pipeline import EfficientVLMReference
from minivlm.errors import ArtifactError, ConfigError, InputError
from minivlm.graph_io import check_runtime_io
from minivlm.loading import ReferencePipeline
from minivlm.python_ref.family import Family
from minivlm.python_ref.pipeline import Pipeline
from minivlm.python_ref.tokenizer import Tokenizer


class ArtifactPipeline(ReferencePipeline):
    """A loaded MiniVLM build: `detect/caption/answer/match` as in `minivlm.load`, plus its `manifest` and `path`."""

    def __init__(self, pipeline: Pipeline, path: Path, manifest: dict) -> None:
        super().__init__(pipeline, str(path))
        self.path = path
        self.manifest = manifest


class EfficientVLMArtifact(EfficientVLMReference):
    """A loaded EfficientVLM build: the API of `minivlm.load` for an EfficientVLM model, plus `manifest` and `path`."""

    def __init__(self, pipeline, path: Path, manifest: dict) -> None:
        super().__init__(pipeline, str(path))
        self.path = path
        self.manifest = manifest


# A loaded build's public API, by model family.
ARTIFACT_TYPES = {"minivlm": ArtifactPipeline, "efficientvlm": EfficientVLMArtifact}


def _vocabularies(folder: Path, manifest: dict, cfg, family: Family):
    path = inside(folder, manifest["vocabularies_file"])
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        vocab = family.vocabularies_from_json(raw)
        vocab.check(cfg)
    except (OSError, ValueError, TypeError, AttributeError) as err:  # ConfigError is a ValueError
        raise ArtifactError(f"{path} is not a valid vocabularies file: {first_line(err)}") from None
    return vocab


def _tokenizer(folder: Path, manifest: dict) -> Tokenizer:
    try:
        return Tokenizer.from_vocab(inside(folder, manifest["tokenizer"]["vocab_file"]))
    except (ConfigError, OSError, ValueError) as err:  # UnicodeDecodeError is a ValueError
        raise ArtifactError(f"{manifest['tokenizer']['vocab_file']} is not a valid vocabulary: {first_line(err)}") from None


# --- graph runners --------------------------------------------------------------------------------------------


class _Graph:
    """One graph of a build as a callable on torch tensors. Inputs must have the manifest's shapes, except
    along the batch axis: a batch of B (beam search) runs in calls of the build's batched graph for it (`batched`,
    the last call padded by repeating a row), or, in a build without one, as B single-example calls."""

    def __init__(self, name: str, entry: dict) -> None:
        self.name = name
        self.inputs, self.outputs = entry["inputs"], entry["outputs"]
        self.batched: _Graph | None = None

    def __call__(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if len(tensors) != len(self.inputs):
            raise InputError(f"graph {self.name} takes {len(self.inputs)} inputs, got {len(tensors)}")
        batch = None
        for spec, t in zip(self.inputs, tensors):
            shape, axis = list(t.shape), spec["batch_axis"]
            want = list(spec["shape"])
            if len(shape) != len(want) or shape[:axis] + shape[axis + 1:] != want[:axis] + want[axis + 1:]:
                raise InputError(f"graph {self.name} input {spec['name']} has shape {tuple(shape)}, the build takes {tuple(want)}")
            if batch not in (None, shape[axis]):
                raise InputError(f"graph {self.name} inputs disagree on the batch size ({batch} vs {shape[axis]})")
            batch = shape[axis]
        if batch == self.inputs[0]["shape"][self.inputs[0]["batch_axis"]]:
            return self._run(tensors)
        if self.batched is not None:
            return self._in_batches(tensors, batch)
        parts = [self._run(tuple(t.narrow(s["batch_axis"], i, 1) for s, t in zip(self.inputs, tensors))) for i in range(batch)]
        return tuple(torch.cat([p[k] for p in parts], dim=spec["batch_axis"]) for k, spec in enumerate(self.outputs))

    def _in_batches(self, tensors: tuple[torch.Tensor, ...], batch: int) -> tuple[torch.Tensor, ...]:
        """Rows 0..batch-1 through the batched graph, `size` at a time; a short last chunk repeats its last row."""
        graph = self.batched
        size = graph.inputs[0]["shape"][graph.inputs[0]["batch_axis"]]
        parts = []
        for start in range(0, batch, size):
            rows = min(size, batch - start)
            index = torch.arange(start, start + size).clamp(max=start + rows - 1)
            out = graph._run(tuple(t.index_select(s["batch_axis"], index) for s, t in zip(self.inputs, tensors)))
            parts.append([o.narrow(s["batch_axis"], 0, rows) for s, o in zip(self.outputs, out)])
        return tuple(torch.cat([p[k] for p in parts], dim=spec["batch_axis"]) for k, spec in enumerate(self.outputs))

    def _run(self, tensors: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        raise NotImplementedError


class ExecuTorchGraph(_Graph):
    """A `.pte` run by `executorch.runtime` (method "forward"), its constants read from the build's shared
    `weights` file; its method's inputs and outputs (shapes, dtypes, order) are checked against the manifest first."""

    def __init__(self, path: Path, name: str, entry: dict, weights: Path) -> None:
        super().__init__(name, entry)
        self._program, have = load_executorch(path, weights)
        check_runtime_io(name, entry, path.name, have)
        try:
            self._method = self._program.load_method("forward")
        except Exception as err:
            raise load_error(path, "executorch", err) from None

    def _run(self, tensors: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        feeds = [t.to(TORCH_DTYPES[s["runtime_dtype"]]).contiguous() for s, t in zip(self.inputs, tensors)]
        outputs = self._method.execute(feeds)
        return tuple(o.to(TORCH_DTYPES[s["dtype"]]).clone() for s, o in zip(self.outputs, outputs))


class TFLiteGraph(_Graph):
    """One signature (the entry's `signature`) of a `.tflite` run by the ai_edge_litert Interpreter (default XNNPACK
    CPU delegate), I/O by name; its tensors (names, shapes, dtypes) are checked against the manifest first. Pass the
    `interpreter` of another graph of the same file to share it: the build's weights then load once."""

    def __init__(self, path: Path, name: str, entry: dict, interpreter=None, threads: int | None = None) -> None:
        super().__init__(name, entry)
        self.interpreter, self._runner = load_tflite(path, name, entry, interpreter, num_threads=threads)

    def _run(self, tensors: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        feeds = {s["runtime_name"]: np.ascontiguousarray(t.detach().cpu().numpy(), dtype=s["runtime_dtype"])
                 for s, t in zip(self.inputs, tensors)}
        outputs = self._runner(**feeds)
        return tuple(torch.from_numpy(np.array(outputs[s["runtime_name"]], dtype=s["dtype"])) for s in self.outputs)


class CoreMLGraph(_Graph):
    """One function of the build's multifunction `.mlpackage`, run by Core ML through coremltools (macOS 15+ only;
    not exercised on Linux); the function's inputs and outputs in the spec are checked against the manifest first."""

    def __init__(self, path: Path, name: str, entry: dict, compute_units: str) -> None:
        super().__init__(name, entry)
        import coremltools as ct

        function = entry["function"]
        check_runtime_io(name, entry, f"{path.name} function {function}", coreml_function_io(path, function))
        units = {"all": "ALL", "cpu_and_ne": "CPU_AND_NE", "cpu_and_gpu": "CPU_AND_GPU", "cpu_only": "CPU_ONLY"}
        try:
            self._model = ct.models.MLModel(str(path), compute_units=getattr(ct.ComputeUnit, units[compute_units]),
                                            function_name=function)
        except Exception as err:
            raise load_error(path, "Core ML", err) from None

    def _run(self, tensors: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        feeds = {s["runtime_name"]: t.detach().cpu().numpy().astype(s["runtime_dtype"]) for s, t in zip(self.inputs, tensors)}
        outputs = self._model.predict(feeds)
        return tuple(torch.from_numpy(np.asarray(outputs[s["runtime_name"]], dtype=s["dtype"])) for s in self.outputs)


class MILExecutorGraph(_Graph):
    """One function of the build's `.mlpackage` off macOS, run by the SDK's own ML-program executor
    (`minivlm.coreml_executor`): the converted program op by op in numpy, values stored and rounded in each
    variable's dtype (float16 where the program says so). It checks the conversion against an ideal fp16
    executor, not the Neural Engine's or GPU's own arithmetic. Every graph of a build shares one loaded program."""

    def __init__(self, program, path: Path, name: str, entry: dict) -> None:
        super().__init__(name, entry)
        function = entry["function"]
        check_runtime_io(name, entry, f"{path.name} function {function}", coreml_function_io(path, function))
        self._program, self._function = program, function

    def _run(self, tensors: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        feeds = {s["runtime_name"]: np.ascontiguousarray(t.detach().cpu().numpy(), dtype=s["runtime_dtype"])
                 for s, t in zip(self.inputs, tensors)}
        outputs, _ = self._program.run(self._function, feeds)
        return tuple(torch.from_numpy(np.asarray(outputs[s["runtime_name"]], dtype=s["dtype"])) for s in self.outputs)


class CoreAIGraph(_Graph):
    """One function of the build's Core AI asset, run by `coreai.runtime` (on Linux too), I/O by name; the
    function's inputs and outputs in the asset are checked against the manifest first. Every graph of a build shares
    one loaded asset (`model`)."""

    def __init__(self, model, name: str, entry: dict) -> None:
        super().__init__(name, entry)
        function = entry["function"]
        check_runtime_io(name, entry, f"{model.path.name} function {function}", coreai_function_io(model.path, function))
        self._model, self._function = model, model.function(function)

    def _run(self, tensors: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        feeds = {s["runtime_name"]: np.ascontiguousarray(t.detach().cpu().numpy(), dtype=s["runtime_dtype"])
                 for s, t in zip(self.inputs, tensors)}
        outputs = self._model.run(self._function, feeds)
        return tuple(torch.from_numpy(np.asarray(outputs[s["runtime_name"]], dtype=s["dtype"])) for s in self.outputs)


def _runners(folder: Path, manifest: dict, names: tuple[str, ...], threads: int | None) -> dict[str, _Graph]:
    run: dict[str, _Graph] = {}
    interpreters: dict[Path, object] = {}  # TFLite: the graphs of one file share its interpreter
    assets: dict[Path, object] = {}  # Core AI, Core ML off macOS: the graphs of one file share its loaded model
    for name in names:
        entry = manifest["graphs"][name]
        path = inside(folder, entry["file"])
        if manifest["target"] == "executorch":
            run[name] = ExecuTorchGraph(path, name, entry, inside(folder, manifest["weights_file"]))
        elif manifest["target"] == "tflite":
            graph = run[name] = TFLiteGraph(path, name, entry, interpreters.get(path), threads)
            interpreters[path] = graph.interpreter
        elif manifest["target"] == "coreai":
            from minivlm.coreai_runtime import CoreAIModel

            if path not in assets:
                assets[path] = CoreAIModel(path, manifest.get("compute_units") or "default")
            run[name] = CoreAIGraph(assets[path], name, entry)
        elif sys.platform == "darwin":
            run[name] = CoreMLGraph(path, name, entry, manifest.get("compute_units") or "all")
        else:
            from minivlm.coreml_executor import MILProgram

            if path not in assets:
                assets[path] = MILProgram.load(path)
            run[name] = MILExecutorGraph(assets[path], path, name, entry)
    return run


def load_artifact(path: str | Path, *, threads: int | None = None) -> ArtifactPipeline | EfficientVLMArtifact:
    """A build folder from `minivlm-convert`, run by its real runtime, with the API of `minivlm.load` for its
    model family. `threads` sets a TFLite interpreter's threads (default: the interpreter's own); ExecuTorch's
    thread pool is process-wide (`minivlm.bench.worker.set_executorch_threads`). A Core ML build runs in Core ML
    on macOS and in the SDK's ML-program executor elsewhere (`MILExecutorGraph`: slow, and an ideal fp16
    executor rather than a device's arithmetic; for checking conversions, not for measuring speed).

    Raises ArtifactError (one line) for a folder that is not a build, a malformed or edited manifest, a
    missing or tampered file, a truncated or corrupt graph file, graph inputs or outputs that differ between
    the manifest, the model and the runtime, a config this SDK does not know, or an ExecuTorch build with the
    Core ML delegate off macOS.
    """
    folder = Path(path)
    manifest, cfg = verified_manifest(folder)
    if needs_macos(manifest) and manifest["target"] != "coreml" and sys.platform != "darwin":
        raise ArtifactError(f"{folder} is an ExecuTorch build with the Core ML delegate: running it needs macOS "
                            f"(Core ML); on {sys.platform} it can only be converted and its spec checked")
    family = manifest_family(manifest)
    tokenizer, vocab = _tokenizer(folder, manifest), _vocabularies(folder, manifest, cfg, family)
    present = [name for name in family.build_graphs if name in manifest["graphs"]]  # batched graphs are optional
    run = _runners(folder, manifest, tuple(present), threads)  # each checks its runtime's I/O
    for name, (graph, _) in family.batched.items():
        if name in run:
            run[graph].batched = run.pop(name)
    return ARTIFACT_TYPES[family.name](family.assemble(cfg, tokenizer, vocab, run), folder, manifest)


__all__ = ["ARTIFACT_TYPES", "ArtifactPipeline", "CoreAIGraph", "CoreMLGraph", "EfficientVLMArtifact", "ExecuTorchGraph", "MILExecutorGraph", "TFLiteGraph",
           "load_artifact"]
