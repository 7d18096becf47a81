"""Pins the import direction sdk -> converters -> python_ref, and that python_ref needs no converter backend."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# What python_ref may import besides the standard library and itself. PIL: EfficientVLM's reference resize is
# PIL's bicubic filter, as X-VLM's transform (python_ref/efficientvlm/preprocess.py).
PYTHON_REF_THIRD_PARTY = {"torch", "numpy", "safetensors", "tokenizers", "PIL"}
BACKENDS = {"executorch", "coremltools", "litert_torch", "ai_edge_litert", "ai_edge_torch", "tflite_runtime"}


# The three packages: import name -> folder (pyproject.toml's package-dir).
PACKAGES = {"minivlm": ROOT / "sdk", "minivlm.converters": ROOT / "converters", "minivlm.python_ref": ROOT / "python_ref"}


def _modules() -> dict[str, Path]:
    """Every module of the three packages by dotted name (a package is its __init__.py). Folders without an
    __init__.py (sdk/native's tools) are not packages, so not modules."""
    found = {}
    for package, folder in PACKAGES.items():
        for path in sorted(folder.rglob("*.py")):
            parts = path.relative_to(folder).with_suffix("").parts
            if not all((folder.joinpath(*parts[:i]) / "__init__.py").is_file() for i in range(len(parts))):
                continue
            parts = parts[:-1] if parts[-1] == "__init__" else parts
            found[".".join((package, *parts))] = path
    return found


MODULES = _modules()


def _imports(path: Path) -> list[tuple[str, int]]:
    """(module, level) of every import statement in a file (module-level or inside functions)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, 0) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            found.append((node.module or "", node.level))
    return found


def _known(name: str) -> str | None:
    """The longest prefix of `name` that is one of our modules, or None."""
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        if ".".join(parts[:i]) in MODULES:
            return ".".join(parts[:i])
    return None


def _resolved_imports(module: str) -> set[str]:
    """Our modules that `module` imports, relative imports resolved, `from p import m` counted as p.m when m is
    a module (otherwise as p). Imports under `if TYPE_CHECKING:` are never executed and not counted."""
    path = MODULES[module]
    tree = ast.parse(path.read_text(), filename=str(path))
    skipped = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
               for n in ast.walk(node)}
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    targets = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            targets |= {_known(alias.name) for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                targets.add(_known(f"{base}.{alias.name}") or _known(base))
    return targets - {None, module}


GRAPH = {m: _resolved_imports(m) for m in MODULES}


def _layer(module: str) -> str:
    """The package a module belongs to (a subpackage of sdk, like minivlm.parity, is the sdk layer)."""
    for package in ("minivlm.python_ref", "minivlm.converters"):
        if module == package or module.startswith(package + "."):
            return package
    return "minivlm"


def test_the_module_list_sees_every_package():
    assert {"minivlm.cli", "minivlm.converters.build", "minivlm.python_ref.fusion"} <= set(MODULES)
    assert not any(m.startswith("minivlm.native") for m in MODULES)  # sdk/native holds C++ and scripts
    assert _layer("minivlm.converters.build") == "minivlm.converters" and _layer("minivlm.cli") == "minivlm"


@pytest.mark.parametrize("module", sorted(m for m in MODULES if _layer(m) == "minivlm.python_ref"))
def test_python_ref_imports_only_torch_numpy_and_itself(module):
    import sys

    for name, level in _imports(MODULES[module]):
        top = name.split(".")[0]
        if level > 0 or top in sys.stdlib_module_names or top in PYTHON_REF_THIRD_PARTY or name == "__future__":
            continue
        if not name.startswith("minivlm.python_ref"):
            pytest.fail(f"{module} imports {name!r}: python_ref may use only {sorted(PYTHON_REF_THIRD_PARTY)}")
    outside = sorted(t for t in GRAPH[module] if _layer(t) != "minivlm.python_ref")
    assert not outside, f"{module} imports {outside} (relative imports included): python_ref imports only itself"


@pytest.mark.parametrize("module", sorted(m for m in MODULES if _layer(m) == "minivlm.converters"))
def test_converters_never_import_the_sdk_layer(module):
    # minivlm.errors re-exports python_ref's exception classes: the one sdk module converters may name
    upward = sorted(t for t in GRAPH[module] if _layer(t) == "minivlm" and t not in ("minivlm", "minivlm.errors"))
    assert not upward, f"{module} imports {upward}: converters may import only python_ref"


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


@pytest.mark.parametrize("package", ["minivlm", "minivlm.converters", "minivlm.python_ref"])
def test_no_import_cycle_inside_a_package(package):
    """Function-level imports count too: a lazy import that dodges a cycle is still a cycle in the design.
    The sdk package's __init__ imports its submodules lazily inside its functions, and every submodule's import
    runs that __init__ first: that edge is Python's, not a design choice, so it is left out."""
    inside = {m: {t for t in GRAPH[m] if _layer(t) == package and t != package} for m in MODULES if _layer(m) == package}
    assert _cycles(inside) == []


def test_no_import_cycle_anywhere():
    """Across packages too (the direction tests above forbid most; this catches the rest, e.g. via minivlm.errors)."""
    assert _cycles(GRAPH) == []


def test_every_python_file_is_under_400_lines():
    """Small modules, one job each (docs/ARCHITECTURE.md §9): code, tests, scripts and benchmarks."""
    skip = {".venv", "out", "build", ".git"}
    long = {p.relative_to(ROOT).as_posix(): n for p in ROOT.rglob("*.py")
            if not skip & set(p.relative_to(ROOT).parts) and (n := len(p.read_text().splitlines())) >= 400}
    assert long == {}


@pytest.mark.parametrize("path", sorted((ROOT / "converters").rglob("*.py")), ids=lambda p: p.name)
def test_converter_backends_are_imported_lazily(path):
    """A module-level backend import would make one missing backend break every target."""
    tree = ast.parse(path.read_text())
    for node in tree.body:
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""]
        for name in names:
            assert name.split(".")[0] not in BACKENDS, f"{path.name} imports {name} at module level"
