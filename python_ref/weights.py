"""Strict safetensors loading for every model: a file is checked (header, size, finite values) before anything
is read into a module, and loads only if its keys, shapes and dtypes are exactly the module's.
(The SDK writes weights with `minivlm.checkpoints.save_weights`; upstream checkpoints in other layouts are
renamed by the key maps of `key_maps.py` and `upstream_weights.py`.)
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from torch import nn

from .errors import WeightsError

SHOW_KEYS = 4  # offending keys named in one error line; the count says how many more


def listed_keys(keys: list[str] | tuple[str, ...]) -> str:
    """The first `SHOW_KEYS` of `keys`, and how many more there are, for a one-line error."""
    shown = ", ".join(keys[:SHOW_KEYS])
    return f"{shown}, … {len(keys) - SHOW_KEYS} more" if len(keys) > SHOW_KEYS else shown


def _header_problem(path: Path) -> str | None:
    """Why `path` cannot be a safetensors file, judged from its first bytes and header alone (cheap), or None.

    A safetensors file is an 8-byte little-endian header length, a JSON header, then the tensor bytes the
    header's `data_offsets` describe; anything else gets a message saying what it is instead."""
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(9)
        if size == 0:
            return "it is empty (0 bytes)"
        looks_safetensors = size >= 9 and head[8:9] == b"{"  # a header length whose low byte is 0x80 is fine
        if not looks_safetensors and (head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"):
            kind = "a zip archive, as torch.save writes" if head[:1] == b"P" else "a Python pickle"
            return f"it is {kind}; pickled checkpoints are never loaded, since unpickling can run arbitrary code"
        if size < 9 or head[8:9] != b"{":
            return "it does not start with a safetensors header"
        length = int.from_bytes(head[:8], "little")
        if 8 + length > size:
            return f"it is truncated or not safetensors: its header claims {length} bytes, the file has {size}"
        f.seek(8)
        try:
            header = json.loads(f.read(length))
            end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
        except (ValueError, TypeError, KeyError, IndexError, AttributeError):
            return "its header is not a safetensors header"
    if 8 + length + end != size:
        return f"it is truncated or damaged: its header describes {8 + length + end} bytes, the file has {size}"
    return None


def _checked_path(path: Path) -> None:
    if path.is_dir():
        raise WeightsError(f"{path} is a directory, not a weights file (a .safetensors file)")
    if not path.is_file():
        raise WeightsError(f"no weights file at {path}")
    try:
        problem = _header_problem(path)
    except OSError as e:
        raise WeightsError(f"{path} cannot be read: {e.strerror}") from None
    if problem:
        raise WeightsError(f"{path} is not a safetensors file: {problem}")


def _non_finite(tensor: torch.Tensor) -> int:
    """How many NaN/inf values `tensor` holds (0 for integer tensors). NumPy, not torch: on a busy machine
    torch's threaded kernels made this scan 10-100x slower (a few ms for the 22 MB demo weights in NumPy)."""
    if not tensor.is_floating_point():
        return 0
    values = (tensor.float() if tensor.dtype == torch.bfloat16 else tensor).numpy()
    finite = np.isfinite(values)
    return 0 if finite.all() else int(finite.size - np.count_nonzero(finite))


def read_metadata(path: str | Path) -> dict[str, str]:
    """The metadata of a safetensors file, without reading its tensors; WeightsError as `read_safetensors`."""
    path = Path(path)
    _checked_path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except (OSError, SafetensorError) as e:
        raise WeightsError(f"{path} is not a readable safetensors file: {str(e).splitlines()[0]}") from None


def read_safetensors(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, metadata) of a safetensors file; WeightsError if it is missing, not safetensors, truncated,
    or holds a non-finite value (a diverged run's NaNs would otherwise load and silently answer nonsense)."""
    path = Path(path)
    _checked_path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            tensors, metadata = {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})
    except (OSError, SafetensorError) as e:
        raise WeightsError(f"{path} is not a readable safetensors file: {str(e).splitlines()[0]}") from None
    bad = {k: n for k in sorted(tensors) if (n := _non_finite(tensors[k]))}
    if bad:
        first = next(iter(bad))
        more = f"; {len(bad) - 1} more tensors hold {sum(bad.values()) - bad[first]} more" if len(bad) > 1 else ""
        raise WeightsError(f"{path} holds non-finite weights: {first} has {bad[first]} NaN/inf values "
                           f"of {tensors[first].numel()}{more}")
    return tensors, metadata


def load_weights(module: nn.Module, path: str | Path) -> dict[str, str]:
    """Load a file written by `save_weights` into `module`, strictly: same keys, shapes and dtypes.
    Returns the file's metadata. Nothing is loaded if anything differs."""
    state, metadata = read_safetensors(path)
    expected = module.state_dict()
    unused = sorted(set(state) - set(expected))
    missing = sorted(set(expected) - set(state))
    problems = []
    if unused:
        problems.append(f"{len(unused)} unexpected keys ({listed_keys(unused)})")
    if missing:
        problems.append(f"{len(missing)} missing keys ({listed_keys(missing)})")
    for k in sorted(set(state) & set(expected)):
        a, b = state[k], expected[k]
        if a.shape != b.shape or a.dtype != b.dtype:
            file_side, model_side = f"{tuple(a.shape)} {a.dtype}", f"{tuple(b.shape)} {b.dtype}"
            problems.append(f"{k} is {file_side} in the file, the model needs {model_side}")
            break
    if problems:
        raise WeightsError(f"{path} does not match {type(module).__name__}: " + "; ".join(problems))
    module.load_state_dict(state, strict=True)
    return metadata


def state_sha256(module: nn.Module) -> str:
    """sha256 of `module`'s state dict: every entry by sorted key, with its dtype, shape and raw bytes (a tied
    weight counts once per key). Two modules have the same digest exactly when their states are equal bit for
    bit, which is how a build from random weights proves that re-created weights are the ones it came from."""
    digest = hashlib.sha256()
    for key, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{key}|{str(t.dtype).removeprefix('torch.')}|{tuple(t.shape)}\n".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


__all__ = ["SHOW_KEYS", "listed_keys", "load_weights", "read_metadata", "read_safetensors", "state_sha256"]
