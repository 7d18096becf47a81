"""The iOS app fixes, checked on the parse tree of the Swift (no Swift toolchain here): photos downscaled at decode,
no crash sites, both model families, demo scenes, the runtime choices and applied plan in the UI, and the build
replay XCTest reading what the converter writes. Each structural check is shown to fail on a mutated copy."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from _swift_tree import (APP_SOURCES, ET_SOURCES, IOS, REPLAY_TEST, SOURCES, _arguments, _call_name, _calls, _function,
                         _function_in, _nodes, make_parser, switch_cases)


@pytest.fixture(scope="module")
def swift_parser():
    return make_parser()


def decode_errors(parser, backends: bytes, app: bytes) -> list[str]:
    errors = []
    fn = _function_in(parser, backends, "downscaled")
    thumbnails = list(_calls(fn, "CGImageSourceCreateThumbnailAtIndex"))
    if len(thumbnails) != 1:
        errors.append("PhotoDecoding.downscaled does not decode through CGImageSourceCreateThumbnailAtIndex")
    options = next((n for n in _nodes(fn) if n.type == "property_declaration" and n.text.startswith(b"let options")), None)
    text = options.text.decode() if options is not None else ""
    if not re.search(r"kCGImageSourceThumbnailMaxPixelSize: .*maxSide", text):
        errors.append("the thumbnail's max pixel size is not the build's decode size")
    if "kCGImageSourceCreateThumbnailWithTransform: true" not in text or "kCGImageSourceCreateThumbnailFromImageAlways: true" not in text:
        errors.append("the thumbnail is not upright or may be the file's embedded preview")
    sizes = [_arguments(c) for c in _calls(fn, "decodeMaxSide")]
    if not sizes or b"BuildChecks.decodeMaxSide(" not in fn.text:
        errors.append("the decode size is not BuildChecks.decodeMaxSide")
    # The app decodes every photo (library, camera, scene) this way, never at full size.
    root = parser.parse(app).root_node
    if b"UIImage(data:" in app or b"uprightCGImage" in app:
        errors.append("the app decodes a photo at full size")
    if b"PhotoDecoding.downscaled(data, for: opened.folder)" not in _function(root, "analyze").text:
        errors.append("the app's analyze(data:) does not decode through PhotoDecoding")
    camera = [n for n in _nodes(root) if n.type == "function_declaration" and b"cameraImage: UIImage" in n.text]
    if not camera or b"analyze(data: data)" not in camera[0].text:
        errors.append("camera photos are not decoded through PhotoDecoding")
    return errors


def test_photos_are_downscaled_at_decode(swift_parser):
    backends, app = (SOURCES / "Backends.swift").read_bytes(), (APP_SOURCES / "DemoModel.swift").read_bytes()
    assert not decode_errors(swift_parser, backends, app)
    for old, new, which in [(b"kCGImageSourceThumbnailMaxPixelSize: max(1, min(maxSide,", b"kCGImageSourceThumbnailMaxPixelSize: max(1, min(4096,", "b"),
                            (b"kCGImageSourceCreateThumbnailWithTransform: true", b"kCGImageSourceCreateThumbnailWithTransform: false", "b"),
                            (b"let cgImage = try PhotoDecoding.downscaled(data, for: opened.folder)",
                             b"let cgImage = try XCTUnwrap(UIImage(data: data)?.cgImage)", "a")]:
        b2, a2 = (backends.replace(old, new), app) if which == "b" else (backends, app.replace(old, new))
        assert (b2, a2) != (backends, app), old
        assert decode_errors(swift_parser, b2, a2), f"{old!r} -> {new!r} went unnoticed"


def crash_sites(parser, source: bytes) -> list[str]:
    """try!, as!, fatalError and precondition: ways app code crashes instead of showing a one-line error."""
    found = []
    for n in _nodes(parser.parse(source).root_node):
        if n.type in ("try_operator", "as_operator") and n.text.endswith(b"!"):
            found.append(f"{n.start_point[0] + 1}: {n.text.decode()}")
        if n.type == "call_expression" and _call_name(n) in ("fatalError", "precondition", "preconditionFailure"):
            found.append(f"{n.start_point[0] + 1}: {_call_name(n)}")
    return found


def test_no_crash_sites_in_app_and_library_code(swift_parser):
    files = [*APP_SOURCES.glob("*.swift"), *SOURCES.glob("*.swift"), *ET_SOURCES.glob("*.swift")]
    found = {str(p.relative_to(IOS)): crash_sites(swift_parser, p.read_bytes()) for p in files}
    assert not any(found.values()), found
    assert crash_sites(swift_parser, b"let x = try! f()\nlet y = z as! Int\nfatalError(\"no\")\n") == ["1: try!", "2: as!", "3: fatalError"]


def test_both_model_families_open_and_show_what_they_have(swift_parser):
    open_fn = _function_in(swift_parser, (SOURCES / "Backends.swift").read_bytes(), "open").text.decode()
    assert "let family = try buildFamily(folder: folder)" in open_fn
    assert re.search(r'case "minivlm":\s+let pipeline = try Pipeline\(folder: folder, backend: runners\)', open_fn)
    assert re.search(r'case "efficientvlm":\s+let pipeline = try EfficientVLMPipeline\(folder: folder, backend: runners\)\s+'
                     r'try pipeline\.loadGraphs\(\)\s+model = \.efficientVLM\(pipeline\)', open_fn)
    app = (APP_SOURCES / "DemoModel.swift").read_bytes()
    for function in ("analyze", "ask", "match"):
        body = _function_in(swift_parser, app, function).text
        assert b".efficientVLM(let pipeline)" in body and b".miniVLM(let pipeline)" in body, function
    # EfficientVLM has no detector: no boxes, the caption / answers / match score still shown.
    assert b"return (cgImage, .efficientVLM(encoding), [], caption, timings)" in app


def test_demo_scenes_are_bundled_and_offered():
    import yaml

    spec = yaml.safe_load((IOS / "App" / "project.yml").read_text())
    target = spec["targets"]["MiniVLMDemo"]
    scenes = [s for s in target["sources"] if isinstance(s, dict) and s.get("path") == "Resources/Scenes"]
    assert scenes and scenes[0].get("type") == "folder" and scenes[0].get("buildPhase") == "resources"
    assert {"package": "MiniVLM", "product": "MiniVLM"} in target["dependencies"]
    app = (APP_SOURCES / "DemoModel.swift").read_text()
    assert 'appendingPathComponent("Scenes")' in app and 'appendingPathComponent("scenes.json")' in app
    assert 'Menu("Demo scene")' in (APP_SOURCES / "ContentView.swift").read_text()
    folder = IOS / "App" / "Resources" / "Scenes"
    if (folder / "scenes.json").is_file():  # written by scripts/make_demo_scenes.py
        index = json.loads((folder / "scenes.json").read_text())
        entries = index if isinstance(index, list) else index["scenes"]
        assert entries and all((folder / (e.get("file") or e["image"])).is_file() for e in entries)


def test_runtime_choices_and_plan_are_offered_and_shown():
    view = (APP_SOURCES / "ContentView.swift").read_text()
    assert "selection: $model.options.computeUnits" in view and "$model.options.threads" in view
    assert "model.planInfo" in view and "model.loadInfo" in view
    model = (APP_SOURCES / "DemoModel.swift").read_text()
    assert "Backends.open(folder: build.url, options: options)" in model and "opened.warmUp()" in model
    assert 'String(format: "load %.0f ms · first run %.0f ms", opened.loadMs, warmUpMs)' in model
    assert "self.planInfo = opened.planDescription" in model
    # The five choices of the agreed ComputeUnitsChoice, as BuildChecks.swift declares them when it is present.
    offered = set(re.findall(r"\.(\w+)", re.search(r"computeUnitChoices: \[ComputeUnitsChoice\] = \[(.*)\]", model).group(1)))
    assert offered == {"auto", "all", "cpuOnly", "cpuAndGPU", "cpuAndNeuralEngine"}
    checks = SOURCES / "BuildChecks.swift"
    if checks.is_file():
        declared = re.search(r"enum ComputeUnitsChoice[^{]*\{(.*?)\n\s*(?:public|\})", checks.read_text(), flags=re.S).group(1)
        assert offered <= set(re.findall(r"\b(\w+)\b(?:\s*=\s*\"\w+\")?", declared)) - {"case"}


def test_build_replay_xctest_reads_what_the_converter_writes(swift_parser, tmp_path: Path):
    """The XCTest decodes the manifest's tolerance row and golden/index.json entries by these keys: the converter
    must write them."""
    import torch

    from minivlm.converters.goldens import GoldenWriter
    from minivlm.converters.tolerances import TOLERANCES, tolerances_for

    source = REPLAY_TEST.read_text()
    for key in ("graph_max_abs", "graph_min_psnr_db", "graph_min_cosine"):
        assert f"let {key}:" in source
        assert all(key in tolerances_for(t, p) for t, p in TOLERANCES)
    row = tolerances_for("coreml", "fp16")
    assert {"limit", "value", "bound"} <= set(row["graph_min_cosine"])
    entry = GoldenWriter(tmp_path).entry("x/a.bin", torch.zeros(2, 3))
    assert set(entry) == {"file", "dtype", "shape"} and entry["dtype"] == "float32"
    for dtype in ("float32", "int64", "int32"):
        assert f'case "{dtype}":' in source
    # One replay per runtime choice the build allows: every compute-unit choice, ExecuTorch at 1 and all cores.
    choices = switch_cases(swift_parser, REPLAY_TEST, "runtimeChoices")
    assert "RuntimeOptions(threads: $0)" in choices["executorch"] and "[1, cores]" in choices["executorch"]
    assert ".auto, .all, .cpuOnly, .cpuAndGPU, .cpuAndNeuralEngine" in choices[None]
    replay = _function_in(swift_parser, REPLAY_TEST.read_bytes(), "testGoldenGraphCallsUnderEveryRuntimeChoice").text
    assert b"BuildChecks.plan(folder: folder, request: request)" in replay and b"Backends.backend(for: plan.backend" in replay
