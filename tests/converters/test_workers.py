"""Worker processes and signals: a build in worker processes stops them all on a signal, Ctrl-C or a failing
graph, removes its unfinished folder and keeps the previous build; a library caller gets the workers' warnings
and log records as if raised in its own process.

These build with slow_target.py (see build_helpers.py): graphs that take as long as a test needs, in processes
that can be signalled.
"""

import os
import signal
import subprocess
import time
import warnings
from pathlib import Path

import pytest
from build_helpers import CLI, HERE, LIBRARY, build_tiny, previous_build, snapshot, start_build, stderr_lines

from minivlm.converters import build as build_module
from minivlm.errors import ConversionError

INTERRUPTED = "error: interrupted by {}; the unfinished build was removed and nothing else was changed"


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


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_a_termination_signal_stops_the_workers_removes_the_partial_build_and_keeps_the_old(signum, tmp_path):
    out = tmp_path / "builds" / "tiny"
    before = previous_build(out)
    proc = start_build(CLI, tmp_path, "--out", str(out), "--force", "--jobs", "2")
    workers = _converting_workers(proc, tmp_path)
    assert any(p.name.startswith(".tiny.partial-") for p in out.parent.iterdir())
    os.kill(proc.pid, signum)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signum, err
    assert stderr_lines(err)[-1] == INTERRUPTED.format(signal.Signals(signum).name)
    assert "Traceback" not in err
    assert _gone(workers)
    assert snapshot(out) == before and sorted(p.name for p in out.parent.iterdir()) == ["tiny"]


def test_ctrl_c_stops_in_seconds_and_a_second_one_during_clean_up_changes_nothing(tmp_path):
    out = tmp_path / "tiny"
    proc = start_build(CLI, tmp_path, "--out", str(out), "--jobs", "2")
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
    assert [line for line in stderr_lines(err) if "error" in line.lower()] == [INTERRUPTED.format("SIGINT")]
    assert _gone(workers)
    assert list(tmp_path.iterdir()) == [tmp_path / "pids"]


def test_sigterm_to_a_library_caller_cleans_up_then_ends_it_as_before(tmp_path):
    out = tmp_path / "tiny"
    before = previous_build(out)
    proc = start_build(LIBRARY, tmp_path, str(out))
    workers = _converting_workers(proc, tmp_path)
    os.kill(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGTERM, err  # killed by the signal, as without the clean-up
    assert _gone(workers)
    assert snapshot(out) == before and sorted(p.name for p in tmp_path.iterdir()) == ["pids", "tiny"]


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
    before = previous_build(out)
    filters = list(warnings.filters)
    started = time.monotonic()
    with pytest.warns(FutureWarning, match="backend warning from ") as warned, \
            pytest.raises(ConversionError, match=r"^a graph failed to convert: ValueError: caption_step has an op no "
                                                 r"backend knows$"):
        build_tiny(tiny_reference, out, force=True, jobs=2)
    assert "backend warning from caption_step" in {str(w.message) for w in warned}
    assert time.monotonic() - started < 100  # the other worker's graph would take 120 s
    assert warnings.filters == filters
    records = {(r.name, r.getMessage()) for r in caplog.records}
    assert ("coremltools", "backend log record from caption_step") in records
    assert ("minivlm.converters.slow_target", "our warning from caption_step") in records
    assert _gone([int(p.name) for p in (tmp_path / "pids").iterdir()])
    assert snapshot(out) == before and sorted(p.name for p in tmp_path.iterdir()) == ["pids", "tiny"]
