"""Test tiers, and the session fixtures shared by tests/converters and tests/sdk: the tiny model and its
ExecuTorch / TFLite / Core AI fp32 and Core ML fp16 builds, converted once per session; the tiny EfficientVLM and its builds, on first use.

Tiers (docs/TESTING.md). A plain `pytest` runs the fast tier: unit tests on the tiny model, about a minute.
The integration tiers are markers, given here by folder or by the fixtures a test uses:
    build   converts a model (any test using a tiny build fixture)    parity  the demo model's builds (tests/parity)
    native  compiles the C++ core (tests/native)                        apps    the demo apps' code (tests/apps)
    model   whole-model runs: training smoke runs, the demo model's scores
    ddp     two training processes under torchrun
Each of them also carries `integration`, so `pytest -m integration` runs them all (CI does). Naming a test
folder or file runs its tests whatever their tier (`pytest tests/parity`). `slow` and `macos` tests run only
when a `-m` expression names them.
"""

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import settings

import minivlm

TESTS = Path(__file__).resolve().parent
INTEGRATION_TIERS = ("build", "parity", "native", "apps", "model", "ddp")
FOLDER_TIERS = {"parity": "parity", "native": "native", "apps": "apps"}
FIXTURE_TIERS = {"tiny_executorch_build": "build", "tiny_tflite_build": "build", "tiny_coreai_build": "build",
                 "tiny_coreml_build": "build",
                 "tiny_efficientvlm_build": "build", "smoke_run": "model", "vlm_smoke_run": "model"}
OPT_IN = ("slow", "macos")


def _named_explicitly(config: pytest.Config) -> list[Path]:
    """The test folders and files given on the command line, except the whole tests/ folder (or above it)."""
    if config.args_source != pytest.Config.ArgsSource.ARGS:
        return []
    named = [Path(config.invocation_params.dir, arg.split("::")[0]).resolve() for arg in config.args]
    return [p for p in named if p != TESTS and TESTS in p.parents]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        path = Path(str(item.path)).resolve()
        folder = path.relative_to(TESTS).parts[0] if TESTS in path.parents else ""
        if folder in FOLDER_TIERS:
            item.add_marker(FOLDER_TIERS[folder])
        for fixture in FIXTURE_TIERS.keys() & set(getattr(item, "fixturenames", ())):
            item.add_marker(FIXTURE_TIERS[fixture])
        if any(item.get_closest_marker(tier) for tier in INTEGRATION_TIERS):
            item.add_marker("integration")
    expression = config.option.markexpr or ""
    named = _named_explicitly(config)
    keep, drop = [], []
    for item in items:
        opted_out = any(item.get_closest_marker(m) and m not in expression for m in OPT_IN)
        tiered = not expression and item.get_closest_marker("integration") and \
            not any(p == Path(str(item.path)).resolve() or p in Path(str(item.path)).resolve().parents for p in named)
        (drop if opted_out or tiered else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


# Property-based tests (tests/properties, tests/native): 50 examples by default, 400 with HYPOTHESIS_PROFILE=ci.
# Under CI (CI=true, as .ci/run runs) the examples are derived from each test's source, not drawn at random: a
# landing is judged on the same examples every time, so it cannot fail on a draw its change has nothing to do
# with. Elsewhere they are random, and a run that finds a failure prints it to be added as an @example.
DERANDOMIZE = os.environ.get("CI", "").lower() == "true"
settings.register_profile("dev", max_examples=50, deadline=None, derandomize=DERANDOMIZE)
settings.register_profile("ci", max_examples=400, deadline=None, print_blob=True, derandomize=DERANDOMIZE)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))


@pytest.fixture(scope="session")
def tiny_reference():
    """The untrained tiny preset, seeded so that every session builds and compares the same weights."""
    torch.manual_seed(0)
    return minivlm.load("minivlm-tiny", random_init=True)


def _build(tmp_path_factory, reference, target: str, **options):
    from minivlm.converters.build import build
    from minivlm.converters.targets import resolve_options

    out = tmp_path_factory.mktemp("builds") / f"minivlm-tiny-{target}"
    return build(reference.pipeline, model_name="minivlm-tiny", source=reference.source,
                 options=resolve_options(target, **options), out=out, jobs=2)  # also exercises the worker processes


@pytest.fixture(scope="session")
def tiny_executorch_build(tmp_path_factory, tiny_reference):
    return _build(tmp_path_factory, tiny_reference, "executorch")


@pytest.fixture(scope="session")
def tiny_tflite_build(tmp_path_factory, tiny_reference):
    return _build(tmp_path_factory, tiny_reference, "tflite")


@pytest.fixture(scope="session")
def tiny_coreai_build(tmp_path_factory, tiny_reference):
    """The tiny model's Core AI fp32 build (one `model.aimodel`)."""
    return _build(tmp_path_factory, tiny_reference, "coreai")


@pytest.fixture(scope="session")
def tiny_coreml_build(tmp_path_factory, tiny_reference):
    """The tiny model's Core ML fp16 build (one multifunction `model.mlpackage`)."""
    return _build(tmp_path_factory, tiny_reference, "coreml", precision="fp16")


@pytest.fixture(scope="session")
def tiny_efficientvlm_file(tmp_path_factory):
    """The untrained efficientvlm-tiny, seeded as `tiny_reference` is, saved as `minivlm train` saves a model (its
    preset and vocabularies in the file's metadata)."""
    from minivlm.checkpoints import save_weights
    from minivlm.training import model_metadata

    torch.manual_seed(0)
    model = minivlm.load("efficientvlm-tiny", random_init=True)
    path = tmp_path_factory.mktemp("weights") / "efficientvlm-tiny.safetensors"
    save_weights(model.pipeline.model, path, model_metadata(model.config, model.vocab, None))
    return path


@pytest.fixture(scope="session")
def tiny_efficientvlm(tiny_efficientvlm_file):
    """That model loaded back from its file: its python_ref pipeline."""
    return minivlm.load(tiny_efficientvlm_file).pipeline


@pytest.fixture(scope="session")
def tiny_efficientvlm_build(tmp_path_factory, tiny_efficientvlm, tiny_efficientvlm_file):
    """`tiny_efficientvlm_build(target, precision=None)`: efficientvlm-tiny built for that target, once per session."""
    from minivlm.converters.build import build
    from minivlm.converters.targets import resolve_options

    made = {}

    def get(target: str, precision: str | None = None):
        if (target, precision) not in made:
            out = tmp_path_factory.mktemp("builds") / "-".join(filter(None, ("efficientvlm-tiny", target, precision)))
            made[target, precision] = build(tiny_efficientvlm, model_name="efficientvlm-tiny", source=str(tiny_efficientvlm_file),
                                            options=resolve_options(target, precision), out=out, jobs=2)
        return made[target, precision]

    return get


# The pruned tiny MiniVLM: layer 0 keeps 3 of 4 heads and no FFN neuron, layer 1 no head and 40 of 64 neurons,
# so its caption caches carry 3 heads and every special case of a pruned fusion reaches the builds.
PRUNED_TINY_KEEP = {"encoder.layers.0.attn": [1, 1, 0, 1], "encoder.layers.0": [0] * 64,
                    "encoder.layers.1.attn": [0, 0, 0, 0], "encoder.layers.1": [1] * 40 + [0] * 24}


@pytest.fixture(scope="session")
def tiny_pruned_file(tmp_path_factory):
    """minivlm-tiny (seeded as `tiny_reference`) with its fusion physically pruned (`PRUNED_TINY_KEEP`, kept values
    in (0.5, 1) folded into the weights), saved as `minivlm prune` saves one: the whole model, its preset,
    vocabularies and structure in the metadata."""
    from minivlm.checkpoints import save_weights
    from minivlm.pruning.physical import prune
    from minivlm.pruning.run import pruned_metadata
    from minivlm.python_ref.pipeline import MiniVLM
    from minivlm.training import model_metadata

    torch.manual_seed(0)
    reference = minivlm.load("minivlm-tiny", random_init=True)
    model = reference.pipeline.model
    g = torch.Generator().manual_seed(0)
    masks = {name: torch.tensor(keep, dtype=torch.float32) * (0.5 + 0.5 * torch.rand(len(keep), generator=g))
             for name, keep in PRUNED_TINY_KEEP.items()}
    fusion = prune(model.fusion, masks)
    whole = MiniVLM(dataclasses.replace(model.cfg, fusion=fusion.cfg)).eval()
    whole.tee.load_state_dict(model.tee.state_dict())
    whole.fusion.load_state_dict(fusion.state_dict())
    path = tmp_path_factory.mktemp("weights") / "minivlm-tiny-pruned.safetensors"
    meta = {**model_metadata(model.cfg, reference.vocab, None), **pruned_metadata(whole, {})}
    del meta["pruning"]  # no run, no report
    save_weights(whole, path, meta)
    return path


@pytest.fixture(scope="session")
def tiny_pruned_executorch_build(tmp_path_factory, tiny_pruned_file):
    """That pruned model loaded back from its file and built for ExecuTorch XNNPACK fp32 (one worker)."""
    from minivlm.converters.build import build
    from minivlm.converters.targets import resolve_options

    out = tmp_path_factory.mktemp("builds") / "minivlm-tiny-pruned-executorch"
    return build(minivlm.load(tiny_pruned_file).pipeline, model_name="minivlm-tiny-pruned", source=str(tiny_pruned_file),
                 options=resolve_options("executorch"), out=out, jobs=1)


_EDITED = 1024


@pytest.fixture(scope="session")
def tamper_word_embeddings():
    """`tamper_word_embeddings(folder, reference, graph_file)`: edit 1024 word-embedding values in the middle of
    that graph file's fp32 table and re-hash the manifest (every checksum then holds); returns 1024."""
    return _tamper


def _tamper(folder, reference, graph_file: str) -> int:
    """Add 0.25 to _EDITED consecutive values in the middle of the fp32 word-embedding table stored in
    `graph_file`, then re-hash the manifest as a forger would. Returns the number of values edited."""
    from minivlm.converters.manifest import MANIFEST, MANIFEST_DIGEST, file_hashes, manifest_digest

    table = reference.pipeline.model.fusion.encoder.embeddings.word_embeddings.weight.detach().numpy()
    path = folder / graph_file
    raw = bytearray(path.read_bytes())
    start = bytes(raw).find(table.astype(np.float32).tobytes()[:4096])
    assert start >= 0, f"{graph_file} does not store the word embeddings as one fp32 table"
    middle = start + (table.size // 2) * 4
    values = np.frombuffer(bytes(raw[middle:middle + 4 * _EDITED]), np.float32) + np.float32(0.25)
    raw[middle:middle + 4 * _EDITED] = values.tobytes()
    path.write_bytes(bytes(raw))
    manifest = json.loads((folder / MANIFEST).read_text())
    manifest["files"] = file_hashes(folder)
    manifest[MANIFEST_DIGEST] = manifest_digest(manifest)
    (folder / MANIFEST).write_text(json.dumps(manifest))
    return _EDITED
