"""What a saved Core AI asset declares, read without running it: its functions and each one's inputs and outputs.

A Core AI build is one `.aimodel` asset, `ASSET`, with one function per graph (docs/ARCHITECTURE.md §6).
`coreai.authoring.AIModelAsset.summary` reads the asset's program and lists each function's tensors as text such
as `NDArray (Int32, 1 × 2)`; this module turns that into (name, shape, dtype) tuples, the form the other targets'
readers return. The converter checks the asset it wrote with it, and so do the SDK's build checks and parity.
coreai is imported inside functions only.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

ASSET = "model.aimodel"

# `NDArray (Float32, 4 × 1 × 4 × 34 × 32)`: the summary's description of one tensor.
_TENSOR = re.compile(r"NDArray \((\w+), ([\d × ]+)\)")


def quiet_import() -> None:
    """Import coreai_torch without its version notice (it warns that it "has only been validated with
    torch<=2.13.0" when torch's version carries a local suffix, `2.13.0+cpu`, which is the validated release), and
    its compression ops: `torch.ops.coreai.constexpr_blockwise_shift_scale` is registered by the module that
    defines it, which `import coreai_torch` does not import."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="coreai-torch has only been validated")
        import coreai_torch  # noqa: F401
        import coreai_torch._compression.custom_layers  # noqa: F401


def parse_tensor(text: str) -> tuple[tuple[int, ...], str]:
    """(shape, dtype such as "int32") of a summary's tensor text; ValueError for any other text."""
    match = _TENSOR.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"unrecognised tensor description {text!r}; expected 'NDArray (<Dtype>, <d0> × <d1> ...)'")
    return tuple(int(d) for d in match.group(2).split("×")), match.group(1).lower()


def summary(path: Path):
    """The asset's summary (function names and tensors), read from its program without compiling it."""
    from coreai.authoring import AIModelAsset

    return AIModelAsset.load(path).summary(include_statistics=False)


def function_io(info, function: str) -> dict[str, list[tuple[str, tuple[int, ...], str]]] | None:
    """The inputs and outputs of `function` in an asset's `summary`, in the function's order; None if it has no
    function of that name."""
    if function not in info.function_names:
        return None
    return {io: [(name, *parse_tensor(text)) for name, text in tensors]
            for io, tensors in (("inputs", info.function_inputs(function)), ("outputs", info.function_outputs(function)))}


__all__ = ["ASSET", "function_io", "parse_tensor", "quiet_import", "summary"]
