"""Goldens: the reference's inputs and outputs of every graph and host step, for on-device replay
(docs/ARCHITECTURE.md §7).

Layout inside a build:
    golden/index.json                       what every file holds (dtype, shape), and inline JSON values
    golden/<image>/<step>.<io>.<name>.bin   one raw little-endian, C-order array per tensor
Graph calls are stored once per image, or as many as the family's `golden_calls` says (MiniVLM's
`caption_step`: its first `minivlm_family.GOLDEN_STEP_CALLS` calls, the second with a non-empty cache), so a
build's goldens stay a few MB for the demo model. A family may add entries per image (`CASE_ENTRIES`): MiniVLM's letterbox and its whole caption
decode, stored compactly (`caption_decoding`, computed and checked by `caption_goldens.py`).

This module holds the writer and a build's `write_goldens`; `host_goldens.py` writes the same format without
graph calls, for tests/golden/.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from minivlm.python_ref.families import family_of
from minivlm.python_ref.tokenizer import Tokenizer

from .caption_goldens import Store, caption_decoding
from .samples import Trace

INDEX_VERSION = 2  # 2: per-image letterbox and caption_decoding
INDEX_FORMAT = "one raw little-endian C-order array per file; dtype and shape listed here; JSON values inline"
# Strings whose ids a native tokenizer port must reproduce: case, accents, punctuation, CJK, emoji, specials
# typed by a user, a word longer than 100 characters, whitespace runs and the empty string.
TOKENIZER_CASES = (
    "how many shapes are there?",
    "What COLOR is the   triangle?!",
    "Naïve café, résumé — déjà vu.",
    "don't-stop... 3.14 x2",
    "[CLS] [SEP] [MASK] typed by a user",
    "北京 東京 and 서울",
    "emoji 🙂 and tabs\tand\nnewlines",
    "un" + "believable" * 11,
    "",
    "İstanbul ΣΊΣΥΦΟΣ Ǆungla straße ﬁne ＦＵＬＬ",
    "ガギグ 한국어 Ἀθῆναι हिन्दी ภาษาไทย",
    "zero\u200bwidth\u00a0nbsp\x00nul\x07bell\u2028sep\u3000ideo",
    "👩\u200d👩\u200d👧 👍🏽 a+b=c^d|e~f`g<h> $5.00 U.S.A. 1,000",
    "e\u0301 vs \u00e9, ﬃ, Ⅻ, ½",
)


def _array_bytes(t: torch.Tensor) -> tuple[bytes, str]:
    arr = t.detach().contiguous().cpu().numpy()
    if arr.dtype != np.bool_:
        arr = arr.astype(arr.dtype.newbyteorder("<"), copy=False)
    return arr.tobytes(order="C"), str(t.dtype).removeprefix("torch.")


class GoldenWriter:
    """Writes the tensors of a goldens folder under `root`, counting the bytes of array data in `bytes`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.bytes = 0

    def entry(self, rel: str, value: Any) -> dict:
        """A tensor becomes a file and its description; anything else stays inline."""
        if isinstance(value, torch.Tensor):
            data, dtype = _array_bytes(value)
            path = self.root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            self.bytes += len(data)
            return {"file": rel, "dtype": dtype, "shape": list(value.shape)}
        return {"value": value}

    def group(self, prefix: str, values: dict[str, Any]) -> dict:
        """Each of `values` by name, as `entry` of the file `<prefix>.<name>.bin`."""
        return {name: self.entry(f"{prefix}.{name}.bin", v) for name, v in values.items()}


def traced_letterbox(trace: Trace) -> dict:
    """The letterbox of a traced image (its `letterbox` entry in index.json)."""
    return dict(trace.steps["preprocess"]["outputs"]["letterbox"])


def tokenizer_cases(tokenizer: Tokenizer) -> list[dict]:
    """The index's `tokenizer` entry: every TOKENIZER_CASES string with its ids and decoded text."""
    return [{"text": text, "ids": tokenizer.encode(text), "decoded": tokenizer.decode(tokenizer.encode(text))}
            for text in TOKENIZER_CASES]


def _minivlm_entries(trace: Trace, pipeline, store: Store) -> tuple[dict, dict]:
    """MiniVLM's letterbox (after the image size) and its greedy and beam-search caption decodes (last)."""
    return {"letterbox": traced_letterbox(trace)}, {"caption_decoding": caption_decoding(trace, pipeline, store)}


# Family name -> (trace, pipeline, store) -> the entries its goldens add to an image's case: (those after its
# size, those after its graph calls). A family not listed adds none.
CASE_ENTRIES = {"minivlm": _minivlm_entries}


def _no_entries(trace: Trace, pipeline, store: Store) -> tuple[dict, dict]:
    return {}, {}


def write_goldens(traces: list[Trace], io_names: dict[str, tuple[tuple[str, ...], tuple[str, ...]]],
                  pipeline, folder: Path) -> int:
    """Write golden/ for the images `pipeline` was traced on; `io_names` maps each graph to its (input, output)
    names. Each image gets its host steps, its graph calls and its family's `CASE_ENTRIES` (MiniVLM: a greedy
    and a beam-search caption decode). Returns the bytes of array data written."""
    folder.mkdir()
    family = family_of(pipeline.cfg)
    entries = CASE_ENTRIES.get(family.name, _no_entries)
    w = GoldenWriter(folder)
    cases = {}
    for tr in traces:
        name = tr.sample.name
        host = {step: {io: w.group(f"{name}/{step}.{io}", values[io]) for io in ("inputs", "outputs")}
                for step, values in tr.steps.items()}
        graphs = {}
        for graph in family.graph_names:
            kept = tr.calls[graph][: family.golden_calls.get(graph, 1)]
            in_names, out_names = io_names[graph]
            graphs[graph] = [
                {"call": i, "inputs": w.group(f"{name}/{graph}.{i}.inputs", dict(zip(in_names, ins, strict=True))),
                 "outputs": w.group(f"{name}/{graph}.{i}.outputs", dict(zip(out_names, outs, strict=True)))}
                for i, (ins, outs) in enumerate(kept)
            ]
        head, tail = entries(tr, pipeline, w.group)
        cases[name] = {"source": tr.sample.source, "height": int(tr.sample.image.shape[0]),
                       "width": int(tr.sample.image.shape[1]), **head, "host_steps": host, "graphs": graphs, **tail}
    index = {
        "version": INDEX_VERSION,
        "format": INDEX_FORMAT,
        "images": [tr.sample.name for tr in traces],
        "cases": cases,
        "tokenizer": tokenizer_cases(pipeline.tokenizer),
    }
    (folder / "index.json").write_text(json.dumps(index, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return w.bytes


__all__ = ["CASE_ENTRIES", "INDEX_FORMAT", "INDEX_VERSION", "TOKENIZER_CASES", "GoldenWriter", "tokenizer_cases",
           "traced_letterbox", "write_goldens"]
