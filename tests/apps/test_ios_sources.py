"""What can be checked of ios_demo/ without macOS: every Swift file parses, the runtime dispatch covers every
build target, the Core AI runner addresses tensors by the manifest's names, the package's symlinks reach the
native core, and the C/C++ shim compiles and works against the core.

Swift is parsed with tree-sitter-swift (syntax only: no type checking or import resolution, which need a
Swift toolchain); the dispatch and naming checks read the parse tree. The shim is compiled for real with -Werror, its umbrella header as C (Swift imports it as
a C module), and a small C program linked with the shim and the core calls the shim's helpers.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from _appbuild import NATIVE, REPO, run
from minivlm.converters.targets import TARGETS

IOS = REPO / "ios_demo"
CMINIVLM = IOS / "Sources" / "CMiniVLM"
SWIFT_FILES = sorted(p for p in IOS.rglob("*.swift") if ".build" not in p.parts)
SOURCES = IOS / "Sources" / "MiniVLM"

# How Backends.swift opens the runner of each target iOS runs (ExecuTorch's through the hooks the optional
# MiniVLMExecuTorch product registers); every other target in converters/targets.py is refused there.
IOS_RUNNERS = {"coreml": "try CoreMLRunner(", "executorch": "try hooks.makeRunner(", "coreai": "try CoreAIRunner("}

# The files the package and the app cannot do without: a missing one is a failure, not a smaller test.
EXPECTED = [
    "Package.swift",
    "Sources/MiniVLM/Pipeline.swift",
    "Sources/MiniVLM/EfficientVLMPipeline.swift",
    "Sources/MiniVLM/Core.swift",
    "Sources/MiniVLM/CoreMLRunner.swift",
    "Sources/MiniVLM/CoreAIRunner.swift",
    "Sources/MiniVLMExecuTorch/ExecuTorchRunner.swift",
    "Sources/CMiniVLMExecuTorch/threads.cpp",
    "Sources/CMiniVLMExecuTorch/include/CMiniVLMExecuTorch.h",
    "Sources/MiniVLM/BuildChecks.swift",
    "Tests/MiniVLMTests/BuildReplayTests.swift",
    "Tests/MiniVLMTests/GoldenReplayTests.swift",
    "App/Sources/MiniVLMDemoApp.swift",
    "App/Sources/ContentView.swift",
]


@pytest.fixture(scope="module")
def swift_parser():
    ts = pytest.importorskip("tree_sitter", reason="tree-sitter is in the dev extra: pip install -e '.[dev]'")
    tss = pytest.importorskip("tree_sitter_swift", reason="tree-sitter-swift is in the dev extra")
    return ts.Parser(ts.Language(tss.language()))


def syntax_errors(parser, source: bytes) -> list[str]:
    """'line:col ERROR|MISSING text' for every error node of the parse tree (outermost ones only)."""
    found: list[str] = []

    def walk(node) -> None:
        flagged = [c for c in node.children if c.has_error or c.is_error or c.is_missing]
        if node.is_error or node.is_missing or (node.has_error and not flagged):
            # The last case: a MISSING token the bindings do not list as a child (e.g. an identifier's).
            kind = "MISSING" if node.is_missing or not node.is_error else "ERROR"
            row, col = node.start_point
            found.append(f"{row + 1}:{col + 1} {kind} in {node.type} {node.text[:60].decode(errors='replace')!r}")
        else:
            for child in flagged:
                walk(child)

    walk(parser.parse(source).root_node)
    return found


def test_the_package_and_app_files_exist():
    missing = [f for f in EXPECTED if not (IOS / f).is_file()]
    assert not missing, f"missing from ios_demo/: {missing}"


@pytest.mark.parametrize("path", SWIFT_FILES, ids=lambda p: str(p.relative_to(IOS)))
def test_swift_file_parses(swift_parser, path: Path):
    errors = syntax_errors(swift_parser, path.read_bytes())
    assert not errors, f"{path.relative_to(REPO)}: {len(errors)} syntax errors:\n" + "\n".join(errors[:10])


def test_the_parse_check_catches_broken_swift(swift_parser):
    """The check above would fail on real mistakes: an unclosed brace, a missing expression, a stray token."""
    assert not syntax_errors(swift_parser, b"struct A { let x: Int = 1\n  func f() -> Int { x + 1 } }\n")
    assert syntax_errors(swift_parser, b"struct A { func f() -> Int { return 1 }\n")
    assert syntax_errors(swift_parser, b"let x = (1 + )\n")
    assert syntax_errors(swift_parser, b"func f() { let = 3 }\n")


def _nodes(node):
    yield node
    for child in node.children:
        yield from _nodes(child)


def _function(root, name: str):
    """The Swift function declaration `name` (the first, there is one of each here)."""
    for node in _nodes(root):
        if node.type == "function_declaration" and node.child_by_field_name("name").text.decode() == name:
            return node
    raise AssertionError(f"no function {name}")


def switch_cases(parser, path: Path, function: str) -> dict[str | None, str]:
    """{case string literal (None: default): the case's source} of the switch statements in `function`."""
    cases: dict[str | None, str] = {}
    for node in _nodes(_function(parser.parse(path.read_bytes()).root_node, function)):
        if node.type == "switch_entry":
            literals = [text.decode() for pattern in node.named_children if pattern.type == "switch_pattern"
                        for text in [pattern.text] if text.startswith(b'"')]
            for key in [literal.strip('"') for literal in literals] or [None]:
                cases[key] = node.text.decode()
    return cases


def test_every_build_target_is_dispatched(swift_parser):
    """Backends.swift has a case for every target of converters/targets.py: the iOS runtimes open their runner,
    any other target is refused in one line."""
    cases = switch_cases(swift_parser, SOURCES / "Backends.swift", "backend")
    assert set(IOS_RUNNERS) <= set(TARGETS)
    assert set(cases) == set(TARGETS) | {None}, f"Backends.backend cases: {sorted(map(str, cases))}"
    for target, body in cases.items():
        runner = IOS_RUNNERS.get(target)
        if runner:
            assert runner in body, f"case {target!r} does not open its runner ({runner})"
        else:
            assert "throw MiniVLMError(.config" in body and "Runner(" not in body, f"{target!r} must be refused"
    assert "#if canImport(CoreAI)" in cases["coreai"] and "#available(iOS 27.0, macOS 27.0, *)" in cases["coreai"]


def test_runners_know_every_compute_unit_choice(swift_parser):
    """The manifest's compute_units as each runtime takes them, for every choice the converters record."""
    core_ml = switch_cases(swift_parser, SOURCES / "CoreMLRunner.swift", "computeUnits")
    assert set(core_ml) - {None} == set(TARGETS["coreml"].compute_units)
    core_ai = switch_cases(swift_parser, SOURCES / "CoreAIRunner.swift", "specializationOptions")
    assert set(core_ai) - {None} == set(TARGETS["coreai"].compute_units)


def _call_name(call) -> str:
    callee = call.named_children[0]
    if callee.type == "navigation_expression":
        callee = callee.named_children[-1].named_children[-1]  # the navigation_suffix's identifier
    return callee.text.decode()


def core_ai_naming_errors(parser, source: bytes) -> list[str]:
    """Where CoreAIRunner.swift would not address a Core AI tensor by the manifest's runtime_name: the function
    descriptor's lookups and the outputs' removal take a `runtimeName`, input arrays are stored under one, and host
    outputs under the manifest's `s.name`. Each of these must occur, so renaming them away fails too."""
    errors, seen = [], set()
    root = parser.parse(source).root_node
    for node in _nodes(root):
        if node.type == "call_expression" and node.named_children[-1].type == "call_suffix":
            name = _call_name(node)
            if name in ("inputDescriptor", "outputDescriptor", "remove"):
                seen.add(name)
                if b"runtimeName" not in node.named_children[-1].text:
                    errors.append(f"{name}{node.named_children[-1].text.decode()} is not by runtime name")
        if node.type == "assignment":
            target, value = node.named_children[0].text.decode(), node.named_children[-1].text.decode()
            key = re.fullmatch(r"\w+\[(.*)\]", target)
            for store, wanted in (("ndArray(", r".*runtimeName"), ("hostTensor(", r"s\.name")):
                if key and store in value:
                    seen.add(store)
                    if not re.fullmatch(wanted, key.group(1)):
                        errors.append(f"{target} = {value}: the key should match {wanted}")
    missing = {"inputDescriptor", "outputDescriptor", "remove", "ndArray(", "hostTensor("} - seen
    return errors + [f"no {m} site found" for m in sorted(missing)]


def test_core_ai_runner_maps_tensors_by_manifest_names(swift_parser):
    source = (SOURCES / "CoreAIRunner.swift").read_bytes()
    assert not core_ai_naming_errors(swift_parser, source)
    # The check above fails on each way of getting a name wrong.
    for old, new in [(b"arrays[s.runtimeName]", b"arrays[s.name]"),
                     (b"outputs.remove(runtimeName)", b'outputs.remove("mask_logits")'),
                     (b"outputs[s.name] = try Self.hostTensor", b"outputs[s.runtimeName] = try Self.hostTensor"),
                     (b"d.inputDescriptor(of: s.runtimeName)", b"d.inputDescriptor(of: s.name)"),
                     (b"d.outputDescriptor(of: s.runtimeName)", b"d.outputs(of: s.runtimeName)")]:
        assert old in source, old
        assert core_ai_naming_errors(swift_parser, source.replace(old, new)), f"{old!r} -> {new!r} went unnoticed"


def test_core_ai_runner_builds_with_older_sdks():
    """Everything in CoreAIRunner.swift sits inside #if canImport(CoreAI), its public types marked iOS 27 / macOS 27:
    the package still builds with SDKs that have no Core AI, and runs on systems before it."""
    code = re.sub(r"^\s*//.*\n", "", (SOURCES / "CoreAIRunner.swift").read_text(), flags=re.M).strip()
    assert code.startswith("#if canImport(CoreAI)\n") and code.endswith("\n#endif")
    assert code.count("#if") == 1, "one gate, around the whole file"
    declarations = re.findall(r"(?:^@available\([^)]*\)\n)?^public final class \w+", code, flags=re.M)
    assert len(declarations) == 2 and all(d.startswith("@available(iOS 27.0, macOS 27.0, *)") for d in declarations)


def _header_functions(prefix: str) -> dict[str, int]:
    """{C function of the core's public header starting with `prefix`: its parameter count}."""
    header = (NATIVE / "include" / "minivlm" / "minivlm.h").read_text()
    header = re.sub(r"/\*.*?\*/", "", header, flags=re.S)
    return {name: len([p for p in params.split(",") if p.strip() not in ("", "void")])
            for name, params in re.findall(rf"^mvlm_status ({prefix}\w+)\(([^)]*)\);", header, flags=re.M | re.S)}


def _header_structs() -> set[str]:
    """The struct types of the core's public header (Swift constructs them with a call: `mvlm_evlm_config()`)."""
    return set(re.findall(r"^typedef struct (\w+)", (NATIVE / "include" / "minivlm" / "minivlm.h").read_text(), flags=re.M))


def core_call_errors(parser, source: bytes, functions: dict[str, int], required: set[str]) -> list[str]:
    """Calls of the core's C functions in `source` whose argument count differs from the header's, and the
    `required` functions it never calls (Swift is not type-checked here, so this is the check on the C calls)."""
    errors, called = [], set()
    for node in _nodes(parser.parse(source).root_node):
        if node.type == "call_expression" and node.named_children[-1].type == "call_suffix":
            name = _call_name(node)
            if name.startswith("mvlm_"):
                called.add(name)
                arguments = [a for a in _nodes(node.named_children[-1]) if a.type == "value_argument"
                             and a.parent.parent == node.named_children[-1]]
                if name in functions and len(arguments) != functions[name]:
                    errors.append(f"{name} gets {len(arguments)} arguments, the header declares {functions[name]}")
                elif name not in functions and name.startswith("mvlm_evlm_") and name not in _header_structs():
                    errors.append(f"{name} is not declared in minivlm.h")
    return errors + [f"{name} is never called" for name in sorted(required - called)]


def test_efficientvlm_pipeline_calls_the_core(swift_parser):
    """EfficientVLMPipeline.swift runs the EfficientVLM host steps through the core's mvlm_evlm_* functions, each
    with the header's number of arguments; the XCTest replay of tests/golden_efficientvlm exists."""
    functions = _header_functions("mvlm_evlm_")
    required = {"mvlm_evlm_config_load", "mvlm_evlm_preprocess", "mvlm_evlm_pack_text", "mvlm_evlm_caption_decode"}
    assert required <= set(functions), sorted(functions)
    source = (SOURCES / "EfficientVLMPipeline.swift").read_bytes()
    assert not core_call_errors(swift_parser, source, functions, required)
    # The check notices a wrong argument count and a missing call.
    broken = source.replace(b"ids.pointer, mask.pointer))", b"ids.pointer))")
    assert broken != source and core_call_errors(swift_parser, broken, functions, required)
    dropped = source.replace(b"mvlm_evlm_preprocess(", b"mvlm_preprocess_evlm(")
    assert core_call_errors(swift_parser, dropped, functions, required)
    tests = (IOS / "Tests" / "MiniVLMTests" / "GoldenReplayTests.swift").read_text()
    assert "final class EfficientVLMReplayTests: XCTestCase" in tests and "tests/golden_efficientvlm" in tests
    assert "EfficientVLMPipeline(folder: evlmDir" in tests


def test_symlinks_reach_the_core():
    core, header = CMINIVLM / "core", CMINIVLM / "include" / "minivlm"
    assert core.is_symlink() and header.is_symlink(), "CMiniVLM must link to sdk/native, not copy it"
    assert core.resolve() == (NATIVE / "src").resolve()
    assert header.resolve() == (NATIVE / "include" / "minivlm").resolve()
    assert (header / "minivlm.h").is_file()
    assert list(core.glob("*.cpp")), "no core sources behind Sources/CMiniVLM/core"


def test_shim_compiles_warning_free(cxx: str, tmp_path: Path):
    run([cxx, "-std=c++17", "-Wall", "-Wextra", "-Werror", "-I", str(CMINIVLM / "include"), "-c",
         str(CMINIVLM / "shim.cpp"), "-o", str(tmp_path / "shim.o")])
    assert (tmp_path / "shim.o").stat().st_size > 0


def test_umbrella_header_is_valid_c(tmp_path: Path):
    """Swift imports CMiniVLM.h through a C module map: it must compile as C, not only as C++."""
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        pytest.skip("no C compiler")
    (tmp_path / "use.c").write_text('#include "CMiniVLM.h"\nint main(void) {\n  void (*release)(void*) = cmvlm_free;\n'
                                    '  mvlm_config config = {0};\n  release(NULL);\n  return config.image_size;\n}\n')
    run([cc, "-std=c11", "-Wall", "-Wextra", "-Werror", "-pedantic", "-I", str(CMINIVLM / "include"), "-c",
         str(tmp_path / "use.c"), "-o", str(tmp_path / "use.o")])


SHIM_PROGRAM = r"""
#include <stdio.h>
#include <string.h>
#include "CMiniVLM.h"

/* ids are line numbers of this vocabulary: the expected values do not come from the code under test */
static const char vocab[] = "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nhello\nworld\n##s\n,\n";

int main(void) {
    mvlm_tokenizer* tok = NULL;
    if (mvlm_tokenizer_parse(vocab, sizeof vocab - 1, &tok) != MVLM_OK) { printf("parse: %s\n", mvlm_last_error()); return 1; }
    const char text[] = "Hello, worlds";
    size_t n = 0;
    mvlm_status st = 0;
    int64_t* ids = cmvlm_tokenize(tok, text, strlen(text), &n, &st);
    if (!ids) { printf("tokenize: %s\n", mvlm_last_error()); return 1; }
    printf("ids");
    for (size_t i = 0; i < n; i++) printf(" %lld", (long long)ids[i]);
    printf("\n");
    char* back = cmvlm_detokenize(tok, ids, n, &st);
    if (!back) { printf("detokenize: %s\n", mvlm_last_error()); return 1; }
    printf("text %s\n", back);
    cmvlm_free(back);
    cmvlm_free(ids);
    const char bad[] = {'a', (char)0xC3, (char)0x28, 0};  /* 0xC3 0x28: invalid UTF-8 */
    ids = cmvlm_tokenize(tok, bad, 3, &n, &st);
    printf("bad %s %d\n", mvlm_status_name(st), ids == NULL);
    mvlm_tokenizer_free(tok);
    return 0;
}
"""


def test_shim_helpers_run_against_the_core(cxx: str, core_objects: list[Path], tmp_path: Path):
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        pytest.skip("no C compiler")
    (tmp_path / "main.c").write_text(SHIM_PROGRAM)
    include = ["-I", str(CMINIVLM / "include")]
    run([cc, "-std=c11", "-Wall", "-Werror", *include, "-c", str(tmp_path / "main.c"), "-o", str(tmp_path / "main.o")])
    run([cxx, "-std=c++17", "-Wall", "-Werror", *include, "-c", str(CMINIVLM / "shim.cpp"), "-o", str(tmp_path / "shim.o")])
    run([cxx, str(tmp_path / "main.o"), str(tmp_path / "shim.o"), *map(str, core_objects), "-o", str(tmp_path / "shim_test")])
    out = subprocess.run([str(tmp_path / "shim_test")], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    # BERT uncased: "Hello, worlds" -> hello , world ##s (ids = vocab line numbers)
    assert lines[0] == "ids 5 8 6 7", out.stdout
    assert lines[1] == "text hello, worlds", out.stdout
    assert lines[2] == "bad MVLM_BAD_INPUT 1", out.stdout


def _calls(root) -> set[str]:
    return {_call_name(node) for node in _nodes(root)
            if node.type == "call_expression" and node.named_children and node.named_children[-1].type == "call_suffix"}


def test_build_checks_call_the_core(swift_parser):
    """BuildChecks.swift decides nothing itself: each public function reaches its C function of minivlm.h (or the
    shim's helper), and the compute-unit choices are exactly the C API's."""
    root = swift_parser.parse((SOURCES / "BuildChecks.swift").read_bytes()).root_node
    for function, c_call in (("verify", "mvlm_build_verify"), ("plan", "mvlm_plan_runtime"),
                             ("decodeMaxSide", "mvlm_decode_size"), ("compiledCachePath", "cmvlm_compiled_cache_path"),
                             ("withManifest", "mvlm_build_manifest_load")):
        assert c_call in _calls(_function(root, function)), f"BuildChecks.{function} does not call {c_call}"
    header = (NATIVE / "include" / "minivlm" / "minivlm.h").read_text()
    for c_function in ("mvlm_build_verify", "mvlm_plan_runtime", "mvlm_decode_size", "mvlm_compiled_cache_path",
                       "mvlm_build_manifest_load"):
        assert re.search(rf"\bmvlm_status {c_function}\(", header), f"minivlm.h declares no {c_function}"
    source = (SOURCES / "BuildChecks.swift").read_text()
    enum = re.search(r"public enum ComputeUnitsChoice: String \{(.*?)\}", source, re.S).group(1)
    raw = {m.group(2) or m.group(1) for m in re.finditer(r"(\w+)(?: = \"(\w+)\")?", enum.replace("case", ""))}
    assert raw == {"auto", *TARGETS["coreml"].compute_units}, raw
    assert '"ios".withCString' in source, "the plan must be asked for platform ios"


CACHE_PATH_PROGRAM = r"""
#include <stdio.h>
#include "CMiniVLM.h"

int main(int argc, char** argv) {
    mvlm_manifest* m = NULL;
    if (argc < 2 || mvlm_build_manifest_load(argv[1], &m) != MVLM_OK) { printf("load: %s\n", mvlm_last_error()); return 1; }
    mvlm_status st = 0;
    char* path = cmvlm_compiled_cache_path(m, "/private/var/mobile/Containers/Data/Application/X/Library/Caches", "vision", &st);
    if (!path) { printf("path: %s\n", mvlm_last_error()); return 1; }
    printf("%s\n", path);
    cmvlm_free(path);
    path = cmvlm_compiled_cache_path(m, "Caches", "vision", &st);
    printf("relative %s %d\n", mvlm_status_name(st), path == NULL);
    mvlm_manifest_free(m);
    return 0;
}
"""


def test_shim_compiled_cache_path(cxx: str, core_objects: list[Path], tmp_path: Path):
    """The shim's helper on an EfficientVLM manifest (which the MiniVLM loader refuses): the path is keyed by the
    manifest's sha256, given here."""
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        pytest.skip("no C compiler")
    digest = "0123456789abcdef" + "f" * 48
    (tmp_path / "manifest.json").write_text('{"schema_version": 1, "family": "efficientvlm", "target": "coreml", '
                                            '"graphs": {"vision": {"file": "model.mlpackage"}}, '
                                            f'"manifest_sha256": "{digest}"}}')
    (tmp_path / "main.c").write_text(CACHE_PATH_PROGRAM)
    include = ["-I", str(CMINIVLM / "include")]
    run([cc, "-std=c11", "-Wall", "-Werror", *include, "-c", str(tmp_path / "main.c"), "-o", str(tmp_path / "main.o")])
    run([cxx, "-std=c++17", "-Wall", "-Werror", *include, "-c", str(CMINIVLM / "shim.cpp"), "-o", str(tmp_path / "shim.o")])
    run([cxx, str(tmp_path / "main.o"), str(tmp_path / "shim.o"), *map(str, core_objects), "-o", str(tmp_path / "cache_path")])
    out = subprocess.run([str(tmp_path / "cache_path"), str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.splitlines() == [
        "/private/var/mobile/Containers/Data/Application/X/Library/Caches/minivlm-compiled/0123456789abcdef/model.mlmodelc",
        "relative MVLM_INVALID_ARGUMENT 1"], out.stdout
