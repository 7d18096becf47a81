"""Following a build: progress callbacks, and the report of a finished build."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .specs import GraphBuild
from .targets import BuildOptions


class Progress:
    """Callbacks to follow a build; the default does nothing (library code never prints)."""

    def stage(self, message: str) -> None:
        """A build-wide stage starts (tracing, goldens, manifest)."""

    def graph_started(self, name: str, steps: tuple[str, ...]) -> None:
        """Conversion of one graph starts; it will report `steps` in this order."""

    def graph_step(self, name: str, step: str) -> None:
        """One of the graph's steps starts."""

    def graph_done(self, result: GraphBuild) -> None:
        """The graph is written."""


@dataclass
class BuildReport:
    """A finished build: where it is, what it holds, and how long it took."""

    path: Path
    options: BuildOptions
    model: str
    graphs: list[GraphBuild]
    seconds: float
    golden_bytes: int
    manifest: dict


__all__ = ["BuildReport", "Progress"]
