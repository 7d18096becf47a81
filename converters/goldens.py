"""Goldens: the reference's inputs and outputs of every graph and host step, for on-device replay
(docs/ARCHITECTURE.md §7).

Layout inside a build:
    golden/index.json                       what every file holds (dtype, shape), and inline JSON values
    golden/<image>/<step>.<io>.<name>.bin   one raw little-endian, C-order array per tensor
Graph calls are stored once per image (`caption_step`: its first GOLDEN_STEP_CALLS calls, the second with a
non-empty cache), so a build's goldens stay a few MB for the demo model.

The whole caption decode is stored compactly (`caption_decoding`): for every caption_step call, keyed by each
beam's token history ([CLS] first), the top CAPTION_TOP_K logits with their indices, and the logsumexp of the
full row and of the other V - K logits. A replaying callback rebuilds a logits row from these (the other V - K
entries share their probability mass equally, strictly below the K-th logit), which decides every greedy and
beam-search step as the full row does; `_check_replay` proves that through python_ref's own decoders before anything is written.

`write_host_goldens` writes the same format without graph calls, for tests/golden/ (docs/ARCHITECTURE.md §7): the
host steps of the bundled model on the golden images, small preprocessing cases, the anchors, the tokenizer cases, and a
host-only manifest.json. `scripts/update_goldens.py` runs it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from minivlm.python_ref.errors import ConversionError
from minivlm.python_ref.packing import FusionInputs
from minivlm.python_ref.generate import Caption, CaptionGraphs, beam_search, greedy
from minivlm.python_ref.pipeline import GRAPH_NAMES, Pipeline
from minivlm.python_ref.preprocess import preprocess
from minivlm.python_ref.tokenizer import SPECIAL_TOKENS, Tokenizer

from .build_folder import atomic_directory, foreign_entry
from .manifest import SCHEMA_VERSION, VOCAB_FILE
from .samples import Trace, golden_images, trace

log = logging.getLogger(__name__)

INDEX_VERSION = 2  # 2: per-image letterbox and caption_decoding
GOLDEN_STEP_CALLS = 2  # caption_step calls kept per image: t=1 (empty cache) and t=2 (one cached token)
GOLDEN_BEAMS = 5  # beam width of the stored beam-search decode (python_ref beam_search's default)
CAPTION_TOP_K = 2 * GOLDEN_BEAMS  # beam search takes the top 2*beams of (beam, word): these K per row suffice
REPLAY_SCORE_TOL = 2e-3  # see _check_replay
# Beam search's first call runs every beam on the same history ([CLS]) in one batch. Rows of identical inputs
# may still differ in the last bits (a CPU's matmul kernels can block rows differently: seen on AMD EPYC), so
# the table keeps the first row and holds the others to this share of the row's largest |logit| (at least 1).
# Any larger gap means the batch changes the result, which is a bug worth stopping a build for.
DUPLICATE_ROW_TOL = 1e-4
# A rebuilt row keeps the top-k logits and the row's logsumexp, but its log-softmax rounds differently (float32
# sums over V entries): ~1e-6 in log-probability. Beam search ranks candidates across beams by those sums, so
# where two of them are this close the replay may rank them the other way; so may any device. Such a beam decode
# (an untrained model's near-uniform logits, typically) is left out of the goldens, saying so; a replay that
# fails without such a tie stops the build.
BEAM_NEAR_TIE = 1e-4
HOST_MANIFEST = "manifest.json"
HOST_VOCABULARIES = "vocabularies.json"
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


def _array_bytes(t: torch.Tensor) -> tuple[bytes, str]:
    arr = t.detach().contiguous().cpu().numpy()
    if arr.dtype != np.bool_:
        arr = arr.astype(arr.dtype.newbyteorder("<"), copy=False)
    return arr.tobytes(order="C"), str(t.dtype).removeprefix("torch.")


class _Writer:
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
        return {name: self.entry(f"{prefix}.{name}.bin", v) for name, v in values.items()}


# --- the compact caption decode ----------------------------------------------------------------------------------


@dataclasses.dataclass
class DecodeRecord:
    """One complete caption decode: every caption_step call with the history of each of its rows, and the result."""

    num_beams: int
    length_penalty: float
    max_caption_tokens: int
    caption: Caption
    text: str
    rows: list[tuple[tuple[int, ...], torch.Tensor]]  # (history incl. [CLS], logits (V,)) per call row, in order


def _record(rows: list, caption: Caption, tokenizer: Tokenizer, num_beams: int, length_penalty: float,
            steps: int) -> DecodeRecord:
    return DecodeRecord(num_beams, length_penalty, steps, caption, tokenizer.decode(list(caption.token_ids)), rows)


def greedy_record(trace: Trace, tokenizer: Tokenizer) -> DecodeRecord:
    """The greedy decode the traced pipeline ran (every caption_step call it made), with its score recomputed
    as python_ref's `greedy` computes it. Its max_caption_tokens is the number of steps it took: greedy makes
    the same caption under any larger limit."""
    calls = trace.calls["caption_step"]
    out = trace.steps["greedy_caption"]["outputs"]
    tokens, finished = tuple(out["token_ids"].tolist()), bool(out["finished"])
    chosen = [*tokens, tokenizer.sep_id] if finished else list(tokens)
    if len(calls) != len(chosen):
        raise ConversionError(f"{trace.sample.name}: {len(calls)} caption_step calls for {len(chosen)} greedy steps")
    score, rows = 0.0, []
    for t, ((_, outs), token) in enumerate(zip(calls, chosen)):
        logits = outs[0][0]
        if int(logits.argmax()) != token:
            raise ConversionError(f"{trace.sample.name}: the traced greedy caption does not follow its logits")
        score += float(F.log_softmax(logits, dim=-1)[token])
        rows.append(((tokenizer.cls_id, *chosen[:t]), logits.clone()))  # step t+1 saw [CLS] and the t tokens before
    caption = Caption(tokens, torch.stack([o[0][0] for _, o in calls]), score, finished)
    return _record(rows, caption, tokenizer, 1, 1.0, len(calls))


@torch.no_grad()
def beam_record(graphs: CaptionGraphs, tokenizer: Tokenizer, inputs: FusionInputs, num_beams: int = GOLDEN_BEAMS,
                length_penalty: float = 1.0) -> DecodeRecord:
    """Run python_ref's beam search over `graphs`, recording every row of every caption_step call by history."""
    rows: list = []

    def on_step(history: torch.Tensor, logits: torch.Tensor) -> None:
        rows.extend((tuple(h), row.clone()) for h, row in zip(history.tolist(), logits))

    caption = beam_search(graphs, tokenizer, inputs, num_beams, length_penalty=length_penalty, on_step=on_step)
    return _record(rows, caption, tokenizer, num_beams, length_penalty, graphs.cfg.max_caption_tokens)


def _same_row(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Two logits rows of one history, from one batched call, agree to DUPLICATE_ROW_TOL of the row's scale."""
    scale = max(1.0, float(a.abs().max()))
    return float((a - b).abs().max()) <= DUPLICATE_ROW_TOL * scale


def _table(record: DecodeRecord, max_text_len: int, k: int) -> dict[str, torch.Tensor]:
    """Unique histories (M, max_text_len) padded with -1, top-k indices/logits (M, k), and the logsumexp of the
    whole row and of the V - k others (M,), both computed in float64 from the float32 row."""
    seen: dict[tuple[int, ...], torch.Tensor] = {}
    for history, logits in record.rows:
        if history in seen and not _same_row(seen[history], logits):
            diff = float((seen[history] - logits).abs().max())
            raise ConversionError(f"two caption_step rows with history {list(history)} have logits {diff:.3g} apart "
                                  f"(more than {DUPLICATE_ROW_TOL:g} of the row's scale)")
        seen.setdefault(history, logits)  # the first row: the one the decoder expands
    histories = torch.full((len(seen), max_text_len), -1, dtype=torch.int64)
    top_logits = torch.zeros(len(seen), k)
    top_indices = torch.zeros(len(seen), k, dtype=torch.int64)
    logsumexp, rest_logsumexp = torch.zeros(len(seen)), torch.zeros(len(seen))
    for m, (history, logits) in enumerate(seen.items()):
        histories[m, : len(history)] = torch.tensor(history)
        values, indices = torch.topk(logits, k)
        top_logits[m], top_indices[m] = values, indices
        rest = torch.ones_like(logits, dtype=torch.bool)
        rest[indices] = False
        logsumexp[m] = torch.logsumexp(logits.double(), dim=0).float()
        rest_logsumexp[m] = torch.logsumexp(logits[rest].double(), dim=0).float()
    return {"histories": histories, "top_indices": top_indices, "top_logits": top_logits, "logsumexp": logsumexp,
            "rest_logsumexp": rest_logsumexp}


def reconstruct_logits(top_indices: torch.Tensor, top_logits: torch.Tensor, rest_logsumexp: float,
                       vocab: int) -> torch.Tensor:
    """A full logits row from its top k and the logsumexp of the others: those V - k share their probability
    mass equally (so the row's logsumexp is kept), strictly below the k-th logit. The native replay test does
    the same."""
    k = top_logits.shape[0]
    lowest = np.float32(top_logits.min())
    filler = np.float32(rest_logsumexp - math.log(vocab - k))
    filler = min(filler, np.nextafter(lowest, np.float32(-np.inf)))
    row = torch.full((vocab,), float(filler))
    row[top_indices] = top_logits
    return row


def _check_replay(record: DecodeRecord, table: dict[str, torch.Tensor], graphs: CaptionGraphs, tokenizer: Tokenizer,
                  inputs: FusionInputs) -> None:
    """python_ref's decoder, fed rebuilt rows looked up by history, must make the recorded caption.

    The fake step graph finds each row's history in its cache: it returns the fed token as that row's new keys,
    which the decoder stores in slot t-1 and reorders with the beams."""
    cfg = graphs.cfg
    rows = {tuple(h[h >= 0].tolist()): m for m, h in enumerate(table["histories"])}
    p = cfg.max_tags_len + cfg.max_regions

    def prefix(*_: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        zeros = torch.zeros(cfg.num_layers, 1, cfg.num_heads, p, cfg.head_dim)
        return zeros, zeros

    def step(token_ids, position_ids, _pk, _pv, _pm, cache_keys, _cv, _cm):
        n, t = token_ids.shape[0], int(position_ids[0, 1])
        logits = []
        for i in range(n):
            history = (*(int(v) for v in cache_keys[0, i, 0, : t - 1, 0]), int(token_ids[i, 0]))
            if history not in rows:
                raise ConversionError(f"replaying the compact caption golden asked for unrecorded history {list(history)}")
            m = rows[history]
            logits.append(reconstruct_logits(table["top_indices"][m], table["top_logits"][m],
                                             float(table["rest_logsumexp"][m]), cfg.vocab_size))
        fed = token_ids[:, 0].float().view(1, n, 1, 1, 1).expand(cfg.num_layers, n, cfg.num_heads, 1, cfg.head_dim)
        return torch.stack(logits), fed.clone(), fed.clone()

    fake = CaptionGraphs(cfg, prefix, step)
    if record.num_beams == 1:
        got = greedy(fake, tokenizer, inputs, max_caption_tokens=record.max_caption_tokens)
    else:
        got = beam_search(fake, tokenizer, inputs, record.num_beams, length_penalty=record.length_penalty,
                          max_caption_tokens=record.max_caption_tokens)
    # The score only approximately: torch sums exp() of a row in float32, and a rebuilt row's V - k equal
    # entries make that sum's rounding systematic (up to ~3e-5 per step); the tokens must be identical.
    if got.token_ids != record.caption.token_ids or got.finished != record.caption.finished or \
            abs(got.score - record.caption.score) > REPLAY_SCORE_TOL:
        raise ConversionError(f"the compact caption golden ({record.num_beams} beams) replays to {list(got.token_ids)} "
                              f"(score {got.score:.6f}), the reference made {list(record.caption.token_ids)} "
                              f"(score {record.caption.score:.6f})")


def _decoding_entry(w: _Writer, prefix: str, record: DecodeRecord, graphs: CaptionGraphs, tokenizer: Tokenizer,
                    inputs: FusionInputs) -> dict:
    table = _table(record, graphs.cfg.max_text_len, CAPTION_TOP_K)
    _check_replay(record, table, graphs, tokenizer, inputs)
    return {
        "num_beams": record.num_beams, "length_penalty": record.length_penalty,
        "max_caption_tokens": record.max_caption_tokens, "token_ids": list(record.caption.token_ids),
        "caption": record.text, "score": record.caption.score, "finished": record.caption.finished,
        "steps": len({len(h) for h, _ in record.rows}), "table": w.group(prefix, table),
    }


def closest_beam_tie(record: DecodeRecord) -> float:
    """The smallest gap, in summed log-probability, between two of the top 2·beams + 1 candidates of any step
    of a beam-search decode (recomputed in float64 from the recorded rows; step 1 counts its first row only,
    as the decoder does)."""
    rows: dict[tuple[int, ...], torch.Tensor] = {}
    for history, logits in record.rows:
        rows.setdefault(history, F.log_softmax(logits.double(), dim=-1))
    scores = {min(rows, key=len): 0.0}
    closest = math.inf
    for length in sorted({len(h) for h in rows}):
        step = [h for h in rows if len(h) == length]
        for h in step:
            if h not in scores:
                scores[h] = scores[h[:-1]] + float(rows[h[:-1]][h[-1]])
        candidates = torch.cat([scores[h] + rows[h] for h in step])
        top = candidates.topk(min(2 * record.num_beams + 1, candidates.numel())).values
        if top.numel() > 1:
            closest = min(closest, float((top[:-1] - top[1:]).min()))
    return closest


def _caption_inputs(trace: Trace) -> FusionInputs:
    return FusionInputs(*trace.steps["caption_packing"]["outputs"].values())


def _caption_decoding(w: _Writer, trace: Trace, pipeline: Pipeline) -> dict:
    """The traced greedy decode and a beam-search decode through the pipeline's caption graphs."""
    name, tokenizer = trace.sample.name, pipeline.tokenizer
    inputs = _caption_inputs(trace)
    graphs = pipeline.graphs.caption
    out = {"top_k": CAPTION_TOP_K,
           "greedy": _decoding_entry(w, f"{name}/caption_decoding.greedy", greedy_record(trace, tokenizer), graphs,
                                     tokenizer, inputs)}
    record = beam_record(graphs, tokenizer, inputs)
    try:
        out["beam"] = _decoding_entry(w, f"{name}/caption_decoding.beam", record, graphs, tokenizer, inputs)
    except ConversionError as err:
        gap = closest_beam_tie(record)
        if gap > BEAM_NEAR_TIE:
            raise
        out["beam_omitted"] = (f"two beam-search candidates are {gap:.2g} apart in log-probability, closer than "
                               f"BEAM_NEAR_TIE = {BEAM_NEAR_TIE:g}: rows rebuilt from the top-k logits ({err}) "
                               f"need not break that tie as the reference did")
        log.warning("%s: beam-search golden omitted: %s", name, out["beam_omitted"])
    return out


def _letterbox(trace: Trace) -> dict:
    return dict(trace.steps["preprocess"]["outputs"]["letterbox"])


# --- writers -------------------------------------------------------------------------------------------------------


def _tokenizer_cases(tokenizer: Tokenizer) -> list[dict]:
    return [{"text": text, "ids": tokenizer.encode(text), "decoded": tokenizer.decode(tokenizer.encode(text))}
            for text in TOKENIZER_CASES]


def write_goldens(traces: list[Trace], io_names: dict[str, tuple[tuple[str, ...], tuple[str, ...]]],
                  pipeline: Pipeline, folder: Path) -> int:
    """Write golden/ for the images `pipeline` was traced on; `io_names` maps each graph to its (input, output)
    names. Every image gets its greedy and a beam-search caption decode. Returns the bytes of array data written."""
    folder.mkdir()
    w = _Writer(folder)
    cases = {}
    for tr in traces:
        name = tr.sample.name
        host = {step: {io: w.group(f"{name}/{step}.{io}", values[io]) for io in ("inputs", "outputs")}
                for step, values in tr.steps.items()}
        graphs = {}
        for graph in GRAPH_NAMES:
            kept = tr.calls[graph][: GOLDEN_STEP_CALLS if graph == "caption_step" else 1]
            in_names, out_names = io_names[graph]
            graphs[graph] = [
                {"call": i, "inputs": w.group(f"{name}/{graph}.{i}.inputs", dict(zip(in_names, ins, strict=True))),
                 "outputs": w.group(f"{name}/{graph}.{i}.outputs", dict(zip(out_names, outs, strict=True)))}
                for i, (ins, outs) in enumerate(kept)
            ]
        cases[name] = {"source": tr.sample.source, "height": int(tr.sample.image.shape[0]),
                       "width": int(tr.sample.image.shape[1]), "letterbox": _letterbox(tr), "host_steps": host,
                       "graphs": graphs,
                       "caption_decoding": _caption_decoding(w, tr, pipeline)}
    index = {
        "version": INDEX_VERSION,
        "format": "one raw little-endian C-order array per file; dtype and shape listed here; JSON values inline",
        "images": [tr.sample.name for tr in traces],
        "cases": cases,
        "tokenizer": _tokenizer_cases(pipeline.tokenizer),
    }
    (folder / "index.json").write_text(json.dumps(index, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return w.bytes


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
    w = _Writer(folder)
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
                       "width": int(tr.sample.image.shape[1]), "letterbox": _letterbox(tr), "host_steps": host,
                       "caption_decoding": _caption_decoding(w, tr, pipeline)}
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
        "format": "one raw little-endian C-order array per file; dtype and shape listed here; JSON values inline",
        "model": model_name,
        "images": [tr.sample.name for tr in traces],
        "anchors": w.entry("anchors.bin", pipeline.anchors),
        "level_sizes": list(pipeline.level_sizes),
        "preprocess_cases": pre,
        "cases": cases,
        "tokenizer": _tokenizer_cases(pipeline.tokenizer),
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


__all__ = ["CAPTION_TOP_K", "GOLDEN_BEAMS", "GOLDEN_STEP_CALLS", "PREPROCESS_CASES", "TOKENIZER_CASES", "DecodeRecord",
           "beam_record", "greedy_record", "host_manifest", "reconstruct_logits", "update_host_goldens", "write_goldens", "write_host_goldens"]
