"""`minivlm.load_artifact`: a build folder run by its real runtime behind the reference API (DESIGN §4, §6).

Loading checks the manifest first: schema, the sha256 of every file it lists (a missing, truncated or
edited file is an ArtifactError naming it), the config against this SDK's preset, the vocabularies. Each
graph then gets one runner: ExecuTorch (`executorch.runtime`), TFLite (`ai_edge_litert` Interpreter, inputs
and outputs mapped by the manifest's runtime names, never by position) or Core ML (macOS only). Runners are
callables on torch tensors returning tuples, so python_ref's own host code (preprocess, proposals, region
selection, packing, greedy/beam decoding) drives them exactly as it drives the eager graphs.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import torch

from minivlm.converters.common import MANIFEST, SCHEMA_VERSION, sha256_file
from minivlm.errors import ArtifactError, ConfigError, InputError
from minivlm.loading import ReferencePipeline
from minivlm.python_ref.config import get_config
from minivlm.python_ref.generate import CaptionGraphs
from minivlm.python_ref.pipeline import GRAPH_NAMES, Graphs, Pipeline, Vocabularies
from minivlm.python_ref.tokenizer import Tokenizer

_TORCH_DTYPES = {"float32": torch.float32, "int64": torch.int64, "int32": torch.int32, "float16": torch.float16}


class ArtifactPipeline(ReferencePipeline):
    """A loaded build: `detect/caption/answer/match` as in `minivlm.load`, plus its `manifest` and `path`."""

    def __init__(self, pipeline: Pipeline, path: Path, manifest: dict) -> None:
        super().__init__(pipeline, str(path))
        self.path = path
        self.manifest = manifest


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


# --- manifest and files -------------------------------------------------------------------------------------


def read_manifest(folder: Path) -> dict:
    """The parsed manifest of a build folder; ArtifactError if there is none or it is unreadable."""
    if not folder.is_dir():
        raise ArtifactError(f"{folder} is not a build folder (it does not exist or is not a directory)")
    path = folder / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ArtifactError(f"{folder} has no {MANIFEST}; it is not a minivlm build") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ArtifactError(f"{path} is unreadable: {_first_line(err)}") from None
    if not isinstance(manifest, dict) or manifest.get("schema_version") != SCHEMA_VERSION:
        version = manifest.get("schema_version") if isinstance(manifest, dict) else None
        raise ArtifactError(f"{path} has schema version {version!r}; this SDK reads version {SCHEMA_VERSION}")
    for key in ("files", "graphs", "model", "target", "tokenizer", "vocabularies_file"):
        if key not in manifest:
            raise ArtifactError(f"{path} lacks the {key!r} entry")
    return manifest


def _inside(folder: Path, rel: str) -> Path:
    path = (folder / rel).resolve()
    if Path(rel).is_absolute() or ".." in Path(rel).parts or not path.is_relative_to(folder.resolve()):
        raise ArtifactError(f"{MANIFEST} lists {rel!r}, which is outside the build folder")
    return folder / rel


def verify_files(folder: Path, manifest: dict) -> None:
    """ArtifactError naming the first file that is missing or whose sha256 differs from the manifest's."""
    files = manifest["files"]
    for rel, digest in files.items():
        path = _inside(folder, rel)
        if not path.is_file():
            raise ArtifactError(f"{folder}: {rel} is missing (listed in {MANIFEST})")
        if sha256_file(path) != digest:
            raise ArtifactError(f"{folder}: {rel} fails its sha256 check (tampered with or corrupt); rebuild it")
    for name, graph in manifest["graphs"].items():
        path = _inside(folder, graph["file"])
        listed = graph["file"] in files or any(f.startswith(graph["file"] + "/") for f in files)
        if not listed:
            raise ArtifactError(f"{folder}: graph {name} file {graph['file']} has no checksum in {MANIFEST}")
        if path.is_dir():  # a .mlpackage: no file may be added to it either
            extra = [p for p in path.rglob("*") if p.is_file() and p.relative_to(folder).as_posix() not in files]
            if extra:
                raise ArtifactError(f"{folder}: {extra[0].relative_to(folder)} is not listed in {MANIFEST}")


def _config(manifest: dict):
    model = manifest["model"]
    try:
        cfg = get_config(model["preset"])
    except (ConfigError, KeyError, TypeError):
        raise ArtifactError(f"the build is of model preset {model.get('preset')!r}, which this SDK does not know") from None
    if json.loads(json.dumps(dataclasses.asdict(cfg))) != model.get("config"):
        raise ArtifactError(f"the build's {model['preset']} config differs from this SDK's; rebuild it with this version")
    return cfg


def _vocabularies(folder: Path, manifest: dict, cfg) -> Vocabularies:
    path = _inside(folder, manifest["vocabularies_file"])
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        vocab = Vocabularies(**{k: tuple(v) for k, v in raw.items()})
        vocab.check(cfg)
    except (OSError, ValueError, TypeError) as err:  # ConfigError is a ValueError
        raise ArtifactError(f"{path} is not a valid vocabularies file: {_first_line(err)}") from None
    return vocab


def _tokenizer(folder: Path, manifest: dict) -> Tokenizer:
    try:
        return Tokenizer.from_vocab(_inside(folder, manifest["tokenizer"]["vocab_file"]))
    except ConfigError as err:
        raise ArtifactError(str(err)) from None


# --- graph runners --------------------------------------------------------------------------------------------


class _Graph:
    """One graph of a build as a callable on torch tensors. Inputs must have the manifest's shapes, except
    along the batch axis: a batch of B (beam search) runs B single-example calls, concatenated."""

    def __init__(self, name: str, entry: dict) -> None:
        self.name = name
        self.inputs, self.outputs = entry["inputs"], entry["outputs"]

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
        parts = [self._run(tuple(t.narrow(s["batch_axis"], i, 1) for s, t in zip(self.inputs, tensors))) for i in range(batch)]
        return tuple(torch.cat([p[k] for p in parts], dim=spec["batch_axis"]) for k, spec in enumerate(self.outputs))

    def _run(self, tensors: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        raise NotImplementedError

    def _load_error(self, path: Path, runtime: str, err: BaseException) -> ArtifactError:
        return ArtifactError(f"{path.name}: {runtime} cannot load it ({_first_line(err)}); the file is corrupt or truncated")


class ExecuTorchGraph(_Graph):
    """A `.pte` run by `executorch.runtime` (method "forward")."""

    def __init__(self, path: Path, name: str, entry: dict) -> None:
        super().__init__(name, entry)
        from executorch.runtime import Runtime, Verification

        try:
            self._program = Runtime.get().load_program(path, verification=Verification.InternalConsistency)
            self._method = self._program.load_method("forward")
        except Exception as err:  # pybind raises RuntimeError (and ValueError on bad arguments)
            raise self._load_error(path, "executorch", err) from None
        meta = self._method.metadata
        if meta.num_inputs() != len(self.inputs) or meta.num_outputs() != len(self.outputs):
            raise ArtifactError(f"{path.name} has {meta.num_inputs()} inputs and {meta.num_outputs()} outputs; "
                                f"the manifest lists {len(self.inputs)} and {len(self.outputs)}")

    def _run(self, tensors: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        feeds = [t.to(_TORCH_DTYPES[s["runtime_dtype"]]).contiguous() for s, t in zip(self.inputs, tensors)]
        outputs = self._method.execute(feeds)
        return tuple(o.to(_TORCH_DTYPES[s["dtype"]]).clone() for s, o in zip(self.outputs, outputs))


class TFLiteGraph(_Graph):
    """A `.tflite` run by the ai_edge_litert Interpreter (default XNNPACK CPU delegate), I/O by name."""

    def __init__(self, path: Path, name: str, entry: dict) -> None:
        super().__init__(name, entry)
        from ai_edge_litert.interpreter import Interpreter

        try:
            self._interpreter = Interpreter(model_path=str(path))
            self._runner = self._interpreter.get_signature_runner()
        except Exception as err:  # ValueError for a bad flatbuffer, RuntimeError from the C++ side
            raise self._load_error(path, "ai_edge_litert", err) from None
        have = set(self._runner.get_input_details()) | set(self._runner.get_output_details())
        missing = [s["runtime_name"] for s in (*self.inputs, *self.outputs) if s["runtime_name"] not in have]
        if missing:
            raise ArtifactError(f"{path.name} has no signature tensors {missing} that the manifest names")

    def _run(self, tensors: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        feeds = {s["runtime_name"]: np.ascontiguousarray(t.detach().cpu().numpy(), dtype=s["runtime_dtype"])
                 for s, t in zip(self.inputs, tensors)}
        outputs = self._runner(**feeds)
        return tuple(torch.from_numpy(np.array(outputs[s["runtime_name"]], dtype=s["dtype"])) for s in self.outputs)


class CoreMLGraph(_Graph):
    """An `.mlpackage` run by Core ML through coremltools (macOS only; not exercised on Linux)."""

    def __init__(self, path: Path, name: str, entry: dict, compute_units: str) -> None:
        super().__init__(name, entry)
        import coremltools as ct

        units = {"all": "ALL", "cpu_and_ne": "CPU_AND_NE", "cpu_and_gpu": "CPU_AND_GPU", "cpu_only": "CPU_ONLY"}
        try:
            self._model = ct.models.MLModel(str(path), compute_units=getattr(ct.ComputeUnit, units[compute_units]))
        except Exception as err:
            raise self._load_error(path, "Core ML", err) from None

    def _run(self, tensors: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        feeds = {s["runtime_name"]: t.detach().cpu().numpy().astype(s["runtime_dtype"]) for s, t in zip(self.inputs, tensors)}
        outputs = self._model.predict(feeds)
        return tuple(torch.from_numpy(np.asarray(outputs[s["runtime_name"]], dtype=s["dtype"])) for s in self.outputs)


def _needs_macos(manifest: dict) -> bool:
    return manifest["target"] == "coreml" or (manifest["target"] == "executorch" and manifest.get("delegate") == "coreml")


def _runner(folder: Path, manifest: dict, name: str) -> _Graph:
    entry = manifest["graphs"][name]
    path = _inside(folder, entry["file"])
    target = manifest["target"]
    if target == "executorch":
        return ExecuTorchGraph(path, name, entry)
    if target == "tflite":
        return TFLiteGraph(path, name, entry)
    if target == "coreml":
        return CoreMLGraph(path, name, entry, manifest.get("compute_units") or "all")
    raise ArtifactError(f"{folder}: unknown target {target!r} in {MANIFEST}")


def load_artifact(path: str | Path) -> ArtifactPipeline:
    """A build folder from `minivlm-convert`, run by its real runtime, with the API of `minivlm.load`.

    Raises ArtifactError (one line) for a folder that is not a build, a missing or tampered file, a
    truncated or corrupt graph file, a config this SDK does not know, or a Core ML build off macOS.
    """
    folder = Path(path)
    manifest = read_manifest(folder)
    verify_files(folder, manifest)
    missing = [g for g in GRAPH_NAMES if g not in manifest["graphs"]]
    if missing:
        raise ArtifactError(f"{folder}: {MANIFEST} lacks the graphs {missing}")
    if _needs_macos(manifest) and sys.platform != "darwin":
        what = "Core ML build" if manifest["target"] == "coreml" else "ExecuTorch build with the Core ML delegate"
        raise ArtifactError(f"{folder} is a {what}: running it needs macOS (Core ML); on {sys.platform} it can "
                            f"only be converted and its spec checked")
    cfg = _config(manifest)
    tokenizer, vocab = _tokenizer(folder, manifest), _vocabularies(folder, manifest, cfg)
    run = {name: _runner(folder, manifest, name) for name in GRAPH_NAMES}
    graphs = Graphs(run["tee_stage1"], run["tee_stage2"], CaptionGraphs(cfg.fusion, run["caption_prefix"], run["caption_step"]),
                    run["vqa"], run["match"])
    return ArtifactPipeline(Pipeline(cfg, tokenizer, vocab, graphs), folder, manifest)


__all__ = ["ArtifactPipeline", "CoreMLGraph", "ExecuTorchGraph", "TFLiteGraph", "load_artifact", "read_manifest", "verify_files"]
