"""What a saved Core ML package declares, read from its spec: its functions and each one's inputs and outputs.

A Core ML build is one multifunction ML program, `PACKAGE`, with one function per graph (docs/ARCHITECTURE.md
§6). Reading the spec needs coremltools but not Core ML, so it works on Linux: the converter checks the package it
wrote with it, and so do the SDK's build checks and parity. coremltools is imported inside functions only.
"""

from __future__ import annotations

PACKAGE = "model.mlpackage"

def function_names(spec) -> list[str]:
    """The functions of a multifunction model spec, in the spec's order (empty for a single-function model)."""
    return [f.name for f in spec.description.functions]


def function_io(spec, function: str) -> dict[str, list[tuple[str, tuple[int, ...], str]]] | None:
    """The inputs and outputs of `function` in a multifunction model spec, in the spec's order; None if the spec
    has no function of that name (a single-function model has none)."""
    from coremltools.proto.FeatureTypes_pb2 import ArrayFeatureType

    found = [f for f in spec.description.functions if f.name == function]
    if not found:
        return None

    def features(items) -> list[tuple[str, tuple[int, ...], str]]:  # (name, shape, dtype such as "float32")
        return [(f.name, tuple(f.type.multiArrayType.shape),
                 ArrayFeatureType.ArrayDataType.Name(f.type.multiArrayType.dataType).lower()) for f in items]

    return {"inputs": features(found[0].input), "outputs": features(found[0].output)}


__all__ = ["PACKAGE", "function_io", "function_names"]
