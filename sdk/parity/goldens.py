"""Before comparing: the reference must reproduce the goldens stored in the build, or the build was made from
other weights and comparing it with this reference means nothing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from minivlm.converters.tolerances import LIMITS
from minivlm.errors import ArtifactError, ParityError
from .statistics import ErrorStats


def _load_golden(build: Path, golden_dir: str, entry: dict) -> torch.Tensor:
    from minivlm.build_checks import inside

    dtype = np.dtype("bool") if entry["dtype"] == "bool" else np.dtype(entry["dtype"]).newbyteorder("<")
    data = inside(build, f"{golden_dir}/{entry['file']}").read_bytes()
    return torch.from_numpy(np.frombuffer(data, dtype=dtype).reshape(entry["shape"]).copy())


def _golden_calls(build: Path, golden_dir: str, graph_names: tuple[str, ...]
                  ) -> list[tuple[str, str, list[torch.Tensor], dict[str, torch.Tensor]]]:
    """(image, graph, inputs, outputs by name) of every graph call stored in the build's goldens; ArtifactError
    for an index that is not what minivlm-convert writes (or names a graph not in `graph_names`)."""
    from minivlm.build_checks import first_line

    index_path = build / golden_dir / "index.json"
    try:
        index = json.loads(index_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ParityError(f"{index_path} is unreadable ({type(err).__name__}); the build has no usable goldens") from None
    try:
        calls = []
        for image, case in index["cases"].items():
            for graph, graph_calls in case["graphs"].items():
                if graph not in graph_names:
                    raise KeyError(graph)
                for call in graph_calls:
                    calls.append((image, graph, [_load_golden(build, golden_dir, e) for e in call["inputs"].values()],
                                  {name: _load_golden(build, golden_dir, e) for name, e in call["outputs"].items()}))
    except (KeyError, TypeError, ValueError, AttributeError, OSError) as err:
        raise ArtifactError(f"{index_path} is malformed ({type(err).__name__}: {first_line(err)}); rebuild with "
                            f"minivlm-convert") from None
    return calls


@torch.no_grad()
def check_goldens(build: Path, manifest: dict, reference, source: str) -> int:
    """ParityError unless the reference's graphs reproduce the build's stored goldens (within fp32 tolerance):
    otherwise the build was made from other weights, and comparing it with this reference means nothing.
    Returns the number of graph calls checked."""
    limit = LIMITS["FP32_MAX_ABS"]
    modules = reference.pipeline.graphs.modules()
    checked = 0
    for image, graph, inputs, stored in _golden_calls(build, manifest.get("golden_dir", "golden"), tuple(modules)):
        outputs = modules[graph](*inputs)
        for (name, want), got in zip(stored.items(), outputs, strict=True):
            stats = ErrorStats()
            stats.add(want, got, image)
            if stats.shape_mismatch or not limit.holds(stats.relative_max_abs):
                raise ParityError(
                    f"the reference ({source}) is not the model this build was made from: its {graph} output "
                    f"{name} on {image} differs from the build's goldens by {stats.relative_max_abs:.3g} of its "
                    f"peak (expected {limit.describe()}); rebuild, or pass --model with the weights it was built from")
        checked += 1
    return checked
