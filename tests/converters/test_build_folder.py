"""The build folder is written atomically: complete or absent, and an existing build is never half-replaced.

A fake target (writes a few bytes per graph) stands in for the backends so these run in seconds; everything
else (tracing real images, goldens, manifest, the temporary folder and its rename) is the real code.
What --force may replace, one build per folder at a time, the modes of what a build leaves, and
tests/golden/ replaced the same way by update_host_goldens.
"""

import json
import os
import stat
from pathlib import Path
from types import SimpleNamespace

import pytest
from build_helpers import build_tiny, previous_build, snapshot

import minivlm
from minivlm.converters import build_folder, manifest
from minivlm.converters import build as build_module
from minivlm.converters.specs import GraphBuild, runtime_io
from minivlm.errors import ConversionError


def _fake_target(fail_at: str | None = None, error: BaseException | None = None):
    def convert_graph(spec, options, folder, step):
        step("write")
        if spec.name == fail_at:
            raise error
        (folder / f"{spec.name}.bin").write_bytes(spec.name.encode())
        return GraphBuild(spec.name, f"{spec.name}.bin", runtime_io(spec.inputs), runtime_io(spec.outputs), 1, 0)

    return SimpleNamespace(calibrates=lambda graph, options: False, steps=lambda options: ("write",), convert_graph=convert_graph,
                           manifest_extra=lambda options, graphs: {})


@pytest.fixture
def use_target(monkeypatch):
    def use(target):
        monkeypatch.setattr(build_module, "load_target", lambda options: target)

    return use


def test_a_build_is_complete_hashed_and_leaves_no_temporary_folder(tiny_reference, use_target, tmp_path):
    use_target(_fake_target())
    out = tmp_path / "builds" / "tiny"
    report = build_tiny(tiny_reference, out)
    manifest = json.loads((out / "manifest.json").read_text())
    files = snapshot(out)
    assert manifest["files"] == {k: v for k, v in files.items() if k != "manifest.json"}
    for name in ("tee_stage1.bin", "caption_step.bin", "vocab.txt", "vocabularies.json", "golden/index.json"):
        assert name in manifest["files"]
    assert report.golden_bytes < 20e6
    assert sorted(p.name for p in out.parent.iterdir()) == ["tiny"]


def test_interrupted_build_leaves_nothing_behind(tiny_reference, use_target, tmp_path):
    use_target(_fake_target(fail_at="caption_prefix", error=KeyboardInterrupt()))
    out = tmp_path / "new" / "deeper" / "tiny"
    with pytest.raises(KeyboardInterrupt):
        build_tiny(tiny_reference, out)
    assert list(tmp_path.iterdir()) == []  # not even the parent folders it created


def test_interrupted_rebuild_keeps_the_previous_build(tiny_reference, use_target, tmp_path):
    out = tmp_path / "tiny"
    before = previous_build(out)
    use_target(_fake_target(fail_at="vqa", error=KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        build_tiny(tiny_reference, out, force=True)
    assert snapshot(out) == before
    assert [p.name for p in tmp_path.iterdir()] == ["tiny"]


def test_a_failing_step_after_the_graphs_leaves_nothing(tiny_reference, use_target, monkeypatch, tmp_path):
    use_target(_fake_target())

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(build_module, "write_goldens", disk_full)
    with pytest.raises(OSError, match="No space left"):
        build_tiny(tiny_reference, tmp_path / "tiny")
    assert list(tmp_path.iterdir()) == []


def test_existing_output_is_refused_without_force_and_left_intact(tiny_reference, use_target, tmp_path):
    use_target(_fake_target())
    out = tmp_path / "tiny"
    before = previous_build(out)
    with pytest.raises(ConversionError, match="already exists; pass --force to replace it") as err:
        build_tiny(tiny_reference, out)
    assert "\n" not in str(err.value)
    assert snapshot(out) == before
    assert [p.name for p in tmp_path.iterdir()] == ["tiny"]


def test_force_replaces_a_previous_build_only_when_the_new_one_is_complete(tiny_reference, use_target, tmp_path):
    use_target(_fake_target())
    out = tmp_path / "tiny"
    previous_build(out)
    build_tiny(tiny_reference, out, force=True)
    assert "graph.pte" not in snapshot(out) and "tee_stage1.bin" in snapshot(out)
    assert [p.name for p in tmp_path.iterdir()] == ["tiny"]


def test_force_never_deletes_a_folder_that_is_not_a_build(tiny_reference, use_target, tmp_path):
    use_target(_fake_target())
    (tmp_path / "notes.txt").write_text("my files")
    with pytest.raises(ConversionError, match="is not a build folder"):
        build_tiny(tiny_reference, tmp_path, force=True)
    assert (tmp_path / "notes.txt").read_text() == "my files"


@pytest.mark.parametrize("under", ["a_file/build", "a_file"])
def test_unwritable_output_is_one_line_and_writes_nothing(under, tmp_path):
    (tmp_path / "a_file").write_text("not a folder")
    with pytest.raises(ConversionError) as err:
        minivlm.convert("minivlm-tiny", "executorch", out=tmp_path / under, random_init=True)
    assert "\n" not in str(err.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]


# --- what --force may replace -----------------------------------------------------------------------------------


def _folder_with(folder: Path, files: dict[str, str]) -> dict[str, str]:
    for rel, text in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text(text)
    return snapshot(folder)


def _listing(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*"))


def test_force_never_replaces_a_folder_with_a_fake_manifest(tiny_reference, tmp_path):
    """`{}` in manifest.json next to a user's index.html: --force used to delete the page."""
    out = tmp_path / "w"
    before = _folder_with(out, {"manifest.json": "{}\n", "index.html": "hi\n"})
    with pytest.raises(ConversionError) as err:
        minivlm.convert("minivlm-tiny", "tflite", out=out, force=True, random_init=True)
    message = str(err.value)
    assert "\n" not in message and str(out) in message and "manifest.json is not a minivlm build manifest" in message
    assert snapshot(out) == before and _listing(tmp_path) == ["w", "w/index.html", "w/manifest.json"]


@pytest.mark.parametrize("extra, first", [
    ({"notes.txt": "mine"}, "notes.txt"),
    ({"golden/my_photo.bin": "mine"}, "golden/my_photo.bin"),
    ({"zzz/a.txt": "mine", "b.txt": "mine"}, "b.txt"),  # sorted, files before deeper folders
    ({"mine/deep/x.txt": "mine"}, "mine/"),
])
def test_force_names_the_first_file_a_build_did_not_write_and_touches_nothing(extra, first, tmp_path):
    out = tmp_path / "build"
    previous_build(out)
    before = _folder_with(out, extra)
    listing = _listing(tmp_path)
    with pytest.raises(ConversionError) as err:
        with build_folder.atomic_directory(out, force=True):
            pytest.fail("a folder holding files of its own was accepted")
    assert "\n" not in str(err.value)
    assert f"{out} is not a build folder ({first} is not one of the files in its manifest.json)" in str(err.value)
    assert snapshot(out) == before and _listing(tmp_path) == listing


def test_force_refuses_symlinks_and_empty_folders_a_build_never_makes(tmp_path):
    out = tmp_path / "build"
    previous_build(out)
    (tmp_path / "precious.txt").write_text("mine")
    (out / "golden" / "link").symlink_to(tmp_path / "precious.txt")
    with pytest.raises(ConversionError, match=r"\(golden/link is not one"):
        with build_folder.atomic_directory(out, force=True):
            pass
    (out / "golden" / "link").unlink()
    (out / "empty").mkdir()
    with pytest.raises(ConversionError, match=r"\(empty/ is not one"):
        with build_folder.atomic_directory(out, force=True):
            pass
    assert (tmp_path / "precious.txt").read_text() == "mine"


def test_force_replaces_a_build_with_the_files_tools_add_later(tmp_path):
    from minivlm.parity import REPORT_FILE

    assert REPORT_FILE in manifest.ADDED_LATER  # `minivlm parity` writes it into the build
    out = tmp_path / "build"
    previous_build(out)
    (out / f".{REPORT_FILE}.k2j3h4").write_text("{")  # parity's own temporary file, left by a killed run
    with build_folder.atomic_directory(out, force=True) as tmp:
        (tmp / "new.pte").write_bytes(b"new")
    assert _listing(out) == ["new.pte"]


@pytest.mark.parametrize("where", ["root", "home", "cwd", "parent of cwd"])
@pytest.mark.parametrize("force", [False, True])
def test_out_is_never_the_root_home_or_current_folder(where, force, tmp_path, monkeypatch):
    work = tmp_path / "home" / "projects" / "work"
    work.mkdir(parents=True)  # all empty but for each other: nothing for a content check to object to
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(work)
    out, what = {"root": (Path("/"), "the root folder"), "home": (Path("~").expanduser(), "the home folder"),
                 "cwd": (Path("."), "the current folder"),
                 "parent of cwd": (Path(".."), "a parent of the current folder")}[where]
    with pytest.raises(ConversionError) as err:
        with build_folder.atomic_directory(out, force=force):
            pytest.fail(f"a build went ahead in {where}")
    assert str(err.value) == f"{out} is {what}; --out must name a folder of its own for the build"
    assert _listing(tmp_path) == ["home", "home/projects", "home/projects/work"]


# --- one build at a time per folder ---------------------------------------------------------------------------


@pytest.mark.parametrize("force", [False, True])
def test_a_second_build_of_the_same_folder_fails_at_once_and_the_first_wins(force, tmp_path):
    out = tmp_path / "build"
    if force:
        previous_build(out)
    with build_folder.atomic_directory(out, force=force) as first:
        (first / "first.pte").write_bytes(b"first")
        with pytest.raises(ConversionError) as err:
            with build_folder.atomic_directory(out, force=force) as second:
                (second / "second.pte").write_bytes(b"second")
        assert str(err.value) == (f"{out} is being built by another process right now (it holds {tmp_path / '.build.lock'}); "
                                  "wait for it to finish or choose another --out")
    assert _listing(out) == ["first.pte"]
    assert _listing(tmp_path) == ["build", "build/first.pte"]  # no lock file, no temporary folder


def test_a_lock_file_left_by_a_killed_build_does_not_block_the_next(tmp_path):
    (tmp_path / ".build.lock").write_text("")  # its process is gone, and with it the lock
    with build_folder.atomic_directory(tmp_path / "build") as tmp:
        (tmp / "graph.pte").write_bytes(b"x")
    assert _listing(tmp_path) == ["build", "build/graph.pte"]


# --- permissions --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("umask, folder_mode, file_mode", [(0o022, 0o755, 0o644), (0o027, 0o750, 0o640)])
def test_a_build_gets_the_modes_of_the_umask_whatever_its_writers_used(umask, folder_mode, file_mode, tmp_path):
    old = os.umask(umask)
    try:
        with build_folder.atomic_directory(tmp_path / "build") as tmp:
            (tmp / "graph.mlpackage" / "weights").mkdir(parents=True, mode=0o700)  # as coremltools writes it
            os.close(os.open(tmp / "graph.mlpackage" / "model.mlmodel", os.O_CREAT | os.O_WRONLY, 0o600))
            os.close(os.open(tmp / "tool.sh", os.O_CREAT | os.O_WRONLY, 0o700))
    finally:
        os.umask(old)
    out = tmp_path / "build"
    modes = {p.relative_to(tmp_path).as_posix(): stat.S_IMODE(p.stat().st_mode) for p in [out, *out.rglob("*")]}
    assert modes == {"build": folder_mode, "build/graph.mlpackage": folder_mode, "build/graph.mlpackage/weights": folder_mode,
                     "build/graph.mlpackage/model.mlmodel": file_mode, "build/tool.sh": folder_mode}


# --- host goldens -------------------------------------------------------------------------------------------


def _fake_host_goldens(pipeline, traces, folder, model_name):
    """What write_host_goldens leaves (an index naming its array files, fixed files), one array written 0600."""
    (folder / "photo_coffee").mkdir(parents=True, exist_ok=True)
    os.close(os.open(folder / "photo_coffee" / "proposals.inputs.deltas.bin", os.O_CREAT | os.O_WRONLY, 0o600))
    (folder / "anchors.bin").write_bytes(b"\0" * 8)
    index = {"anchors": {"file": "anchors.bin"}, "cases": {"photo_coffee": {"host_steps": [
        {"file": "photo_coffee/proposals.inputs.deltas.bin", "dtype": "float32", "shape": [0]}]}}}
    (folder / "index.json").write_text(json.dumps(index))
    for name in ("manifest.json", "vocabularies.json", ".gitattributes"):
        (folder / name).write_text("{}")
    return 8


def test_host_goldens_replace_only_host_goldens_atomically_with_normal_modes(monkeypatch, tmp_path):
    from minivlm.converters import host_goldens

    monkeypatch.setattr(host_goldens, "golden_images", lambda: [])  # the folder swap is under test, not the tracing
    monkeypatch.setattr(host_goldens, "write_host_goldens", _fake_host_goldens)
    folder = tmp_path / "golden"
    old = os.umask(0o022)
    try:
        host_goldens.update_host_goldens(None, "minivlm-tiny", folder)
        first = snapshot(folder)
        assert {p.relative_to(folder).as_posix(): stat.S_IMODE(p.stat().st_mode) for p in [folder, *folder.rglob("*")]} == {
            ".": 0o755, "photo_coffee": 0o755, "photo_coffee/proposals.inputs.deltas.bin": 0o644, "anchors.bin": 0o644,
            "index.json": 0o644, "manifest.json": 0o644, "vocabularies.json": 0o644, ".gitattributes": 0o644}
        (folder / "photo_coffee" / "my_notes.txt").write_text("mine")
        with pytest.raises(ConversionError, match=r"\(photo_coffee/my_notes.txt is not named in its index.json\)"):
            host_goldens.update_host_goldens(None, "minivlm-tiny", folder)
        assert (folder / "photo_coffee" / "my_notes.txt").read_text() == "mine"
        (folder / "photo_coffee" / "my_notes.txt").unlink()
        host_goldens.update_host_goldens(None, "minivlm-tiny", folder)
        with pytest.raises(ConversionError, match="is not a host goldens folder"):
            host_goldens.update_host_goldens(None, "minivlm-tiny", tmp_path)  # e.g. --out pointing one level too high
    finally:
        os.umask(old)
    assert snapshot(folder) == first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["golden"]
