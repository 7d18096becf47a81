"""Writes the fuzzers' seed corpus (corpus/<target>/) from the repository's own data: the committed host
goldens' manifest.json, vocabularies.json and letterbox crops, converters/goldens.py TOKENIZER_CASES, and a few
hand-written edge cases. Run from the repository root after the goldens change: python sdk/native/fuzz/make_corpus.py
Files the fuzzers found (regressions) live beside the seeds as crash-*/regression-* and are kept."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from minivlm.converters.goldens import TOKENIZER_CASES
from minivlm.python_ref.tokenizer import SPECIAL_TOKENS, Tokenizer

REPO = Path(__file__).resolve().parents[3]
GOLDEN = REPO / "tests" / "golden"
CORPUS = Path(__file__).resolve().parent / "corpus"

JSON_CASES = (
    b'{"a": [1, -0, 0.5e-3, 1E+2, 12345678901234567890, 1e400, -1e-400, 5e-324], "b": {"": null}}',
    b'[NaN, Infinity, -Infinity, true, false, null, "", {}, []]',
    b'"esc \\" \\\\ \\/ \\b \\f \\n \\r \\t \\u00e9 \\ud83d\\ude42 \\u0000"',
    '{"caf\u00e9": "\u5317\u4eac \U0001f642", "a/b": 1, "m~n": 2, "k": 1, "k": 2}'.encode(),
    b" \t\r\n[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]] \n",
)


def _put(target: str, name: str, data: bytes) -> None:
    folder = CORPUS / target
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(data)


def _digest(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()[:12]


def main() -> None:
    tok = Tokenizer.default()
    for i, text in enumerate(TOKENIZER_CASES):
        _put("tokenizer", f"case-{i:02d}", text.encode("utf-8"))
    _put("tokenizer", "latin1", "caf\u00e9 cr\u00e8me".encode("latin-1"))

    # A small vocabulary that covers the vocab fuzzer's fixed texts, as LF, CRLF and with a malformed line.
    pieces = sorted({t for text in TOKENIZER_CASES for t in tok.tokens(text)} - set(SPECIAL_TOKENS))
    vocab = "\n".join([*SPECIAL_TOKENS, *pieces]) + "\n"
    _put("vocab", "small", vocab.encode())
    _put("vocab", "crlf", vocab.replace("\n", "\r\n").encode())
    _put("vocab", "specials-only", ("\n".join(SPECIAL_TOKENS)).encode())
    _put("vocab", "repeated", (vocab + "[SEP]\n").encode())

    manifest = (GOLDEN / "manifest.json").read_bytes()
    for name in ("manifest.json", "vocabularies.json"):
        _put("json", name, (GOLDEN / name).read_bytes())
    for data in JSON_CASES:
        _put("json", f"case-{_digest(data)}", data)

    doc = json.loads(manifest)
    _put("manifest", "golden", manifest)
    doc["graphs"] = {g: {"file": f"{g}.pte"} for g in ("tee_stage1", "tee_stage2", "caption_prefix", "caption_step")}
    doc["model"]["config"]["tee"]["roi_head"]["region_order"] = "left_to_right"
    _put("manifest", "graphs-left-to-right", json.dumps(doc, separators=(",", ":")).encode())
    doc["graphs"]["caption_step"]["file"] = "../outside.pte"
    doc["tokenizer"]["specials"]["[MASK]"] = 1e9
    _put("manifest", "bad-file-and-special", json.dumps(doc).encode())

    # Letterbox crops: header (format, width-1, height-1, row padding, S-1, flags) + the crop's RGB bytes.
    index = json.loads((GOLDEN / "index.json").read_bytes())
    for i, case in enumerate(index["preprocess_cases"]):
        h, w, _ = case["image"]["shape"]
        if h > 96 or w > 96:
            continue
        pixels = np.fromfile(GOLDEN / case["image"]["file"], dtype=np.uint8)
        header = bytes([i % 4, w - 1, h - 1, i % 8, case["size"] - 1, 0])
        _put("preprocess", f"golden-{i}", header + pixels.tobytes())

    # EfficientVLM host steps: a mode byte (0 config, 1 resize, 2 text and decoding) then that part's input.
    evlm = REPO / "tests" / "golden_efficientvlm"
    evlm_manifest = (evlm / "manifest.json").read_bytes()
    _put("efficientvlm", "config-golden", b"\x00" + evlm_manifest)
    doc = json.loads(evlm_manifest)
    doc["model"]["config"]["vision"]["pixel_std"] = [0.5, 0.5]
    _put("efficientvlm", "config-two-stds", b"\x00" + json.dumps(doc).encode())
    _put("efficientvlm", "config-minivlm", b"\x00" + manifest)
    crop = np.fromfile(GOLDEN / index["preprocess_cases"][0]["image"]["file"], dtype=np.uint8)
    for name, header in (("resize-down", bytes([1, 0, 63, 47, 0, 15, 0])), ("resize-up", bytes([1, 3, 7, 5, 3, 31, 0])),
                         ("resize-uniform", bytes([1, 2, 40, 30, 1, 23, 1]))):
        _put("efficientvlm", name, header + crop[:4096].tobytes())
    for i, text in enumerate(("a red circle", "what colour is the square?", "")):
        data = text.encode()
        _put("efficientvlm", f"text-{i}", bytes([2, len(data)]) + data + bytes([0, 5, 200, 0, 3, 0xFE, 0xFF, 0xFF, 0]))


if __name__ == "__main__":
    main()
