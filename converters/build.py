"""`build`: the reference pipeline, traced on real images, converted for one target into a build folder.

It traces the pipeline on real images (`samples.py`), measures every tensor's fp16 range, hands each graph to
the target's `convert_graph` (here or in worker processes), writes vocabularies, goldens and `manifest.json`
(with the sha256 of every file) into a temporary folder beside the destination, and renames it into place
only when all of it exists (`build_folder.py`). docs/ARCHITECTURE.md §6 walks through it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import importlib.metadata
import importlib.util
import json
import platform
import time
from pathlib import Path
from typing import Iterator

import torch

from minivlm.python_ref.errors import ConversionError
from minivlm.python_ref.families import family_of
from minivlm.python_ref.weights import state_sha256

from .atomic import signals_deferred
from .build_folder import atomic_directory, fatal_signals_unwind
from .fp16_range import RANGE_FILE, RangeRecorder
from .goldens import write_goldens
from .manifest import (GOLDEN_DIR, MANIFEST, MANIFEST_DIGEST, SCHEMA_VERSION, TOOLS, VOCAB_FILE, VOCABULARIES_FILE,
                       file_hashes, manifest_digest)
from .progress import BuildReport, Progress
from .samples import calibration_images, golden_images, trace
from .specs import GraphBuild, graph_specs
from .targets import BuildOptions
from .tolerances import tolerances_for
from .workers import Workers, convert_serial


def tool_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version(), "platform": platform.platform()}
    for name in TOOLS:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def build_manifest(pipeline, model_name: str, source: str, options: BuildOptions, graphs: list[GraphBuild],
                   extra: dict, random_init: dict | None = None) -> dict:
    """The manifest of a build of `pipeline` (docs/ARCHITECTURE.md §6); its host steps as the family describes them.
    `random_init` ({"seed", "state_sha256"}) says how to re-create weights that no file holds."""
    cfg = pipeline.cfg
    family = family_of(cfg)
    model = {"name": model_name, "preset": cfg.name, "source": source, "config": dataclasses.asdict(cfg)}
    if family.pruned(cfg):  # the per-layer widths the config holds, for a reader that knows no preset
        model["structure"] = family.structure(cfg)
    if random_init is not None:
        model["random_init"] = random_init
    return {
        "schema_version": SCHEMA_VERSION,
        "family": family.name,
        "model": model,
        "target": options.target,
        "delegate": options.delegate,
        "precision": options.precision,
        "compute_units": options.compute_units,
        **extra,
        "graph_order": list(family.graph_names),
        "batched_graphs": {name: {"graph": graph, "batch": batch} for name, (graph, batch) in family.batched.items()},
        "graphs": {g.name: g.as_json() for g in graphs},
        **family.describe(pipeline, VOCAB_FILE, VOCABULARIES_FILE),
        "tolerances": tolerances_for(options.target, options.precision),
        "tools": tool_versions(),
        "golden_dir": GOLDEN_DIR,
    }


def write_vocabularies(pipeline, folder: Path) -> None:
    """The tokenizer's vocabulary (VOCAB_FILE, one token per line) and the output names (VOCABULARIES_FILE)."""
    tok = pipeline.tokenizer
    lines = [tok.id_to_token(i) for i in range(tok.vocab_size)]
    (folder / VOCAB_FILE).write_text("\n".join(lines) + "\n", encoding="utf-8")
    vocab = dataclasses.asdict(pipeline.vocab)
    (folder / VOCABULARIES_FILE).write_text(json.dumps(vocab, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


@contextlib.contextmanager
def _torch_threads(n: int | None) -> Iterator[None]:
    """torch's intra-op threads set to `n` inside the block (None: unchanged), restored after.

    While worker processes import and convert on every core, the parent's OpenMP threads spin-wait for
    cores they do not get: tracing 4 images took 33 s instead of 0.7 s next to two importing workers."""
    if n is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def load_target(options: BuildOptions):
    """The converter module of a target, after checking that its backend is installed. The check does not
    import the backend (coremltools alone takes ~10 s): the conversions do, here or in worker processes."""
    module = importlib.import_module(options.spec.module)
    for name in module.BACKEND_MODULES:
        if importlib.util.find_spec(name.split(".")[0]) is None:
            raise ConversionError(f"the {options.target} target needs the {name.split('.')[0]} package, which is not installed")
    return module


def build(pipeline, *, model_name: str, source: str, options: BuildOptions, out: str | Path,
          force: bool = False, progress: Progress | None = None, jobs: int = 1, seed: int | None = None) -> BuildReport:
    """Convert the graphs of `pipeline` (of any family) for `options` into the self-contained folder `out` (see
    module doc). `seed` is the seed of a random init (None: the weights come from `source`): the manifest
    records it with the sha256 of the model's state (`state_sha256`), so that parity can re-create the weights.

    `jobs` > 1 converts that many graphs at once in worker processes (conversion is single-threaded Python,
    so on a 2-core machine two workers nearly halve the time); 1 converts in this process.
    """
    if pipeline.model is None:
        raise ConversionError("a build needs the eager reference model (Pipeline.from_model), not runtime graphs")
    progress = progress or Progress()
    family = family_of(pipeline.cfg)
    random_init = None if seed is None else {"seed": seed, "state_sha256": state_sha256(pipeline.model)}
    started = time.perf_counter()
    with fatal_signals_unwind(), atomic_directory(Path(out), force=force) as tmp:  # checks `out` before slow work
        target = load_target(options)
        workers = None
        try:
            if jobs > 1:
                workers = Workers(min(jobs, len(family.graph_names)), target)
            # The workers take every core: the parent traces and writes goldens on one thread.
            with _torch_threads(1 if workers is not None else None):
                # Every graph call is measured for the fp16 range check as the trace makes it.
                recorder = RangeRecorder()
                progress.stage(f"tracing the reference pipeline on {len(golden_images())} real images")
                traces = [trace(pipeline, s, recorder) for s in golden_images()]
                calibration = traces
                if any(target.calibrates(name, options) for name in family.build_graphs):
                    progress.stage("tracing calibration images for int8")
                    calibration = traces + [trace(pipeline, s, recorder) for s in calibration_images()[len(traces):]]
                specs = graph_specs(pipeline, traces, calibration)
                ranges = recorder.report(len(calibration))
                # Keep every traced input only where int8 calibrates on them (less to pickle to worker processes).
                specs = [s if target.calibrates(s.name, options) else dataclasses.replace(s, calibration=s.calibration[:1])
                         for s in specs]

                def vocabularies_and_goldens() -> int:
                    write_vocabularies(pipeline, tmp)
                    io_names = {s.name: (s.input_names, s.output_names) for s in specs}
                    return write_goldens(traces, io_names, pipeline, tmp / GOLDEN_DIR)

                if workers is None:
                    graphs = convert_serial(target, specs, options, tmp, progress)
                    progress.stage("writing vocabularies, goldens and manifest")
                    golden_bytes = vocabularies_and_goldens()
                else:
                    graphs, golden_bytes = workers.convert(specs, options, tmp, progress, vocabularies_and_goldens,
                                                           first=family.slowest)
        except BaseException:
            if workers is not None:
                with signals_deferred():
                    workers.close(abort=True)
            raise
        if workers is not None:
            workers.close()
        # A target that shares weights between graphs combines the per-graph files into its final layout here.
        pack = getattr(target, "pack", None)
        if pack is not None:
            progress.stage("packing the graphs into one copy of the weights")
            graphs = pack(graphs, options, tmp)
        (tmp / RANGE_FILE).write_text(json.dumps(ranges.table(), indent=0) + "\n", encoding="utf-8")
        extra = target.manifest_extra(options, family.build_graphs)
        manifest = build_manifest(pipeline, model_name, source, options, graphs, extra, random_init)
        manifest["fp16_range"] = ranges.summary()
        manifest["files"] = file_hashes(tmp)
        manifest[MANIFEST_DIGEST] = manifest_digest(manifest)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return BuildReport(Path(out), options, model_name, graphs, time.perf_counter() - started, golden_bytes, manifest)


__all__ = ["build", "build_manifest", "load_target", "tool_versions", "write_vocabularies"]
