"""The build folder is written atomically: complete or absent, and an existing build is never half-replaced.

A fake target (writes a few bytes per graph) stands in for the backends so these run in seconds; everything
else (tracing real images, goldens, manifest, the temporary folder and its rename) is the real code.
"""

import hashlib
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

import minivlm
from minivlm.converters import common
from minivlm.converters.common import GraphBuild, build, runtime_io
from minivlm.converters.targets import resolve_options
from minivlm.errors import ConversionError


def _fake_target(fail_at: str | None = None, error: BaseException | None = None):
    def convert_graph(spec, options, folder, step):
        step("write")
        if spec.name == fail_at:
            raise error
        (folder / f"{spec.name}.bin").write_bytes(spec.name.encode())
        return GraphBuild(spec.name, f"{spec.name}.bin", runtime_io(spec.inputs), runtime_io(spec.outputs), 1, 0)

    return SimpleNamespace(calibrates=lambda graph, options: False, steps=lambda options: ("write",), convert_graph=convert_graph,
                           manifest_extra=lambda options: {})


@pytest.fixture
def use_target(monkeypatch):
    def use(target):
        monkeypatch.setattr(common, "load_target", lambda options: target)

    return use


def _build(reference, out, **kw):
    return build(reference.pipeline, model_name="minivlm-tiny", source="test", options=resolve_options("executorch"),
                 out=out, **kw)


def _snapshot(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _previous_build(folder: Path) -> dict[str, str]:
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text('{"schema_version": 1}')
    (folder / "graph.pte").write_bytes(b"previous good build")
    return _snapshot(folder)


def test_a_build_is_complete_hashed_and_leaves_no_temporary_folder(tiny_reference, use_target, tmp_path):
    use_target(_fake_target())
    out = tmp_path / "builds" / "tiny"
    report = _build(tiny_reference, out)
    manifest = json.loads((out / "manifest.json").read_text())
    files = _snapshot(out)
    assert manifest["files"] == {k: v for k, v in files.items() if k != "manifest.json"}
    for name in ("tee_stage1.bin", "caption_step.bin", "vocab.txt", "vocabularies.json", "golden/index.json"):
        assert name in manifest["files"]
    assert report.golden_bytes < 20e6
    assert sorted(p.name for p in out.parent.iterdir()) == ["tiny"]


def test_interrupted_build_leaves_nothing_behind(tiny_reference, use_target, tmp_path):
    use_target(_fake_target(fail_at="caption_prefix", error=KeyboardInterrupt()))
    out = tmp_path / "new" / "deeper" / "tiny"
    with pytest.raises(KeyboardInterrupt):
        _build(tiny_reference, out)
    assert list(tmp_path.iterdir()) == []  # not even the parent folders it created


def test_interrupted_rebuild_keeps_the_previous_build(tiny_reference, use_target, tmp_path):
    out = tmp_path / "tiny"
    before = _previous_build(out)
    use_target(_fake_target(fail_at="vqa", error=KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        _build(tiny_reference, out, force=True)
    assert _snapshot(out) == before
    assert [p.name for p in tmp_path.iterdir()] == ["tiny"]


def test_a_failing_step_after_the_graphs_leaves_nothing(tiny_reference, use_target, monkeypatch, tmp_path):
    use_target(_fake_target())

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(common, "write_goldens", disk_full)
    with pytest.raises(OSError, match="No space left"):
        _build(tiny_reference, tmp_path / "tiny")
    assert list(tmp_path.iterdir()) == []


def test_existing_output_is_refused_without_force_and_left_intact(tiny_reference, use_target, tmp_path):
    use_target(_fake_target())
    out = tmp_path / "tiny"
    before = _previous_build(out)
    with pytest.raises(ConversionError, match="already exists; pass --force to replace it") as err:
        _build(tiny_reference, out)
    assert "\n" not in str(err.value)
    assert _snapshot(out) == before
    assert [p.name for p in tmp_path.iterdir()] == ["tiny"]


def test_force_replaces_a_previous_build_only_when_the_new_one_is_complete(tiny_reference, use_target, tmp_path):
    use_target(_fake_target())
    out = tmp_path / "tiny"
    _previous_build(out)
    _build(tiny_reference, out, force=True)
    assert "graph.pte" not in _snapshot(out) and "tee_stage1.bin" in _snapshot(out)
    assert [p.name for p in tmp_path.iterdir()] == ["tiny"]


def test_force_never_deletes_a_folder_that_is_not_a_build(tiny_reference, use_target, tmp_path):
    use_target(_fake_target())
    (tmp_path / "notes.txt").write_text("my files")
    with pytest.raises(ConversionError, match="is not a build folder"):
        _build(tiny_reference, tmp_path, force=True)
    assert (tmp_path / "notes.txt").read_text() == "my files"


@pytest.mark.parametrize("under", ["a_file/build", "a_file"])
def test_unwritable_output_is_one_line_and_writes_nothing(under, tmp_path):
    (tmp_path / "a_file").write_text("not a folder")
    with pytest.raises(ConversionError) as err:
        minivlm.convert("minivlm-tiny", "executorch", out=tmp_path / under, random_init=True)
    assert "\n" not in str(err.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]
