"""Writing weights and training checkpoints, all or nothing (through `minivlm.converters.atomic`).

`save_weights` writes the safetensors files that `minivlm.python_ref.weights.load_weights` reads back
strictly; a checkpoint is a folder of weights, optimizer state and progress, swapped in as a whole.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from minivlm.converters.atomic import atomic_file, atomic_folder, atomic_path
from minivlm.errors import InputError
from minivlm.python_ref.weights import load_weights


def save_weights(module: nn.Module, path: str | Path, metadata: Mapping[str, str] | None = None) -> None:
    """Write `module.state_dict()` to a safetensors file, atomically: a crash never leaves a truncated file
    under `path`, and an existing file stays as it was unless the new one is complete."""
    meta = dict(metadata or {})
    bad = [k for k, v in meta.items() if not isinstance(k, str) or not isinstance(v, str)]
    if bad:
        raise InputError(f"metadata must map str to str; bad entry {bad[0]!r}")
    # Cloned so that tied or view-sharing tensors serialise (safetensors refuses shared storage).
    state = {k: v.detach().clone().contiguous() for k, v in module.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata={"format": "pt", **meta})


def save_checkpoint(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> None:
    """A checkpoint folder (weights as safetensors, optimizer state as a tensors-only torch file, progress as
    JSON) that replaces `path` only when complete."""
    with atomic_folder(path) as tmp:
        save_weights(model, tmp / "model.safetensors", {"state": json.dumps(state)})
        with atomic_path(tmp / "optimizer.pt") as file:
            torch.save(optimizer.state_dict(), file)
        with atomic_file(tmp / "state.json", "w", encoding="utf-8") as f:
            f.write(json.dumps(state, indent=2))


def load_checkpoint(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer | None) -> dict:
    """Load a `save_checkpoint` folder into `model` (and `optimizer`); returns its progress state."""
    load_weights(model, path / "model.safetensors")
    if optimizer is not None and (path / "optimizer.pt").exists():
        optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=True))
    return json.loads((path / "state.json").read_text())


__all__ = ["load_checkpoint", "save_checkpoint", "save_weights"]
