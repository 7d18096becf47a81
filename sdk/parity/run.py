"""`minivlm parity`: a build run by its real runtime next to python_ref, per graph, per host step and per task.

On real inputs only (scikit-image photos and demo scenes the model never trained or calibrated on):
1. the reference runs every task on each image with its graphs recorded (inputs and outputs of each call);
2. per graph, the build's runner gets exactly the reference's recorded inputs, and each output is compared over
   all calls: max abs error (and as a share of the output's peak |ref|), mean abs error, PSNR (peak = max
   |ref|), SQNR and the worst call's cosine;
3. every constant the build stores is traced to the reference tensor it came from and compared (exactly in
   fp32; int8 within half a step, with the scale the reference implies), counting copies (`weight_audit.py`),
   so that a weight no parity input exercises cannot differ unseen;
4. per host step, python_ref's host code on the build's own graph outputs must keep the same integer decisions
   (proposals, region labels and proposal indices, packed token ids) as on the reference's;
5. per task, the build end to end: detections IoU-matched with the same label (never index by index), the
   same tags, caption tokens and answers, close detection scores and match probabilities (EfficientVLM: the
   same caption tokens, answers and match decisions, close match probabilities: `efficientvlm_tasks.py`);
6. per layer (Core AI builds; Core ML builds off macOS): every node of each function against the program it was
   converted from, on one real call, naming the first layer below its bound (`layers.py`).
Each bound is a named constant of `minivlm.converters.tolerances`, per target × precision, printed with its
reason in every report. Before comparing, the reference must reproduce the goldens stored in the build: a build
made from other weights is a ParityError, not a list of failures.

Core ML runs only on macOS. Elsewhere a Core ML build runs in the SDK's ML-program executor
(`minivlm.coreml_executor`: the converted program op by op, float16 stored and rounded where the program says),
which checks the conversion against an ideal fp16 executor, not the Neural Engine's or GPU's own arithmetic; the
report says so. ExecuTorch's Core ML delegate is not run off macOS: its report checks the files, the spec and
the fp16 range of every tensor on these images, and lists the execution checks as waiting for macOS.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Callable, Iterable

from minivlm.converters.manifest import needs_macos
from minivlm.converters.tolerances import Tolerance, tolerance
from minivlm.errors import ArtifactError, ParityError
from minivlm.loading import ReferencePipeline

from .checks import coreml_spec_checks, graph_checks, range_checks, structural
from .efficientvlm_tasks import efficientvlm_task_checks
from .goldens import check_goldens
from .layers import layer_checks
from .images import DEFAULT_PHOTOS, DEFAULT_SCENES, parity_images
from .reference import ReferenceRun, run_image_of, run_reference
from .report import ParityReport, write_report
from .statistics import ErrorStats
from .tasks import host_and_task_checks
from .weight_audit import AuditResult, audit_build, audit_check, not_audited

# The host-step and task rows of a build, by model family: (reference run, build run) per image -> rows, per image JSON.
TASK_CHECKS = {"minivlm": host_and_task_checks, "efficientvlm": efficientvlm_task_checks}
# What parity leaves to other tests, by model family.
NOT_CHECKED = {"minivlm": "native host-step ports (C++/Kotlin/Swift) replay the build's golden/ in their own tests",
               "efficientvlm": "native host-step ports (C++/Kotlin/Swift) replay tests/golden_efficientvlm in their own tests"}


def _computes_in_fp16(manifest: dict) -> bool:
    return manifest["target"] == "coreml" and manifest["precision"] in ("fp16", "int8")


def check_parity(build: str | Path, ref: ReferenceRun, *, progress: Callable[[Iterable], Iterable] = lambda it: it,
                 platform: str = sys.platform) -> ParityReport:
    """Compare the build in `build` with the reference run `ref` (see the module doc). Raises ArtifactError for
    a folder that is not a valid build, ParityError if the reference is not the model it was built from; a
    build that disagrees is a report with failed checks (`report.passed` False)."""
    from minivlm.build_checks import manifest_family, verify_build
    from minivlm.runtime import load_artifact

    t0 = time.perf_counter()
    folder = Path(build)
    manifest = verify_build(folder)
    tol = _tolerance(folder, manifest)
    source = ref.reference.source
    if manifest["model"]["preset"] != ref.reference.config.name:
        raise ParityError(f"{folder} is a build of {manifest['model']['preset']}, the reference is {ref.reference.config.name}")
    check_goldens(folder, manifest, ref.reference, source)
    checks = [structural("build", "files", f"sha256 of {len(manifest['files'])} files", True, "= manifest", "")]
    not_checked: list[str] = []
    audit: AuditResult | None = None
    if (why := not_audited(manifest)) is None:
        pipe = ref.reference.pipeline
        audit = audit_build(folder, manifest, pipe.model, pipe.graphs.modules())
        checks.append(audit_check(audit))
    else:
        not_checked.append(f"weight audit: {why}")
    range_report = None
    if manifest["target"] == "coreml":
        checks += coreml_spec_checks(folder, manifest)
    if _computes_in_fp16(manifest):
        ranges, range_report = range_checks(ref, manifest)
        checks += ranges
    graphs: dict[str, dict[str, ErrorStats]] = {}
    per_image: list[dict] = []
    layers: dict[str, dict] | None = None
    executor = manifest["target"] == "coreml" and platform != "darwin"
    if needs_macos(manifest) and platform != "darwin" and not executor:
        not_checked.append("running the graphs and the tasks: an ExecuTorch Core ML delegate build runs only on "
                           f"macOS/iOS; run `minivlm parity {folder}` or `pytest -m macos tests/parity` on a Mac")
    else:
        if executor:
            not_checked.append("Core ML's own arithmetic (Neural Engine, GPU): off macOS the graphs ran in the SDK's "
                               "ML-program executor, an ideal fp16 executor of the converted program; run "
                               f"`minivlm parity {folder}` on a Mac for Core ML itself")
        artifact = load_artifact(folder)
        runners = dict(artifact.pipeline.graphs.modules())
        batched = {name: spec for name, spec in manifest_family(manifest).batched.items() if name in manifest["graphs"]}
        runners |= {name: runners[graph].batched for name, (graph, _) in batched.items()}
        per_graph, graphs = graph_checks(runners, ref, manifest, tol, batched)
        pairs = [(r, run_image_of(artifact.pipeline, s)) for r, s in zip(ref.runs, progress(ref.images))]
        task_checks, per_image = TASK_CHECKS[manifest_family(manifest).name](pairs, tol)
        checks += per_graph
        if manifest["target"] == "coreai" or executor:
            layer_rows, layers = layer_checks(folder, manifest, ref)
            checks += layer_rows
        checks += task_checks
    not_checked.append(NOT_CHECKED[manifest_family(manifest).name])
    return ParityReport(folder, manifest, source, [s.name for s in ref.images], tol, checks, graphs, per_image,
                        not_checked, time.perf_counter() - t0 + ref.seconds, range_report, platform, audit, layers)


def _tolerance(folder: Path, manifest: dict) -> Tolerance:
    key = (manifest["target"], manifest["precision"])
    try:
        return tolerance(*key)
    except KeyError:
        raise ArtifactError(f"{folder} is a {key[0]} {key[1]} build, for which no parity tolerance exists") from None


def reference_for(manifest: dict, model: str | None = None) -> ReferencePipeline:
    """The reference a build is compared with: `model` if given, else the random weights the build records
    (re-created from its preset and seed, `recreated`), else the bundled weights of the build's model name, else
    the weights file the build records as its source (a model of any family)."""
    from minivlm.loading import bundled_weights, load
    from minivlm.python_ref.families import PRESET_FAMILIES

    if model is not None:
        return load(model)
    if "random_init" in manifest["model"]:
        return recreated(manifest)
    name, source = manifest["model"]["name"], manifest["model"].get("source", "")
    if name in PRESET_FAMILIES and bundled_weights(name) is not None:
        return load(name)
    if source and Path(source).is_file():
        return load(source)
    raise ParityError(f"the build's model {name!r} (source {source!r}) has no weights here to compare with; "
                      f"pass --model with the .safetensors it was built from")


def recreated(manifest: dict) -> ReferencePipeline:
    """The untrained model a `--random-init` build came from: its preset re-created from the recorded seed, and
    proven to be those weights by the recorded sha256 of its state (torch's initialisers may draw differently in
    another torch version: a ParityError then says so)."""
    import torch

    from minivlm.loading import load
    from minivlm.python_ref.weights import state_sha256

    origin, preset = manifest["model"]["random_init"], manifest["model"]["preset"]
    seed = origin.get("seed") if isinstance(origin, dict) else None
    want = origin.get("state_sha256") if isinstance(origin, dict) else None
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0 or not isinstance(want, str):
        raise ArtifactError(f"the build's model.random_init is {origin!r}; expected {{\"seed\": a non-negative integer, "
                            f"\"state_sha256\": a hex digest}} (rebuild with minivlm-convert)")
    reference = load(preset, random_init=True, seed=seed)
    got = state_sha256(reference.pipeline.model)
    if got != want:
        built_with = (manifest.get("tools") or {}).get("torch")
        raise ParityError(f"{preset} re-created from seed {seed} with torch {torch.__version__} has weights of sha256 "
                          f"{got[:12]}…, not the {want[:12]}… the build recorded (built with torch {built_with}): run "
                          f"parity under torch {built_with}, or rebuild here with `minivlm-convert --model {preset} "
                          f"--random-init --seed {seed}`")
    return reference


def run_parity(build: str | Path, *, model: str | None = None, scenes: int = DEFAULT_SCENES,
               photos: Iterable[str] = DEFAULT_PHOTOS, write: bool = True,
               progress: Callable[[Iterable], Iterable] = lambda it: it) -> ParityReport:
    """`minivlm parity`: verify the build (manifest, checksums, each graph's I/O against the model and its
    runtime: seconds), then load the reference for it, run it on the parity images, compare, and write
    `parity_report.json` into the build (unless `write` is False). A broken build fails before the reference runs."""
    from minivlm.build_checks import verify_build

    manifest = verify_build(build)
    _tolerance(Path(build), manifest)
    ref = run_reference(reference_for(manifest, model), parity_images(scenes, photos), progress,
                        fp16_range=_computes_in_fp16(manifest))
    report = check_parity(build, ref, progress=progress)
    if write:
        write_report(report)
    return report
