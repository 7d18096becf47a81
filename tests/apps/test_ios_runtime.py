"""The iOS runtime fixes, checked on the parse tree of the Swift (no Swift toolchain here): Core ML compiles into
the app's Caches at BuildChecks' path, atomically; compute units come from the runtime plan; ExecuTorch is an
optional product whose thread-pool shim is linked and run against the executorch wheel's own library; the manifest
is verified before anything loads. Each structural check is shown to fail on a mutated copy of the source."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from _appbuild import run
from _swift_tree import (APP_SOURCES, CET, ET_SOURCES, IOS, SOURCES, _arguments, _calls, _function, _function_in,
                         _identifiers, _nodes, make_parser, switch_cases)


@pytest.fixture(scope="module")
def swift_parser():
    return make_parser()


def core_ml_cache_errors(parser, source: bytes) -> list[str]:
    """Where CoreMLRunner.swift would not compile into the app's Caches, atomically, at BuildChecks' path."""
    errors = []
    root = parser.parse(source).root_node
    if "Bundle" in _identifiers(root):
        errors.append("CoreMLRunner.swift refers to Bundle: the compiled model must not live in the app bundle")
    if not list(_calls(root, "compiledCachePath")) or b"BuildChecks.compiledCachePath(" not in source:
        errors.append("the compiled model's path is not BuildChecks.compiledCachePath")
    if b'appendingPathExtension("mlmodelc")' in source:
        errors.append("the compiled model is placed next to the package")
    compile_fn = _function(root, "compile")
    moves = [_arguments(c) for c in _calls(compile_fn, "moveItem")]
    compiled_by_core_ml = [c for c in _calls(compile_fn, "compileModel")]
    if len(compiled_by_core_ml) != 1:
        errors.append("compile() does not call MLModel.compileModel once")
    # Core ML's temporary output -> a staging name beside the cache entry -> the entry (a rename in one folder).
    if [(m.get("at"), m.get("to")) for m in moves] != [("temporary", "staging"), ("staging", "compiled")]:
        errors.append(f"compile() moves {[(m.get('at'), m.get('to')) for m in moves]}, expected temporary -> staging -> compiled")
    staging = [n for n in _nodes(compile_fn) if n.type == "property_declaration" and n.text.startswith(b"let staging")]
    if not staging or b"compiled.deletingLastPathComponent()" not in compile_fn.text or b"parent.appendingPathComponent" not in staging[0].text:
        errors.append("the staging folder is not in the cache entry's own folder")
    load_fn = _function(root, "load")
    if b"fileExists(atPath: compiled.path)" not in load_fn.text or not list(_calls(load_fn, "compile")):
        errors.append("load() does not reuse a cached model and compile only when it is missing or does not load")
    return errors


def test_core_ml_compiles_into_the_caches_at_the_build_checks_path(swift_parser):
    source = (SOURCES / "CoreMLRunner.swift").read_bytes()
    assert not core_ml_cache_errors(swift_parser, source)
    for old, new in [(b"try files.moveItem(at: temporary, to: staging)", b"try files.moveItem(at: temporary, to: compiled)"),
                     (b"BuildChecks.compiledCachePath(folder: folder, caches: caches, graph: graph)",
                      b'folder.appendingPathComponent(package).deletingPathExtension().appendingPathExtension("mlmodelc")'),
                     (b"public init(folder: URL, caches: URL)", b"public init(folder: URL, caches: URL = Bundle.main.bundleURL)"),
                     (b"if FileManager.default.fileExists(atPath: compiled.path),", b"if false,")]:
        assert old in source, old
        assert core_ml_cache_errors(swift_parser, source.replace(old, new)), f"{old!r} -> {new!r} went unnoticed"


def compute_unit_errors(parser, runner: bytes, backends: bytes) -> list[str]:
    """Where the Core ML compute units would not come from the runtime plan."""
    errors = []
    init = next(n for n in _nodes(parser.parse(runner).root_node)
                if n.type == "init_declaration" and b"computeUnits: MLComputeUnits" in n.text)
    params = init.text.split(b")", 1)[0]
    if b"computeUnits: MLComputeUnits =" in params:
        errors.append("CoreMLRunner.init has a default compute unit: every caller must pass the plan's")
    assigned = [n.text.decode() for n in _nodes(init) if n.type == "assignment" and n.text.startswith(b"configuration.computeUnits")]
    if assigned != ["configuration.computeUnits = computeUnits"]:
        errors.append(f"MLModelConfiguration.computeUnits is set by {assigned}, not from the init's computeUnits")
    root = parser.parse(backends).root_node
    coreml = switch_cases(parser, SOURCES / "Backends.swift", "backend")["coreml"] if backends == (SOURCES / "Backends.swift").read_bytes() \
        else next(n.text.decode() for n in _nodes(_function(root, "backend")) if n.type == "switch_entry" and n.text.startswith(b'case "coreml"'))
    if "CoreMLRunner.computeUnits(plan.computeUnits)" not in coreml or "computeUnits: units" not in coreml:
        errors.append("Backends' coreml case does not turn plan.computeUnits into the runner's compute units")
    open_fn = _function(root, "open")
    plans = [_arguments(c) for c in _calls(open_fn, "plan")]
    if not plans or plans[0].get("request") != "request" or b"computeUnits: options.computeUnits" not in open_fn.text:
        errors.append("Backends.open does not plan the runtime from the user's options (BuildChecks.plan)")
    backends_called = [_arguments(c) for c in _calls(open_fn, "backend")]
    if not backends_called or backends_called[0].get("plan") != "plan" or backends_called[0].get("for") != "plan.backend":
        errors.append("Backends.open does not choose the runner from the plan")
    return errors


def test_compute_units_are_the_runtime_plans(swift_parser):
    runner, backends = (SOURCES / "CoreMLRunner.swift").read_bytes(), (SOURCES / "Backends.swift").read_bytes()
    assert not compute_unit_errors(swift_parser, runner, backends)
    for file, old, new in [("runner", b"configuration.computeUnits = computeUnits", b"configuration.computeUnits = .all"),
                           ("runner", b"computeUnits: MLComputeUnits, cache:", b"computeUnits: MLComputeUnits = .all, cache:"),
                           ("backends", b"CoreMLRunner.computeUnits(plan.computeUnits)", b'CoreMLRunner.computeUnits("all")'),
                           ("backends", b"Self.backend(for: plan.backend,", b"Self.backend(for: head.target,")]:
        r, b = (runner.replace(old, new), backends) if file == "runner" else (runner, backends.replace(old, new))
        assert old in (runner if file == "runner" else backends), old
        assert compute_unit_errors(swift_parser, r, b), f"{old!r} -> {new!r} went unnoticed"
    # Core AI takes the plan's compute units too, in its own names or the plan's Core ML ones.
    core_ai = switch_cases(swift_parser, SOURCES / "CoreAIRunner.swift", "unitName")
    assert {"auto", "all", "cpu_and_ne", "cpu_and_gpu"} <= set(core_ai)
    assert "CoreAIModels(computeUnits: plan.computeUnits)" in switch_cases(swift_parser, SOURCES / "Backends.swift", "backend")["coreai"]


def package_targets(parser, source: bytes) -> dict[str, dict[str, str]]:
    """{target name: {argument label: source}} of Package.swift's .target / .testTarget calls."""
    targets = {}
    for kind in ("target", "testTarget"):
        for call in _calls(parser.parse(source).root_node, kind):
            args = _arguments(call)
            if "name" in args:
                targets[args["name"].strip('"')] = args
    return targets


def executorch_optional_errors(parser, package: bytes, library_sources: dict[str, bytes]) -> list[str]:
    errors = []
    targets = package_targets(parser, package)
    products = {_arguments(c).get("name", "").strip('"'): _arguments(c).get("targets", "")
                for c in _calls(parser.parse(package).root_node, "library")}
    if set(products) != {"MiniVLM", "MiniVLMExecuTorch"}:
        errors.append(f"library products {sorted(products)}, expected MiniVLM and MiniVLMExecuTorch")
    core_deps = targets.get("MiniVLM", {}).get("dependencies", "")
    if "executorch" in core_deps.lower():
        errors.append("the MiniVLM target depends on ExecuTorch: every app would link it")
    et = targets.get("MiniVLMExecuTorch", {})
    if 'package: "executorch"' not in et.get("dependencies", "") or '"MiniVLM"' not in et.get("dependencies", ""):
        errors.append("the MiniVLMExecuTorch target does not bring MiniVLM and ExecuTorch together")
    if et.get("path") != '"Sources/MiniVLMExecuTorch"':
        errors.append("MiniVLMExecuTorch's sources are not in their own folder")
    for name, text in library_sources.items():
        if re.search(rb"^\s*import ExecuTorch\b|canImport\(ExecuTorch\)", text, flags=re.M):
            errors.append(f"{name} (MiniVLM target) imports ExecuTorch")
    return errors


def test_executorch_is_an_optional_product(swift_parser):
    package = (IOS / "Package.swift").read_bytes()
    library = {p.name: p.read_bytes() for p in SOURCES.glob("*.swift")}
    assert not executorch_optional_errors(swift_parser, package, library)
    mutated = package.replace(b'dependencies: ["CMiniVLM"],',
                              b'dependencies: ["CMiniVLM", .product(name: "executorch", package: "executorch")],')
    assert mutated != package and executorch_optional_errors(swift_parser, mutated, library)
    assert executorch_optional_errors(swift_parser, package, {**library, "X.swift": b"#if canImport(ExecuTorch)\n#endif\n"})
    # The runner sits behind a gate that is true exactly when the target links ExecuTorch, and registers itself.
    runner = (ET_SOURCES / "ExecuTorchRunner.swift").read_text()
    code = re.sub(r"^\s*//.*\n", "", runner, flags=re.M).strip()
    assert code.startswith("#if canImport(ExecuTorch)\n") and code.endswith("#endif")
    register = _function_in(swift_parser, runner.encode(), "register")
    assert b"Backends.register(executorch:" in register.text and b"try ExecuTorchRunner(" in register.text
    assert b"cmvlm_executorch_set_threads" in register.text
    # Both branches of the app compile: with the product it registers ExecuTorch, without it the import is skipped.
    app = (APP_SOURCES / "DemoModel.swift").read_text()
    assert re.search(r"#if canImport\(MiniVLMExecuTorch\)\nimport MiniVLMExecuTorch\n#endif", app)
    assert re.search(r"#if canImport\(MiniVLMExecuTorch\)\n\s*ExecuTorchBackend\.register\(\)\n\s*#endif", app)
    # Without registration an executorch build gets a one-line refusal, not a crash.
    case = switch_cases(swift_parser, SOURCES / "Backends.swift", "backend")["executorch"]
    assert "guard let hooks = registry.get() else" in case and "throw MiniVLMError(.config" in case


def _executorch_lib() -> Path | None:
    try:
        import executorch
    except ImportError:
        return None
    for root in executorch.__path__:
        lib = Path(root) / "lib"
        if (lib / "libexecutorch_threadpool.so").is_file() and (lib / "libexecutorch.so").is_file():
            return lib
    return None


THREADS_PROGRAM = r"""
#include <stdio.h>
#include "CMiniVLMExecuTorch.h"
int main(void) {
  printf("%u", cmvlm_executorch_set_threads(1));
  printf(" %u", cmvlm_executorch_threads());
  printf(" %u", cmvlm_executorch_set_threads(2));
  printf(" %u\n", cmvlm_executorch_set_threads(0));
  return 0;
}
"""


def test_executorch_threads_shim_resizes_the_real_thread_pool(cxx: str, tmp_path: Path):
    """threads.cpp declares ExecuTorch's ThreadPool itself (the prebuilt frameworks export no header for it): linked
    against the executorch wheel's own thread pool library, its calls must bind and resize the pool."""
    lib = _executorch_lib()
    if lib is None:
        pytest.skip("the executorch wheel's libexecutorch_threadpool.so is not installed")
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        pytest.skip("no C compiler")
    include = ["-I", str(CET / "include")]
    run([cxx, "-std=c++17", "-Wall", "-Wextra", "-Werror", *include, "-c", str(CET / "threads.cpp"), "-o", str(tmp_path / "threads.o")])
    (tmp_path / "main.c").write_text(THREADS_PROGRAM)
    run([cc, "-std=c11", "-Wall", "-Werror", *include, "-c", str(tmp_path / "main.c"), "-o", str(tmp_path / "main.o")])
    run([cxx, str(tmp_path / "main.o"), str(tmp_path / "threads.o"), f"-L{lib}", "-lexecutorch_threadpool", "-lexecutorch",
         f"-Wl,-rpath,{lib}", "-o", str(tmp_path / "threads")])
    out = subprocess.run([str(tmp_path / "threads")], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    # resize to 1, read back 1, resize to 2, 0 keeps the 2 threads
    assert out.stdout.split() == ["1", "1", "2", "2"], out.stdout


def test_executorch_threads_are_applied_before_the_graphs_load(swift_parser):
    open_fn = _function_in(swift_parser, (SOURCES / "Backends.swift").read_bytes(), "open").text
    applied = open_fn.index(b"hooks?.setThreads(plan.threads)")
    assert applied < open_fn.index(b"try Pipeline(") and applied < open_fn.index(b"try EfficientVLMPipeline(")
    assert b"threadsInEffect: threads" in open_fn  # shown: OpenedBuild.planDescription


def test_the_manifest_is_verified_before_anything_loads(swift_parser):
    open_fn = _function_in(swift_parser, (SOURCES / "Backends.swift").read_bytes(), "open")
    verify = [_arguments(c) for c in _calls(open_fn, "verify")]
    assert verify == [{"folder": "folder", "runtime": 'head.target == "tflite" ? "litert" : head.target',
                       "runtimeVersion": 'head.target == "executorch" ? hooks?.runtimeVersion : nil'}], verify
    text = open_fn.text
    first_load = min(text.index(s) for s in (b"BuildChecks.plan(", b"Self.backend(", b"try Pipeline(", b"try EfficientVLMPipeline("))
    assert text.index(b"BuildChecks.verify(") < first_load
    # The app shows a failed load in one line.
    load = _function_in(swift_parser, (APP_SOURCES / "DemoModel.swift").read_bytes(), "load").text
    assert b'self.status = "Cannot load \\(build.name): \\(oneLine(error))"' in load
