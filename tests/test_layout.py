"""Pins the import direction sdk -> converters -> python_ref, and that python_ref needs no converter backend."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# What python_ref may import besides the standard library and itself.
PYTHON_REF_THIRD_PARTY = {"torch", "numpy", "safetensors", "tokenizers"}
BACKENDS = {"executorch", "coremltools", "litert_torch", "ai_edge_litert", "ai_edge_torch", "tflite_runtime"}


def _imports(path: Path) -> list[tuple[str, int]]:
    """(module, level) of every import statement in a file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, 0) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            found.append((node.module or "", node.level))
    return found


@pytest.mark.parametrize("path", sorted((ROOT / "python_ref").rglob("*.py")), ids=lambda p: p.name)
def test_python_ref_imports_only_torch_numpy_and_itself(path):
    import sys

    for module, level in _imports(path):
        top = module.split(".")[0]
        if level > 0 or top in sys.stdlib_module_names or top in PYTHON_REF_THIRD_PARTY or module == "__future__":
            continue
        if module.startswith("minivlm.python_ref"):
            continue
        pytest.fail(f"{path.relative_to(ROOT)} imports {module!r}: python_ref may use only {sorted(PYTHON_REF_THIRD_PARTY)}")


@pytest.mark.parametrize("path", sorted((ROOT / "converters").rglob("*.py")), ids=lambda p: p.name)
def test_converters_never_import_the_sdk_layer(path):
    for module, _level in _imports(path):
        if module.startswith("minivlm") and not module.startswith(("minivlm.python_ref", "minivlm.converters", "minivlm.errors")):
            pytest.fail(f"{path.relative_to(ROOT)} imports {module!r}: converters may import only python_ref")


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
