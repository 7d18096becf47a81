"""Core AI builds run through `coreai.runtime`: one loaded asset per build, a function per graph.

coreai-core's runtime is asynchronous (`async with asset.executable() as model`, `await function(inputs)`).
`CoreAIModel` keeps one event loop on a thread of its own, so the synchronous runners of `minivlm.runtime` can
call it from any thread, including one whose own event loop is running (a notebook). The asset is loaded once
and serves every graph of the build. On Linux the runtime compiles the asset for the CPU into a temporary folder
that lives as long as the model; on macOS with the system's Core AI, the manifest's preferred compute unit is
passed as specialization options.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import weakref
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from minivlm.build_checks import first_line, load_error
from minivlm.converters.coreai_asset import quiet_import
from minivlm.errors import ArtifactError

# The manifest's compute unit preference -> coreai.runtime.ComputeUnitKind (None: the runtime's default choice).
COMPUTE_UNIT_KINDS = {"default": None, "neural_engine": "neural_engine", "gpu": "gpu", "cpu_only": "cpu"}


@contextlib.contextmanager
def _native_stderr_silenced() -> Iterator[None]:
    """The runtime writes a line per loaded function to the process's stderr from native code: hide it."""
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _specialization(compute_units: str):
    """Specialization options for the preferred compute unit where the platform has them (macOS), else None."""
    from coreai.runtime import SpecializationOptions

    if not SpecializationOptions.is_supported():
        return None
    kind = COMPUTE_UNIT_KINDS[compute_units]
    if kind is None:
        return SpecializationOptions.default()
    if kind == "cpu":
        return SpecializationOptions.cpu_only()
    from coreai.runtime import ComputeUnitKind

    return SpecializationOptions.from_preferred_compute_unit_kind(getattr(ComputeUnitKind, kind)())


class _Loop:
    """An asyncio event loop on a daemon thread; `run` waits for a coroutine on it from any thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="coreai-runtime", daemon=True)
        self.thread.start()

    def run(self, coroutine) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.close()


def _release(loop: _Loop, context) -> None:
    """Close the loaded model (its compiled folder goes with it) and stop its loop."""
    with contextlib.suppress(Exception):
        loop.run(context.__aexit__(None, None, None))
    loop.stop()


class CoreAIModel:
    """A Core AI asset loaded once: `function(name)` gives a function, `run(function, feeds)` calls it with numpy
    arrays by input name and returns numpy arrays by output name. ArtifactError if the asset cannot load."""

    def __init__(self, path: Path, compute_units: str = "default") -> None:
        quiet_import()
        from coreai.authoring import AIModelAsset

        self.path = path
        self._loop = _Loop()
        try:
            self._context = AIModelAsset.load(path).executable(_specialization(compute_units))
            self._model = self._loop.run(self._context.__aenter__())
        except Exception as err:  # the native loader raises RuntimeError for a corrupt or truncated asset
            self._loop.stop()
            raise load_error(path, "coreai", err) from None
        self._finalizer = weakref.finalize(self, _release, self._loop, self._context)

    def function(self, name: str):
        try:
            with _native_stderr_silenced():
                return self._model.load_function(name)
        except Exception as err:  # KeyError for a function the asset lacks, RuntimeError from the native side
            raise ArtifactError(f"{self.path.name}: coreai cannot load function {name!r} ({first_line(err)})") from None

    def run(self, function, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from coreai.runtime import NDArray

        async def call() -> dict[str, np.ndarray]:
            outputs = await function({name: NDArray(array) for name, array in feeds.items()})
            return {name: np.array(value.numpy()) for name, value in outputs.items()}

        return self._loop.run(call())

    def close(self) -> None:
        self._finalizer()


__all__ = ["COMPUTE_UNIT_KINDS", "CoreAIModel"]
