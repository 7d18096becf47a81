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


def test_the_efficientvlm_demo_table_is_current_and_made_from_the_bundled_weights():
    """The table comes from the chain's report; the report must be about the weights the package ships."""
    from minivlm.converters.manifest import sha256_file
    from minivlm.loading import WEIGHTS_DIR

    script = _script()
    bundled = {p: WEIGHTS_DIR / f"{p}.safetensors" for p in ("efficientvlm-demo-teacher", "efficientvlm-demo-student")}
    if not script.EFFICIENTVLM_REPORT.exists():
        assert not any(path.exists() for path in bundled.values()), "EfficientVLM weights ship without their report"
        return
    _assert_current("EFFICIENTVLM-DEMO-TABLE", "efficientvlm_demo_table")
    import json

    models = json.loads(script.EFFICIENTVLM_REPORT.read_text())["models"]
    for name in ("teacher", "student"):
        path = bundled[models[name]["preset"]]
        assert sha256_file(path) == models[name]["sha256"], f"{path.name} is not the file the report scored"


def test_the_bench_table_is_current_with_its_reports():
    """The README's speed table is what scripts/update_readme.py makes from the `minivlm bench` JSON reports, and
    the demo report is one of `minivlm bench` on the demo model in eager and ONNX Runtime."""
    import json

    script = _script()
    demo = script.BENCH_REPORTS[0]
    assert demo.exists(), f"{demo} is missing: run minivlm bench as docs/BENCHMARKS.md says"
    _assert_current("BENCH-TABLE", "bench_table")
    report = json.loads(demo.read_text())
    assert report["model"]["preset"] == "minivlm-demo" and not report["model"]["random_init"]
    assert [rt["kind"] for rt in report["runtimes"][:2]] == ["eager", "onnxruntime"]


def test_the_pruning_table_is_current_with_its_report():
    """The README's pruned-models table is what scripts/update_readme.py makes from the pruning script's report,
    and the bundled efficientvlm-demo is the file that report installed."""
    import json

    from minivlm.converters.manifest import sha256_file
    from minivlm.loading import WEIGHTS_DIR

    script = _script()
    bundled = WEIGHTS_DIR / "efficientvlm-demo.safetensors"
    if not script.PRUNING_REPORT.exists():
        assert not bundled.exists(), "efficientvlm-demo ships without its pruning report"
        return
    _assert_current("EFFICIENTVLM-PRUNING-TABLE", "efficientvlm_pruning_table")
    report = json.loads(script.PRUNING_REPORT.read_text())
    assert sha256_file(bundled) == report["bundled_sha256"], f"{bundled.name} is not the file the report installed"
