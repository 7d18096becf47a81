"""The checks a build folder passes before anything runs (docs/ARCHITECTURE.md §6): `verify_build`.

Each check is a one-line ArtifactError naming what is wrong: the manifest's structure (every entry the SDK
reads, of the type it expects), its own sha256 (an edit after the build), the sha256 of every file it lists (a
missing, truncated or edited file), every path inside the folder and no symbolic links, the config against this
SDK's preset, and each graph's inputs and outputs (names, shapes, dtypes, order) against the model that config
describes and against what the graph's own runtime reports (ExecuTorch's method metadata, the TFLite
signature, the Core ML spec), with the graphs and presets of the build's model family (`family`; a manifest
without one is a MiniVLM build). `minivlm.runtime.load_artifact` runs the same checks before it builds its runners.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from minivlm.converters import coreai_asset
from minivlm.converters.coreml_spec import function_io, function_names
from minivlm.converters.manifest import (GOLDEN_DIR, MANIFEST, MANIFEST_DIGEST, SCHEMA_VERSION,
                                         manifest_digest, sha256_file)
from minivlm.converters.targets import TARGETS
from minivlm.errors import ArtifactError, ConfigError
from minivlm.graph_io import TensorIO, check_model_io, check_runtime_io
from minivlm.python_ref.families import FAMILIES, PRESET_FAMILIES, family_named
from minivlm.python_ref.family import Family

TORCH_DTYPES = {"float32": torch.float32, "int64": torch.int64, "int32": torch.int32, "float16": torch.float16}
# ExecuTorch's TensorInfo.dtype() is a c10 ScalarType code.
_EXECUTORCH_DTYPES = {0: "uint8", 1: "int8", 3: "int32", 4: "int64", 5: "float16", 6: "float32", 7: "float64", 11: "bool"}
_SHA256 = re.compile(r"[0-9a-f]{64}")
DEFAULT_FAMILY = "minivlm"  # of a manifest that names none: every build before EfficientVLM was a MiniVLM build


def first_line(err: BaseException) -> str:
    """The first line of an exception's message (its type's name if it has none), for one-line errors."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


# --- the manifest: structure, its own checksum, the files it lists ---------------------------------------------


def _show(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 60 else text[:57] + "..."


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _one_of(choices) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, str) and v in choices


def _text(value: Any) -> bool:
    return isinstance(value, str) and value != ""


def check_manifest(manifest: Any, path: Path) -> dict:
    """ArtifactError (one line, naming the key and what was expected) unless `manifest` has every entry the SDK
    reads, each of the type it uses. The one place load_artifact and parity check a manifest's structure, so
    nothing later meets a list where it indexes an object."""

    def need(parent: dict, key: str, where: str, ok: Callable[[Any], bool], expected: str, optional: bool = False) -> Any:
        name = f"{where}.{key}" if where else key
        if key not in parent:
            if optional:
                return None
            raise ArtifactError(f"{path} lacks {name}; expected {expected}")
        if not ok(parent[key]):
            raise ArtifactError(f"{path}: {name} is {_show(parent[key])}; expected {expected}")
        return parent[key]

    if not isinstance(manifest, dict):
        raise ArtifactError(f"{path} holds {_show(manifest)}; expected a JSON object")
    version = manifest.get("schema_version")
    if not _is_int(version):
        raise ArtifactError(f"{path}: schema_version is {_show(version)}; expected the integer {SCHEMA_VERSION}")
    if version != SCHEMA_VERSION:
        raise ArtifactError(f"{path} has schema version {version}; this SDK reads version {SCHEMA_VERSION} "
                            f"(rebuild with minivlm-convert)")
    if MANIFEST_DIGEST not in manifest:
        raise ArtifactError(f"{path} has no {MANIFEST_DIGEST} (an older minivlm-convert wrote it, or it was removed); "
                            f"rebuild with minivlm-convert")
    need(manifest, MANIFEST_DIGEST, "", lambda v: isinstance(v, str) and _SHA256.fullmatch(v), "a sha256 hex digest")
    is_dict = lambda v: isinstance(v, dict)  # noqa: E731
    model = need(manifest, "model", "", is_dict, "an object with the model's name, preset and config")
    need(model, "name", "model", _text, "the model's name")
    need(model, "preset", "model", _text, "a preset name")
    need(model, "config", "model", is_dict, "the model's config as an object")
    need(model, "source", "model", lambda v: isinstance(v, str), "a string (the weights it was built from)", optional=True)
    need(model, "structure", "model", is_dict, "an object (the per-layer widths of a pruned model)", optional=True)
    target = need(manifest, "target", "", _one_of(TARGETS), f"one of {', '.join(TARGETS)}")
    spec = TARGETS[target]
    need(manifest, "precision", "", _one_of(spec.precisions), f"one of {target}'s precisions: {', '.join(spec.precisions)}")
    for key, choices in (("delegate", spec.delegates), ("compute_units", spec.compute_units)):
        need(manifest, key, "", lambda v, c=choices: v is None or _one_of(c)(v),
             f"null or one of {', '.join(choices)}" if choices else f"null (a {target} build has none)", optional=True)
    files = need(manifest, "files", "", lambda v: isinstance(v, dict) and v,
                 "an object mapping each file's path in the build to its sha256")
    for rel, digest in files.items():
        if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
            raise ArtifactError(f"{path}: files[{rel!r}] is {_show(digest)}; expected a sha256 hex digest")
    family = need(manifest, "family", "", _one_of(FAMILIES), f"one of this SDK's model families: {', '.join(FAMILIES)}",
                  optional=True)
    declared = FAMILIES[family or DEFAULT_FAMILY]
    graph_names = declared.graph_names
    graphs = need(manifest, "graphs", "", is_dict, f"an object with the graphs {', '.join(graph_names)}")
    # A build made before batched graphs existed has none: its runner then calls the graph once per example.
    missing, unknown = [g for g in graph_names if g not in graphs], [g for g in graphs if g not in declared.build_graphs]
    if missing or unknown:
        optional = f" (and optionally {list(declared.batched)})" if declared.batched else ""
        raise ArtifactError(f"{path}: graphs has {list(graphs)}; expected exactly {list(graph_names)}{optional}")
    for name in graphs:
        where = f"graphs.{name}"
        entry = need(graphs, name, "graphs", is_dict, "an object with the graph's file, inputs and outputs")
        need(entry, "file", where, _text, "the graph's file name in the build folder")
        if target in ("coreml", "coreai"):
            model = "Core ML package" if target == "coreml" else "Core AI asset"
            need(entry, "function", where, _text, f"the graph's function in the {model} (rebuild older builds)")
        need(entry, "signature", where, _text, "its signature's key in the .tflite (an older build: rebuild it)", optional=target != "tflite")
        for io in ("inputs", "outputs"):
            tensors = need(entry, io, where, lambda v: isinstance(v, list) and v, "a non-empty list of tensors")
            for k, tensor in enumerate(tensors):
                at = f"{where}.{io}[{k}]"
                if not is_dict(tensor):
                    raise ArtifactError(f"{path}: {at} is {_show(tensor)}; expected an object (name, shape, dtype, ...)")
                need(tensor, "name", at, _text, "the tensor's name")
                shape = need(tensor, "shape", at, lambda v: isinstance(v, list) and v and all(_is_int(d) and d > 0 for d in v),
                             "a list of positive integers")
                need(tensor, "dtype", at, _one_of(TORCH_DTYPES), f"one of {', '.join(TORCH_DTYPES)}")
                need(tensor, "batch_axis", at, lambda v, s=shape: _is_int(v) and 0 <= v < len(s), f"an axis of its shape, 0 to {len(shape) - 1}")
                need(tensor, "runtime_name", at, _text, "the tensor's name in the runtime")
                need(tensor, "runtime_dtype", at, _one_of(TORCH_DTYPES), f"one of {', '.join(TORCH_DTYPES)}")
    tokenizer = need(manifest, "tokenizer", "", is_dict, "an object with the tokenizer's vocab_file")
    need(tokenizer, "vocab_file", "tokenizer", _text, "the vocabulary file's name in the build folder")
    need(manifest, "vocabularies_file", "", _text, "the vocabularies file's name in the build folder")
    need(manifest, "golden_dir", "", _text, "the goldens' folder in the build", optional=True)
    need(manifest, "weights_file", "", _text, "the shared weights file's name in the build folder", optional=target != "executorch")
    return manifest


def read_manifest(folder: Path) -> dict:
    """The parsed manifest of a build folder, its structure checked (`check_manifest`) and its own sha256 too:
    ArtifactError if there is none, it is unreadable or malformed, or it was edited after the build."""
    if not folder.is_dir():
        raise ArtifactError(f"{folder} is not a build folder (it does not exist or is not a directory)")
    path = folder / MANIFEST
    if path.is_symlink() or (path.exists() and not path.is_file()):
        raise ArtifactError(f"{path} is not a regular file; a build folder holds only the files minivlm-convert wrote")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ArtifactError(f"{folder} has no {MANIFEST}; it is not a minivlm build") from None
    except (OSError, ValueError, RecursionError) as err:  # JSONDecodeError, bad UTF-8, too deeply nested
        raise ArtifactError(f"{path} is unreadable: {type(err).__name__}: {first_line(err)}") from None
    check_manifest(manifest, path)
    recorded, actual = manifest[MANIFEST_DIGEST], manifest_digest(manifest)
    if recorded != actual:
        raise ArtifactError(f"{path} was edited after the build (its content hashes to {actual[:12]}..., the build "
                            f"recorded {recorded[:12]}...); restore it or rebuild with minivlm-convert")
    return manifest


def inside(folder: Path, rel: str) -> Path:
    """`folder / rel`, refused if it leaves the folder or goes through a symbolic link (a build has none)."""
    parts = Path(rel).parts
    if not parts or Path(rel).is_absolute() or ".." in parts:
        raise ArtifactError(f"{MANIFEST} lists {rel!r}, which is not a path inside the build folder")
    for i in range(1, len(parts) + 1):
        part = folder.joinpath(*parts[:i])
        if part.is_symlink():
            raise ArtifactError(f"{folder}: {Path(*parts[:i]).as_posix()} is a symbolic link; a build folder holds "
                                f"only the files minivlm-convert wrote (rebuild it, or copy it without links)")
    return folder / rel


# Graph "files" that are folders: each of their files has its own sha256 in the manifest.
FOLDER_SUFFIXES = {".mlpackage": "Core ML package", ".aimodel": "Core AI asset"}


def verify_files(folder: Path, manifest: dict) -> None:
    """ArtifactError naming the first file that is missing, not a regular file, or whose sha256 differs from the
    manifest's; and the first file the SDK reads (graphs, vocabularies, goldens' index) that it does not cover."""
    files = manifest["files"]
    for rel, digest in files.items():
        path = inside(folder, rel)
        if not path.exists():
            raise ArtifactError(f"{folder}: {rel} is missing (listed in {MANIFEST})")
        if not path.is_file():
            raise ArtifactError(f"{folder}: {rel} is not a regular file (a folder or a device); rebuild it")
        if sha256_file(path) != digest:
            raise ArtifactError(f"{folder}: {rel} fails its sha256 check (tampered with or corrupt); rebuild it")
    suffix = TARGETS[manifest["target"]].suffix
    for name, rel in ((name, entry["file"]) for name, entry in manifest["graphs"].items()):
        path = inside(folder, rel)
        if Path(rel).suffix != suffix:
            raise ArtifactError(f"{folder}: graph {name} file {rel} is not a {suffix} ({manifest['target']} build)")
        if suffix not in FOLDER_SUFFIXES:
            if path.is_dir():
                raise ArtifactError(f"{folder}: graph {name} file {rel} is a folder; expected a {suffix} file")
            if rel not in files:
                raise ArtifactError(f"{folder}: graph {name} file {rel} has no checksum in {MANIFEST}")
            if path.stat().st_size == 0:
                raise ArtifactError(f"{folder}: graph {name} file {rel} is empty; rebuild it")
            continue
        if not path.is_dir() or not any(f.startswith(rel.rstrip("/") + "/") for f in files):
            raise ArtifactError(f"{folder}: graph {name} file {rel} is not a {FOLDER_SUFFIXES[suffix]} folder whose files "
                                f"{MANIFEST} lists")
        # No file may be added to a package or asset either (nor a link: rglob does not follow them).
        extra = [p for p in path.rglob("*") if p.is_symlink() or p.is_file() and p.relative_to(folder).as_posix() not in files]
        if extra:
            raise ArtifactError(f"{folder}: {extra[0].relative_to(folder)} is not listed in {MANIFEST}")
    goldens = manifest.get("golden_dir", GOLDEN_DIR)
    inside(folder, goldens)
    for rel in filter(None, (manifest["tokenizer"]["vocab_file"], manifest["vocabularies_file"],
                             f"{goldens.rstrip('/')}/index.json", manifest.get("weights_file"))):
        inside(folder, rel)
        if rel not in files:
            raise ArtifactError(f"{folder}: {rel} has no checksum in {MANIFEST}")


def manifest_family(manifest: dict) -> Family:
    """The model family of a build whose manifest passed `check_manifest`."""
    return family_named(manifest.get("family", DEFAULT_FAMILY))


def _config(manifest: dict):
    model = manifest["model"]
    family = manifest_family(manifest)
    if model["preset"] not in PRESET_FAMILIES:
        raise ArtifactError(f"the build is of model preset {model['preset']!r}, which this SDK does not know")
    if PRESET_FAMILIES[model["preset"]] is not family:
        raise ArtifactError(f"the build's preset {model['preset']} is not of its manifest's family {family.name}")
    cfg = family.config(model["preset"])
    if "structure" in model:  # a structurally pruned model: the preset with the per-layer widths it records
        try:
            cfg = family.restructured(cfg, model["structure"])
        except ConfigError as err:
            raise ArtifactError(f"the build's model.structure is not one of {model['preset']}: {first_line(err)}") from None
    if json.loads(json.dumps(dataclasses.asdict(cfg))) != model["config"]:
        raise ArtifactError(f"the build's {model['preset']} config differs from this SDK's; rebuild it with this version")
    return cfg


def _executorch_io(program) -> dict[str, list]:
    meta = program.metadata("forward")
    dtype = lambda info: _EXECUTORCH_DTYPES.get(info.dtype(), f"ScalarType {info.dtype()}")  # noqa: E731
    return {"inputs": [(None, tuple(i.sizes()), dtype(i)) for i in map(meta.input_tensor_meta, range(meta.num_inputs()))],
            "outputs": [(None, tuple(o.sizes()), dtype(o)) for o in map(meta.output_tensor_meta, range(meta.num_outputs()))]}




def load_error(path: Path, runtime: str, err: BaseException) -> ArtifactError:
    """The one-line ArtifactError for a graph file that `runtime` cannot load."""
    return ArtifactError(f"{path.name}: {runtime} cannot load it ({first_line(err)}); the file is corrupt or truncated")


def load_executorch(path: Path, weights: Path):
    """The program in a `.pte` with its build's `weights` file (`.ptd`), and its method's inputs and outputs (read
    without loading the method, so this works for a Core ML delegated program on Linux too)."""
    # Registers ExecuTorch's quantized kernels with the runtime (int8 builds' `embedding_byte` lookups); the
    # runtime's own operator set has the portable kernels only.
    import executorch.kernels.quantized  # noqa: F401
    from executorch.runtime import Runtime, Verification

    try:
        program = Runtime.get().load_program(path, verification=Verification.InternalConsistency, data_path=weights)
        return program, _executorch_io(program)
    except Exception as err:  # pybind raises RuntimeError (and ValueError on bad arguments); no "forward"
        raise load_error(path, "executorch", err) from None


def coreml_function_io(path: Path, function: str) -> dict[str, list[TensorIO]]:
    """The inputs and outputs of `function` in the multifunction `.mlpackage` at `path`, read from its spec (on
    Linux too); ArtifactError if coremltools cannot read it or it has no such function."""
    import coremltools as ct

    try:
        spec = ct.utils.load_spec(str(path))
    except Exception as err:  # protobuf DecodeError, FileNotFoundError for a package without its model
        raise load_error(path, "coremltools", err) from None
    have = function_io(spec, function)
    if have is None:
        raise ArtifactError(f"{path.name} has no function {function!r} (it has {function_names(spec)}); "
                            f"{MANIFEST} names it; rebuild with minivlm-convert")
    return have


def coreai_function_io(path: Path, function: str) -> dict[str, list[TensorIO]]:
    """The inputs and outputs of `function` in the Core AI asset at `path`, read from its program without compiling
    it; ArtifactError if coreai cannot read it or it has no such function."""
    try:
        info = coreai_asset.summary(path)
        have = coreai_asset.function_io(info, function)
    except Exception as err:  # the native reader raises RuntimeError; a changed summary text a ValueError
        raise load_error(path, "coreai", err) from None
    if have is None:
        raise ArtifactError(f"{path.name} has no function {function!r} (it has {list(info.function_names)}); "
                            f"{MANIFEST} names it; rebuild with minivlm-convert")
    return have


def load_tflite(path: Path, name: str, entry: dict, interpreter=None, num_threads: int | None = None):
    """The ai_edge_litert Interpreter of a `.tflite` (`interpreter` if given: one serves all graphs of the file;
    else a new one with `num_threads`, None = its default) and the runner of the entry's `signature`, its tensors
    (names, shapes, dtypes; mapped by name) checked against the manifest's `entry`: ArtifactError for a name the
    manifest lists and the signature lacks, or the other way round."""
    from ai_edge_litert.interpreter import Interpreter

    try:
        interpreter = interpreter or Interpreter(model_path=str(path), num_threads=num_threads)
        keys = list(interpreter.get_signature_list())
    except Exception as err:  # ValueError for a bad flatbuffer, RuntimeError from the C++ side
        raise load_error(path, "ai_edge_litert", err) from None
    if entry["signature"] not in keys:
        raise ArtifactError(f"graph {name}: {path.name} has no signature {entry['signature']!r} (it has {keys})")
    runner, have = interpreter.get_signature_runner(entry["signature"]), {}
    for io, details in (("inputs", runner.get_input_details()), ("outputs", runner.get_output_details())):
        listed = [t["runtime_name"] for t in entry[io]]
        if sorted(listed) != sorted(details):
            raise ArtifactError(f"graph {name}: {path.name}'s signature {io} are {sorted(details)}; {MANIFEST} lists {listed}")
        have[io] = [(n, tuple(int(d) for d in details[n]["shape"]), np.dtype(details[n]["dtype"]).name) for n in listed]
    check_runtime_io(name, entry, path.name, have)
    return interpreter, runner


def verified_manifest(folder: Path) -> tuple[dict, object]:
    """The manifest (structure, own sha256), every file's sha256, the config (of the manifest's family) and the
    manifest's graph I/O against the model: every check that needs no runtime."""
    manifest = read_manifest(folder)
    verify_files(folder, manifest)
    cfg = _config(manifest)
    check_model_io(manifest, cfg)
    return manifest, cfg


def verify_build(path: str | Path) -> dict:
    """Check a build folder without running it and return its manifest: the manifest's structure and own sha256, every
    file's sha256, the config, and each graph's inputs and outputs against both the model and what the graph's runtime
    reports of the file (ExecuTorch's method metadata, the TFLite signature, the Core ML spec, the Core AI asset's
    summary; each readable on Linux).
    Seconds, even for a build whose graphs take minutes to compare: `minivlm parity` runs it before any reference
    work. ArtifactError (one line) for the first problem."""
    folder = Path(path)
    manifest, _ = verified_manifest(folder)
    interpreters: dict[Path, Any] = {}  # TFLite: one per file, shared by its graphs' signatures
    for name, entry in manifest["graphs"].items():
        file = inside(folder, entry["file"])
        label = file.name
        if manifest["target"] == "executorch":
            _, have = load_executorch(file, inside(folder, manifest["weights_file"]))
        elif manifest["target"] == "tflite":  # loading it checks its signature
            interpreters[file], _ = load_tflite(file, name, entry, interpreters.get(file))
            continue
        else:
            read = coreml_function_io if manifest["target"] == "coreml" else coreai_function_io
            have = read(file, entry["function"])
            label = f"{file.name} function {entry['function']}"  # one package or asset holds every graph
        check_runtime_io(name, entry, label, have)
    return manifest


__all__ = ["DEFAULT_FAMILY", "TORCH_DTYPES", "check_manifest", "coreai_function_io", "coreml_function_io",
           "first_line", "inside", "load_error", "load_executorch", "load_tflite", "manifest_family", "read_manifest",
           "verified_manifest", "verify_build", "verify_files"]
