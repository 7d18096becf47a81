"""The run folder: new, empty, or a run made with exactly these settings (a resume), recorded in `run.json`."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

from minivlm.converters.atomic import atomic_file
from minivlm.errors import ConfigError, InputError
from minivlm.training.loop import barrier
from minivlm.training.settings import TrainSettings

RUN_FILE = "run.json"  # a run folder's settings, written when the folder is created


def _recorded_settings(workdir: Path) -> dict | None:
    """The settings a run folder was made with; None for a new or empty folder. InputError for a path that is
    not a folder, or a non-empty folder that holds no run (training never writes into a folder it did not make)."""
    if not workdir.exists():
        return None
    if not workdir.is_dir():
        raise InputError(f"{workdir} is a file, not a folder: train into a new or empty folder, or a run folder to resume")
    legacy = sorted(workdir.glob("checkpoint-*/state.json"))  # runs made before the run file existed
    record = workdir / RUN_FILE if (workdir / RUN_FILE).is_file() else legacy[0] if legacy else None
    if record is not None:
        try:
            settings = json.loads(record.read_text())["settings"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise InputError(f"{record} is not a readable run record ({type(e).__name__}: {e})") from None
        if not isinstance(settings, dict):
            raise InputError(f"{record} is not a readable run record (its settings are not a JSON object)")
        return settings
    if next(workdir.iterdir(), None) is None:
        return None
    raise InputError(f"{workdir} is not empty and holds no training run (no {RUN_FILE}): train into a new or empty folder")


def open_run_folder(workdir: Path, settings: TrainSettings, rank: int) -> None:
    """Check that `workdir` is new, empty, or a run with exactly `settings` (a resume); create it and record the
    settings (rank 0). ConfigError naming every differing setting; InputError if the folder cannot be made."""
    wanted = dataclasses.asdict(settings)
    recorded = _recorded_settings(workdir)  # every rank checks, before any rank writes
    if recorded is not None:
        differ = [f"{k} {recorded[k]!r} (this run: {wanted[k]!r})" for k in wanted if k in recorded and recorded[k] != wanted[k]]
        differ += [f"{k} {recorded[k]!r} (not a setting of this version)" for k in recorded if k not in wanted]
        if differ:
            raise ConfigError(f"{workdir} holds a run made with other settings: {'; '.join(differ)}. Resume with the "
                              f"same settings, or start afresh in another folder (--out)")
    barrier()
    if rank == 0 and not (workdir / RUN_FILE).is_file():
        _make_run_folder(workdir, wanted)
    barrier()


def _make_run_folder(workdir: Path, settings: dict) -> None:
    """`workdir` (and missing parents) with its `run.json`, written atomically; on failure, nothing made stays."""
    missing = [p for p in (workdir, *workdir.parents) if not p.exists()]  # inner to outer
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        with atomic_file(workdir / RUN_FILE, "w", encoding="utf-8") as f:
            f.write(json.dumps({"settings": settings}, indent=2))
    except OSError as e:
        if missing:
            shutil.rmtree(missing[-1], ignore_errors=True)  # the outermost folder this call made, nothing else
        raise InputError(f"cannot make the run folder {workdir}: {e.strerror or e}") from None
