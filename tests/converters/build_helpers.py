"""Helpers of the build tests in this folder (test_build_folder.py, test_workers.py, test_chatter.py): a build
of the tiny reference, snapshots of a folder, a finished build to replace, and `minivlm-convert` or the library
call in a process of its own with slow_target.py (which converts nothing) on one traced image.

Test modules import it by name, as they import slow_target.
"""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

from minivlm.converters.build import build
from minivlm.converters.targets import resolve_options


def build_tiny(reference, out, **kw):
    """`build` of the tiny reference for ExecuTorch into `out` (with whatever target the test put in place)."""
    return build(reference.pipeline, model_name="minivlm-tiny", source="test", options=resolve_options("executorch"),
                 out=out, **kw)


def snapshot(folder: Path) -> dict[str, str]:
    """The sha256 of every file under `folder`, by POSIX path."""
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def previous_build(folder: Path) -> dict[str, str]:
    """A finished build as a build writes it: every file listed in its manifest (and a later parity report)."""
    (folder / "golden").mkdir(parents=True)
    (folder / "graph.pte").write_bytes(b"previous good build")
    (folder / "golden" / "index.json").write_text("{}")
    files = {rel: hashlib.sha256((folder / rel).read_bytes()).hexdigest() for rel in ("graph.pte", "golden/index.json")}
    (folder / "manifest.json").write_text(json.dumps({"schema_version": 1, "graphs": {}, "files": files}))
    (folder / "parity_report.json").write_text("{}")
    return snapshot(folder)


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


def start_build(code: str, tmp_path: Path, *args: str, seconds: float = 120, **env: str) -> subprocess.Popen:
    """`code` run by a new Python in a session of its own, its graphs taking `seconds` each."""
    pids = tmp_path / "pids"
    pids.mkdir()
    env = {**os.environ, "SLOW_TARGET_SECONDS": str(seconds), "SLOW_TARGET_PIDS": str(pids), **env}
    # A session of its own: a terminal's Ctrl-C reaches its whole process group, workers included.
    return subprocess.Popen([sys.executable, "-c", code, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)


def stderr_lines(text: str) -> list[str]:
    """The lines of `text` that are not blank."""
    return [line for line in text.splitlines() if line.strip()]
