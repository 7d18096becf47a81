"""Running a pipeline with every graph call recorded: what goldens, calibration and parity all compare.

`recorded(pipeline, calls)` is the same pipeline (same host code, same graphs) whose graphs append the
(inputs, outputs) of every call, as detached copies, to `calls[graph name]` in call order.
"""

from __future__ import annotations

from typing import Callable

import torch

from minivlm.python_ref.families import family_of

# A graph call as it was made: (inputs, outputs), detached copies.
Call = tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]
# Runs one graph call in place of `graph(*args)` (to measure it, say): (graph name, graph, args) -> outputs.
Runner = Callable[[str, Callable, tuple[torch.Tensor, ...]], tuple[torch.Tensor, ...]]


def recorded(pipeline, calls: dict[str, list[Call]], run: Runner | None = None):
    """`pipeline` (of any family) with every graph call appended to `calls[name]`; `run`, if given, makes each
    call. The copy is assembled by the pipeline's family from the wrapped graphs, so it runs the same host code."""

    def wrap(name: str, graph: Callable) -> Callable:
        def call(*args: torch.Tensor) -> tuple[torch.Tensor, ...]:
            outputs = graph(*args) if run is None else run(name, graph, args)
            calls.setdefault(name, []).append((tuple(a.detach().clone() for a in args),
                                               tuple(o.detach().clone() for o in outputs)))
            return outputs

        return call

    wrapped = {name: wrap(name, graph) for name, graph in pipeline.graphs.modules().items()}
    return family_of(pipeline.cfg).assemble(pipeline.cfg, pipeline.tokenizer, pipeline.vocab, wrapped)


__all__ = ["Call", "Runner", "recorded"]
