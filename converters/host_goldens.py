"""Host goldens: tests/golden/, the format of a build's golden/ without graph calls (docs/ARCHITECTURE.md §7).

The host steps of the bundled model on the golden images, their caption decodes, small preprocessing cases,
the anchors, the tokenizer cases, a host-only manifest.json and vocabularies.json: what the native core's
ctest and the demo apps' tests replay. `scripts/update_goldens.py` runs `update_host_goldens`.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from minivlm.python_ref.errors import ConversionError
from minivlm.python_ref.pipeline import Pipeline
from minivlm.python_ref.preprocess import preprocess
from minivlm.python_ref.tokenizer import SPECIAL_TOKENS

from .build_folder import atomic_directory, foreign_entry
from .caption_goldens import caption_decoding
from .goldens import INDEX_FORMAT, INDEX_VERSION, GoldenWriter, tokenizer_cases, traced_letterbox
from .manifest import SCHEMA_VERSION, VOCAB_FILE
from .samples import Trace, golden_images, trace

HOST_MANIFEST = "manifest.json"
HOST_VOCABULARIES = "vocabularies.json"
# Letterbox cases for tests/golden/: crops of the golden images (by index into the traced images) into a small
# square, so the files stay small: downscale, both orientations, upscale, the no-resize path, 1-pixel edges,
# and a larger crop that depends on the source index's rounding.
# (image, top, left, height, width, size)
PREPROCESS_CASES = (
    (0, 96, 176, 60, 80, 48),
    (1, 150, 200, 70, 36, 48),
    (2, 60, 60, 24, 17, 48),
    (3, 100, 40, 48, 30, 48),
    (0, 200, 200, 1, 1, 48),
    (1, 30, 10, 1, 90, 48),
    (2, 128, 128, 3, 5, 48),
    # Found by search: the one crop of the golden images where rounding torch's fused `scale * (dst + 0.5) - 0.5`
    # twice moves the output by 2.7e-5 (the FMA form: 5e-7); the other cases cannot tell the two apart.
    (3, 34, 5, 146, 119, 78),
)


def host_manifest(pipeline: Pipeline, model_name: str) -> dict:
    """What the native core reads from a build's manifest.json, for host-only goldens (no graphs)."""
    tok = pipeline.tokenizer
    ids = {"[PAD]": tok.pad_id, "[UNK]": tok.unk_id, "[CLS]": tok.cls_id, "[SEP]": tok.sep_id, "[MASK]": tok.mask_id}
    return {
        "schema_version": SCHEMA_VERSION,
        "note": "host-step goldens only (no graphs): written by scripts/update_goldens.py",
        "model": {"name": model_name, "preset": pipeline.cfg.name, "config": dataclasses.asdict(pipeline.cfg)},
        "tokenizer": {"vocab_file": VOCAB_FILE, "vocab_size": tok.vocab_size,
                      "specials": {t: ids[t] for t in SPECIAL_TOKENS}},
        "vocabularies_file": HOST_VOCABULARIES,
    }


def write_host_goldens(pipeline: Pipeline, traces: list[Trace], folder: Path, model_name: str) -> int:
    """tests/golden/: host steps only, every file small. Returns the bytes of array data written."""
    folder.mkdir(parents=True, exist_ok=True)
    w = GoldenWriter(folder)
    tee = pipeline.cfg.tee
    cases = {}
    for tr in traces:
        name = tr.sample.name
        steps = {k: v for k, v in tr.steps.items() if k in ("proposals", "region_selection", "detections",
                                                             "caption_packing", "question_packing", "greedy_caption")}
        steps["proposals"] = {"inputs": {k: v for k, v in steps["proposals"]["inputs"].items() if k != "anchors"},
                              "outputs": steps["proposals"]["outputs"]}  # the anchors are stored once
        host = {step: {io: w.group(f"{name}/{step}.{io}", values[io]) for io in ("inputs", "outputs")}
                for step, values in steps.items()}
        cases[name] = {"source": tr.sample.source, "height": int(tr.sample.image.shape[0]),
                       "width": int(tr.sample.image.shape[1]), "letterbox": traced_letterbox(tr), "host_steps": host,
                       "caption_decoding": caption_decoding(tr, pipeline, w.group)}
    pre = []
    for i, (image, top, left, h, wd, size) in enumerate(PREPROCESS_CASES):
        crop = np.ascontiguousarray(traces[image].sample.image[top:top + h, left:left + wd])
        if crop.shape != (h, wd, 3):
            raise ConversionError(f"preprocess case {i} crops {crop.shape} from {traces[image].sample.name}")
        pixels, box = preprocess(crop, size, tee.pixel_mean, tee.pixel_std)
        pre.append({"source": f"{traces[image].sample.name}[{top}:{top + h}, {left}:{left + wd}]", "size": size,
                    "image": w.entry(f"preprocess/{i}.image.bin", torch.from_numpy(crop)),
                    "pixels": w.entry(f"preprocess/{i}.pixels.bin", pixels),
                    "letterbox": dataclasses.asdict(box)})
    index = {
        "version": INDEX_VERSION,
        "format": INDEX_FORMAT,
        "model": model_name,
        "images": [tr.sample.name for tr in traces],
        "anchors": w.entry("anchors.bin", pipeline.anchors),
        "level_sizes": list(pipeline.level_sizes),
        "preprocess_cases": pre,
        "cases": cases,
        "tokenizer": tokenizer_cases(pipeline.tokenizer),
    }
    (folder / "index.json").write_text(json.dumps(index, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    (folder / HOST_MANIFEST).write_text(json.dumps(host_manifest(pipeline, model_name), indent=1) + "\n", encoding="utf-8")
    (folder / ".gitattributes").write_text("*.bin binary\n", encoding="utf-8")  # never diffed or end-of-line converted
    vocab = dataclasses.asdict(pipeline.vocab)
    (folder / HOST_VOCABULARIES).write_text(json.dumps(vocab, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return w.bytes


def update_host_goldens(pipeline: Pipeline, model_name: str, folder: Path) -> int:
    """Trace `pipeline` on the golden images (2 scikit-image photos, 2 demo scenes) and replace `folder` with
    their host goldens, atomically (see `build_folder.atomic_directory`: a sibling temporary folder renamed into
    place). An existing `folder` is replaced only if it holds host goldens and nothing else. Returns the
    array bytes."""
    with atomic_directory(Path(folder), force=True, replaceable=_not_host_goldens) as tmp:  # refuses before tracing
        traces = [trace(pipeline, s) for s in golden_images()]
        written = write_host_goldens(pipeline, traces, tmp, model_name)
    return written


def _not_host_goldens(folder: Path) -> str | None:
    """Why `update_host_goldens` may not replace `folder`, or None: it may if it is empty, or if every file in it
    is one that index.json names or one of the fixed files `write_host_goldens` writes."""
    if not any(folder.iterdir()):
        return None
    try:
        index = json.loads((folder / "index.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return f"{folder} is not a host goldens folder (no readable index.json); nothing was touched"
    listed = set(_files_named(index)) | {"index.json", HOST_MANIFEST, HOST_VOCABULARIES, ".gitattributes"}
    first = foreign_entry(folder, listed)
    if first is None:
        return None
    return f"{folder} is not only host goldens ({first} is not named in its index.json); nothing was touched"


def _files_named(value: Any) -> list[str]:
    """Every `"file"` entry anywhere in a goldens index."""
    if isinstance(value, dict):
        own = [value["file"]] if isinstance(value.get("file"), str) else []
        return own + [f for v in value.values() for f in _files_named(v)]
    if isinstance(value, list):
        return [f for v in value for f in _files_named(v)]
    return []


__all__ = ["HOST_MANIFEST", "HOST_VOCABULARIES", "PREPROCESS_CASES", "host_manifest", "update_host_goldens",
           "write_host_goldens"]
