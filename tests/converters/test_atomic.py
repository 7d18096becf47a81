"""The build folder is written atomically: complete or absent, and an existing build is never half-replaced.

A fake target (writes a few bytes per graph) stands in for the backends so these run in seconds; everything
else (tracing real images, goldens, manifest, the temporary folder and its rename) is the real code.
"""

import hashlib
import json
import os
import re
import signal
import stat
import subprocess
import sys
import time
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest

import minivlm
from minivlm.converters import build_folder, manifest
from minivlm.converters import build as build_module
from minivlm.converters.build import build
from minivlm.converters.specs import GraphBuild, runtime_io
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
        monkeypatch.setattr(build_module, "load_target", lambda options: target)

    return use


def _build(reference, out, **kw):
    return build(reference.pipeline, model_name="minivlm-tiny", source="test", options=resolve_options("executorch"),
                 out=out, **kw)


def _snapshot(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _previous_build(folder: Path) -> dict[str, str]:
    """A finished build as a build writes it: every file listed in its manifest (and a later parity report)."""
    (folder / "golden").mkdir(parents=True)
    (folder / "graph.pte").write_bytes(b"previous good build")
    (folder / "golden" / "index.json").write_text("{}")
    files = {rel: hashlib.sha256((folder / rel).read_bytes()).hexdigest() for rel in ("graph.pte", "golden/index.json")}
    (folder / "manifest.json").write_text(json.dumps({"schema_version": 1, "graphs": {}, "files": files}))
    (folder / "parity_report.json").write_text("{}")
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

    monkeypatch.setattr(build_module, "write_goldens", disk_full)
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


# --- what --force may replace -----------------------------------------------------------------------------------


def _folder_with(folder: Path, files: dict[str, str]) -> dict[str, str]:
    for rel, text in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text(text)
    return _snapshot(folder)


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
    assert _snapshot(out) == before and _listing(tmp_path) == ["w", "w/index.html", "w/manifest.json"]


@pytest.mark.parametrize("extra, first", [
    ({"notes.txt": "mine"}, "notes.txt"),
    ({"golden/my_photo.bin": "mine"}, "golden/my_photo.bin"),
    ({"zzz/a.txt": "mine", "b.txt": "mine"}, "b.txt"),  # sorted, files before deeper folders
    ({"mine/deep/x.txt": "mine"}, "mine/"),
])
def test_force_names_the_first_file_a_build_did_not_write_and_touches_nothing(extra, first, tmp_path):
    out = tmp_path / "build"
    _previous_build(out)
    before = _folder_with(out, extra)
    listing = _listing(tmp_path)
    with pytest.raises(ConversionError) as err:
        with build_folder.atomic_directory(out, force=True):
            pytest.fail("a folder holding files of its own was accepted")
    assert "\n" not in str(err.value)
    assert f"{out} is not a build folder ({first} is not one of the files in its manifest.json)" in str(err.value)
    assert _snapshot(out) == before and _listing(tmp_path) == listing


def test_force_refuses_symlinks_and_empty_folders_a_build_never_makes(tmp_path):
    out = tmp_path / "build"
    _previous_build(out)
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
    _previous_build(out)
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
        _previous_build(out)
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
        first = _snapshot(folder)
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
    assert _snapshot(folder) == first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["golden"]


# --- chatter ------------------------------------------------------------------------------------------------


def test_sample_images_are_writable_so_tracing_them_warns_about_nothing(tiny_reference):
    """torch.from_numpy of a read-only array warns ("The given NumPy array is not writable"), once per process:
    the arrays themselves are checked, and a trace run with warnings as errors."""
    from minivlm.converters.samples import calibration_images, trace

    samples = calibration_images()
    assert [s.name for s in samples if not s.image.flags.writeable] == []
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        trace(tiny_reference.pipeline, samples[2])  # a scene


# --- worker processes, signals, what stderr shows ------------------------------------------------------------
# These build with slow_target.py (worker processes import it by name) on one traced image instead of four
# (the tracing is not under test); the CLI and the library call run in processes of their own, to be signalled.

HERE = Path(__file__).parent
SETUP = f"""
import sys
sys.path.insert(0, {str(HERE)!r})
import slow_target
from minivlm.converters import build, samples
build.load_target = lambda options: slow_target
build.golden_images = lambda: samples.golden_images()[2:3]
"""
# `minivlm-convert` (the target's name only picks the final table's columns).
CLI = SETUP + """
from minivlm.cli import convert_main
sys.argv = ["minivlm-convert", "--target", "executorch", "--model", "minivlm-tiny", "--random-init", *sys.argv[1:]]
convert_main()
"""
# The library call, with SIGTERM left at its default action.
LIBRARY = SETUP + """
import minivlm
minivlm.convert("minivlm-tiny", "executorch", random_init=True, out=sys.argv[1], force=True, jobs=2)
"""
INTERRUPTED = "error: interrupted by {}; the unfinished build was removed and nothing else was changed"


def _start(code: str, tmp_path: Path, *args: str, seconds: float = 120, **env: str) -> subprocess.Popen:
    pids = tmp_path / "pids"
    pids.mkdir()
    env = {**os.environ, "SLOW_TARGET_SECONDS": str(seconds), "SLOW_TARGET_PIDS": str(pids), **env}
    # A session of its own: a terminal's Ctrl-C reaches its whole process group, workers included.
    return subprocess.Popen([sys.executable, "-c", code, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)


def _converting_workers(proc: subprocess.Popen, tmp_path: Path, n: int = 2) -> list[int]:
    """The pids of `n` worker processes once each is in the middle of a graph."""
    deadline = time.monotonic() + 300
    while len(pids := [int(p.name) for p in (tmp_path / "pids").iterdir()]) < n:
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"no {n} converting workers: {proc.communicate()}")
        time.sleep(0.2)
    return pids


def _gone(pids: list[int]) -> bool:
    deadline, alive = time.monotonic() + 10, pids
    while alive and time.monotonic() < deadline:
        time.sleep(0.1)
        alive = [pid for pid in alive if _exists(pid)]
    for pid in alive:  # do not leave them running behind a failed test
        os.kill(pid, signal.SIGKILL)
    return not alive


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_a_termination_signal_stops_the_workers_removes_the_partial_build_and_keeps_the_old(signum, tmp_path):
    out = tmp_path / "builds" / "tiny"
    before = _previous_build(out)
    proc = _start(CLI, tmp_path, "--out", str(out), "--force", "--jobs", "2")
    workers = _converting_workers(proc, tmp_path)
    assert any(p.name.startswith(".tiny.partial-") for p in out.parent.iterdir())
    os.kill(proc.pid, signum)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signum, err
    assert _lines(err)[-1] == INTERRUPTED.format(signal.Signals(signum).name)
    assert "Traceback" not in err
    assert _gone(workers)
    assert _snapshot(out) == before and sorted(p.name for p in out.parent.iterdir()) == ["tiny"]


def test_ctrl_c_stops_in_seconds_and_a_second_one_during_clean_up_changes_nothing(tmp_path):
    out = tmp_path / "tiny"
    proc = _start(CLI, tmp_path, "--out", str(out), "--jobs", "2")
    workers = _converting_workers(proc, tmp_path)
    started = time.monotonic()
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal does on Ctrl-C: the workers get it too
    time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=150)
    seconds = time.monotonic() - started
    assert proc.returncode == 130, err
    assert seconds < 15  # not the graph's 120 s: the workers are terminated, not waited for
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert [line for line in _lines(err) if "error" in line.lower()] == [INTERRUPTED.format("SIGINT")]
    assert _gone(workers)
    assert list(tmp_path.iterdir()) == [tmp_path / "pids"]


def test_sigterm_to_a_library_caller_cleans_up_then_ends_it_as_before(tmp_path):
    out = tmp_path / "tiny"
    before = _previous_build(out)
    proc = _start(LIBRARY, tmp_path, str(out))
    workers = _converting_workers(proc, tmp_path)
    os.kill(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGTERM, err  # killed by the signal, as without the clean-up
    assert _gone(workers)
    assert _snapshot(out) == before and sorted(p.name for p in tmp_path.iterdir()) == ["pids", "tiny"]


@pytest.mark.parametrize("jobs", [1, 2])
def test_convert_stderr_shows_our_lines_and_errors_only_and_verbose_shows_the_rest(jobs, tmp_path):
    """Backend chatter: log records and warnings (re-emitted from worker processes) and native lines on fd 2."""
    proc = _start(CLI, tmp_path, "--out", str(tmp_path / "tiny"), "--jobs", str(jobs), seconds=0,
                  SLOW_TARGET_CHATTER="1", SLOW_TARGET_FAIL="tee_stage1")
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 2, err
    shown = _lines(err)
    assert shown[0] == "tracing the reference pipeline on 1 real images"
    assert "WARNING: our warning from tee_stage1\n" in err  # maybe after a progress bar, on its line
    assert "E0000 00:00:1796034652.485349    7171 converter.cc:12] a native error\n" in err
    assert shown[-1] == "error: a graph failed to convert: ValueError: tee_stage1 has an op no backend knows"
    for chatter in ("backend warning", "backend log record", "native chatter", "absl::InitializeLog", "XNNPACK"):
        assert chatter not in err
    assert [p.name for p in tmp_path.iterdir()] == ["pids"]  # the failed build left nothing
    if jobs == 1:
        return
    (tmp_path / "verbose").mkdir()
    loud = _start(CLI, tmp_path / "verbose", "--out", str(tmp_path / "tiny"), "--jobs", str(jobs), "--verbose",
                  seconds=0, SLOW_TARGET_CHATTER="1", SLOW_TARGET_FAIL="tee_stage1")
    _, err = loud.communicate(timeout=300)
    for chatter in ("backend warning from tee_stage1", "backend log record from tee_stage1", "native chatter from absl",
                    "native chatter from torch", "absl::InitializeLog", "XNNPACK", "our warning", "a native error"):
        assert chatter in err


def test_workers_report_to_the_caller_and_a_failing_graph_stops_them_at_once(tiny_reference, monkeypatch, caplog,
                                                                           tmp_path):
    """A library call leaves the caller's warning filters and logging alone: worker processes' warnings and
    records reach it as if raised here. A graph failing in one worker terminates the others."""
    monkeypatch.syspath_prepend(str(HERE))  # the spawned workers import slow_target by name
    import slow_target

    from minivlm.converters import samples

    monkeypatch.setattr(build_module, "load_target", lambda options: slow_target)
    monkeypatch.setattr(build_module, "golden_images", lambda: samples.golden_images()[2:3])
    (tmp_path / "pids").mkdir()
    for name, value in {"SLOW_TARGET_PIDS": str(tmp_path / "pids"), "SLOW_TARGET_SECONDS": "120",
                        "SLOW_TARGET_CHATTER": "1", "SLOW_TARGET_FAIL": "caption_step"}.items():
        monkeypatch.setenv(name, value)
    out = tmp_path / "tiny"
    before = _previous_build(out)
    filters = list(warnings.filters)
    started = time.monotonic()
    with pytest.warns(FutureWarning, match="backend warning from ") as warned, \
            pytest.raises(ConversionError, match=r"^a graph failed to convert: ValueError: caption_step has an op no "
                                                 r"backend knows$"):
        _build(tiny_reference, out, force=True, jobs=2)
    assert "backend warning from caption_step" in {str(w.message) for w in warned}
    assert time.monotonic() - started < 100  # the other worker's graph would take 120 s
    assert warnings.filters == filters
    records = {(r.name, r.getMessage()) for r in caplog.records}
    assert ("coremltools", "backend log record from caption_step") in records
    assert ("minivlm.converters.slow_target", "our warning from caption_step") in records
    assert _gone([int(p.name) for p in (tmp_path / "pids").iterdir()])
    assert _snapshot(out) == before and sorted(p.name for p in tmp_path.iterdir()) == ["pids", "tiny"]


STAGE_OR_BAR = re.compile(r"(tracing |fp16 range |writing |WARNING: |(tee_stage1|tee_stage2|caption_prefix|caption_step|vqa|"
                          r"match) +[ █▏▎▍▌▋▊▉]* \d/\d)")


@pytest.mark.build
@pytest.mark.parametrize("target", ["tflite", "coreml", "executorch"])
def test_a_real_conversion_shows_only_our_stage_lines_bars_and_warnings(target, tmp_path):
    """The backends' own chatter (coremltools' version notes and int64 casts, torchao, absl, TFLite, torch's
    logging) stays off the terminal; minutes per target."""
    if target == "coreml":
        pytest.importorskip("coremltools")
    out = tmp_path / "build"
    proc = subprocess.run([sys.executable, "-c", "from minivlm.cli import convert_main; convert_main()", "--target", target,
                           "--model", "minivlm-tiny", "--random-init", "--out", str(out), "--jobs", "2"],
                          capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr
    lines = [line.strip() for line in re.split(r"[\r\n]+", proc.stderr.replace("\x1b[A", "\n")) if line.strip()]
    assert [line for line in lines if not STAGE_OR_BAR.match(line)] == []
    assert f"wrote {out} ({target}," in proc.stdout
