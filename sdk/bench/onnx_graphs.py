"""ONNX Runtime, the peer every build is compared with: the eager graphs exported to ONNX and run by ORT's CPU
execution provider in fp32.

The graphs are exported with PyTorch's TorchScript-based exporter (`torch.onnx.export(..., dynamo=False)`) on the
same real inputs every runtime is timed on, with the graphs' own tensor names. ORT applies its default graph
optimisations (`ORT_ENABLE_ALL`) when a session is created; a session runs with `intra_op_num_threads` = the
thread count being measured and one inter-op thread. `onnxruntime` and `onnx` are the `bench` extra.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Callable, Mapping

import numpy as np
import torch

from minivlm.errors import ConfigError


def _require_onnx() -> None:
    from importlib.util import find_spec

    for module in ("onnx", "onnxruntime"):
        if find_spec(module) is None:
            raise ConfigError(f"`minivlm bench` needs {module} to run the ONNX Runtime peer: pip install 'minivlm[bench]'")


def export_graphs(graphs: Mapping[str, torch.nn.Module], inputs: Mapping[str, tuple[torch.Tensor, ...]],
                  folder: Path) -> dict[str, Path]:
    """Export each eager graph module to `<folder>/<graph>.onnx`, traced on its real `inputs`; returns the files."""
    _require_onnx()
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for name, module in graphs.items():
        path = folder / f"{name}.onnx"
        # The exporter runs the module in eval mode and then sets the whole tree to the mode of the top module
        # alone; a graph wrapper made after `model.eval()` is in training mode, so its model's BatchNorm layers
        # would come back training. Every submodule gets its own mode back.
        modes = [(m, m.training) for m in module.modules()]
        try:
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")  # the exporter's deprecation and tracer warnings say nothing about us
                torch.onnx.export(module, tuple(inputs[name]), str(path), dynamo=False,
                                  input_names=list(module.input_names), output_names=list(module.output_names))
        finally:
            for m, training in modes:
                m.training = training
        files[name] = path
    return files


class OrtGraph:
    """One exported graph in an ONNX Runtime session, as a callable on torch tensors returning a tuple (the
    signature of the eager graph, so a family's `assemble` can drive it)."""

    def __init__(self, path: Path, threads: int, input_names: tuple[str, ...], output_names: tuple[str, ...]) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self._session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
        kept = {i.name for i in self._session.get_inputs()}  # the exporter drops inputs a graph never reads
        self._inputs = [(k, name in kept) for k, name in enumerate(input_names)]
        self._names = list(input_names)
        self._outputs = list(output_names)

    def __call__(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        feeds = {self._names[k]: np.ascontiguousarray(tensors[k].detach().cpu().numpy()) for k, keep in self._inputs if keep}
        return tuple(torch.from_numpy(o) for o in self._session.run(self._outputs, feeds))


def ort_graphs(files: Mapping[str, Path], io_names: Mapping[str, tuple[list[str], list[str]]],
               threads: int) -> dict[str, Callable]:
    """A session per exported graph; `io_names` maps each graph to its (input, output) names."""
    _require_onnx()
    return {name: OrtGraph(Path(files[name]), threads, tuple(io_names[name][0]), tuple(io_names[name][1])) for name in files}


def ort_version() -> str | None:
    """The installed onnxruntime's version, or None."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    return ort.__version__


__all__ = ["OrtGraph", "export_graphs", "ort_graphs", "ort_version"]
