"""A build's graph I/O, checked against the model its config describes and against what each graph's runtime
reports of its file: names, order, shapes, dtypes and batch axes (`sdk/build_checks.py` runs both before a build
runs)."""

from __future__ import annotations

import functools

import torch

from minivlm.converters.manifest import MANIFEST, batch_axis
from minivlm.errors import ArtifactError
from minivlm.python_ref.families import family_of

TensorIO = tuple[str, tuple[int, ...], str]  # (name, shape, dtype)


@functools.lru_cache(maxsize=4)
def model_graph_io(cfg) -> dict[str, tuple[tuple[TensorIO, ...], tuple[TensorIO, ...]]]:
    """Each graph's inputs and outputs (name, shape, dtype, in order) at batch 1 (a `Family.batched` graph: at its
    batch), as python_ref's model of `cfg` (of any family) defines them: each graph runs on its example inputs on the meta device (shapes only, no
    weights, about a second)."""
    def io(names: tuple[str, ...], tensors) -> tuple[TensorIO, ...]:
        return tuple((n, tuple(t.shape), str(t.dtype).removeprefix("torch.")) for n, t in zip(names, tensors, strict=True))

    family = family_of(cfg)
    with torch.device("meta"), torch.no_grad():
        graphs = family.graphs(family.model(cfg).eval())
        batches = {name: (name, 1) for name in graphs} | dict(family.batched)
        inputs = {name: graphs[graph].example_inputs(batch) for name, (graph, batch) in batches.items()}
        return {name: (io(graphs[graph].input_names, inputs[name]), io(graphs[graph].output_names, graphs[graph](*inputs[name])))
                for name, (graph, _) in batches.items()}


def _shape(shape) -> str:
    return str(tuple(shape))


def check_model_io(manifest: dict, cfg) -> None:
    """ArtifactError naming the graph, the tensor and both values where the manifest's inputs or outputs (names,
    order, shapes, dtypes, batch axes) differ from those of the model its config describes."""
    preset = manifest["model"]["preset"]
    for name, want in model_graph_io(cfg).items():
        if name not in manifest["graphs"]:  # an optional batched graph (check_manifest requires the others)
            continue
        entry = manifest["graphs"][name]
        for io, expected in zip(("inputs", "outputs"), want):
            listed = [t["name"] for t in entry[io]]
            if listed != [n for n, _, _ in expected]:
                raise ArtifactError(f"graph {name} {io} are {listed} in {MANIFEST}; the {preset} model's are "
                                    f"{[n for n, _, _ in expected]}")
            for t, (tensor, shape, dtype) in zip(entry[io], expected):
                axis = batch_axis(tensor)
                for what, got, model in (("shape", _shape(t["shape"]), _shape(shape)), ("dtype", t["dtype"], dtype),
                                         ("batch axis", t["batch_axis"], axis)):
                    if got != model:
                        raise ArtifactError(f"graph {name} {io[:-1]} {tensor} has {what} {got} in {MANIFEST}; "
                                            f"the {preset} model's is {model}")


def check_runtime_io(name: str, entry: dict, file: str, have: dict[str, list[tuple[str | None, tuple, str]]]) -> None:
    """ArtifactError naming the graph, the tensor and both values where what the runtime reports of the graph file
    (`have[io]`: runtime name, or None where the runtime names none, shape, dtype, in the manifest's order)
    differs from the manifest."""
    for io in ("inputs", "outputs"):
        if len(have[io]) != len(entry[io]):
            raise ArtifactError(f"graph {name}: {file} has {len(have[io])} {io}, {MANIFEST} lists {len(entry[io])}")
        for t, (runtime_name, shape, dtype) in zip(entry[io], have[io]):
            for what, listed, got in (("runtime name", t["runtime_name"], runtime_name),
                                      ("shape", _shape(t["shape"]), _shape(shape)), ("runtime dtype", t["runtime_dtype"], dtype)):
                if got is not None and got != listed:
                    raise ArtifactError(f"graph {name} {io[:-1]} {t['name']} has {what} {listed} in {MANIFEST}; "
                                        f"{file} itself has {got}")



__all__ = ["TensorIO", "check_model_io", "check_runtime_io", "model_graph_io"]
