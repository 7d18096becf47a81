"""The build manifest's format: file names, schema, checksums, and what a build needs to run.

`manifest.json` describes a build folder completely (docs/ARCHITECTURE.md §6): the model and
its config, the target and precision, every graph's file and I/O, host pre- and post-processing, the
tolerances, the tools' versions and the sha256 of every file. `manifest_sha256` is the manifest's own checksum.
This module is what readers of a build (`minivlm.build_checks`, `minivlm.runtime`, parity) import; writing one
is `build.py`.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
MANIFEST_DIGEST = "manifest_sha256"  # the manifest's own checksum, over every other entry (see manifest_digest)
VOCAB_FILE = "vocab.txt"
VOCABULARIES_FILE = "vocabularies.json"
GOLDEN_DIR = "golden"
# Packages whose versions every manifest records.
# Each target's exporter is among them (executorch, ai-edge-litert, coremltools, coreai-core): the apps check that
# their runtime can run what it wrote (mvlm_build_verify in sdk/native).
TOOLS = ("minivlm", "torch", "executorch", "coremltools", "litert-torch", "ai-edge-litert", "ai-edge-quantizer",
         "torchao", "coreai-core", "coreai-torch", "numpy")


# Files that tools add to a finished build (`minivlm parity` writes its report, atomically through a
# `.parity_report.json.*` temporary file): `--force` may replace a build that holds them.
ADDED_LATER = ("parity_report.json",)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def manifest_digest(manifest: dict) -> str:
    """sha256 of the manifest's canonical JSON (sorted keys, no spaces) without its `manifest_sha256` entry:
    stored in the manifest, it makes an edit of manifest.json after the build as visible as an edit of a file."""
    body = json.loads(json.dumps({k: v for k, v in manifest.items() if k != MANIFEST_DIGEST}))  # as read back
    text = json.dumps(body, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def file_hashes(folder: Path) -> dict[str, str]:
    """sha256 of every file under `folder` except the manifest, by POSIX relative path, sorted."""
    files = (p for p in sorted(folder.rglob("*")) if p.is_file())
    return {p.relative_to(folder).as_posix(): sha256_file(p) for p in files if p.relative_to(folder).as_posix() != MANIFEST}


# Key/value stacks are (L, B, heads, T, head_dim): their batch axis is 1, every other tensor's is 0.
KV_STACKS = frozenset({"prefix_keys", "prefix_values", "cache_keys", "cache_values", "new_keys", "new_values"})


def batch_axis(tensor: str) -> int:
    """The batch axis of a graph tensor, by name (each manifest I/O entry records it as `batch_axis`)."""
    return 1 if tensor in KV_STACKS else 0


def needs_macos(manifest: dict) -> bool:
    """Whether running the build needs Core ML (macOS): a Core ML build, or ExecuTorch with the Core ML delegate."""
    return manifest["target"] == "coreml" or (manifest["target"] == "executorch" and manifest.get("delegate") == "coreml")


__all__ = ["ADDED_LATER", "GOLDEN_DIR", "KV_STACKS", "MANIFEST", "MANIFEST_DIGEST", "SCHEMA_VERSION", "TOOLS", "VOCABULARIES_FILE",
           "VOCAB_FILE", "batch_axis", "file_hashes", "manifest_digest", "needs_macos", "sha256_file"]
