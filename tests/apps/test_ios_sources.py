"""What can be checked of ios_demo/ without macOS: every Swift file parses, the package's symlinks reach the
native core, and the C/C++ shim compiles and works against the core.

Swift is parsed with tree-sitter-swift (syntax only: no type checking or import resolution, which need a
Swift toolchain). The shim is compiled for real with -Werror, its umbrella header as C (Swift imports it as
a C module), and a small C program linked with the shim and the core calls the shim's helpers.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from _appbuild import NATIVE, REPO, run

IOS = REPO / "ios_demo"
CMINIVLM = IOS / "Sources" / "CMiniVLM"
SWIFT_FILES = sorted(p for p in IOS.rglob("*.swift") if ".build" not in p.parts)

# The files the package and the app cannot do without: a missing one is a failure, not a smaller test.
EXPECTED = [
    "Package.swift",
    "Sources/MiniVLM/Pipeline.swift",
    "Sources/MiniVLM/Core.swift",
    "Sources/MiniVLM/CoreMLRunner.swift",
    "Sources/MiniVLM/ExecuTorchRunner.swift",
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
