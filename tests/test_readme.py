"""The README's generated tables (scripts/update_readme.py) are what the code counts today: each section between
its markers equals what the script would write. The EfficientVLM table counts on the meta device (seconds); the
MiniVLM table runs the paper preset at 512x512, so it is in the slow tier."""

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("update_readme", ROOT / "scripts" / "update_readme.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _assert_current(name: str, make: str) -> None:
    script = _script()
    text = (ROOT / "README.md").read_text()
    assert f"<!-- {name} -->" in text and f"<!-- /{name} -->" in text, f"README.md has no {name} markers"
    assert script.replace_section(text, name, getattr(script, make)()) == text, \
        f"README.md's {name} is stale: run `python scripts/update_readme.py --only {name}`"


def test_the_efficientvlm_table_is_current():
    _assert_current("EFFICIENTVLM-TABLE", "efficientvlm_table")


@pytest.mark.slow
def test_the_minivlm_model_table_is_current():
    _assert_current("MODEL-TABLE", "model_table")
