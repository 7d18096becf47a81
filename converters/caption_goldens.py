"""The compact caption decode of the goldens (docs/ARCHITECTURE.md §7, `caption_decoding` in golden/index.json).

Storing every caption_step output would take megabytes, so a greedy and a GOLDEN_BEAMS-beam decode are kept as
a table: for every caption_step call, keyed by each beam's token history ([CLS] first), the top CAPTION_TOP_K
logits with their indices, and the logsumexp of the full row and of the other V - K logits. A replaying
callback rebuilds a logits row from these (`reconstruct_logits`: the other V - K entries share their
probability mass equally, strictly below the K-th logit), which decides every greedy and beam-search step as
the full row does; `check_replay` proves that through python_ref's own decoders before anything is written.
`goldens.py` writes the tables; this module only computes and checks them.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from minivlm.python_ref.errors import ConversionError
from minivlm.python_ref.generate import DEFAULT_BEAMS, Caption, CaptionGraphs, beam_search, greedy
from minivlm.python_ref.packing import FusionInputs
from minivlm.python_ref.pipeline import Pipeline
from minivlm.python_ref.tokenizer import Tokenizer

from .samples import Trace

log = logging.getLogger(__name__)

GOLDEN_BEAMS = DEFAULT_BEAMS  # beam width of the stored beam-search decode (python_ref beam_search's default)
CAPTION_TOP_K = 2 * GOLDEN_BEAMS  # beam search takes the top 2*beams of (beam, word): these K per row suffice
REPLAY_SCORE_TOL = 2e-3  # see check_replay
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

# Stores one table's tensors under a file prefix and returns their index entries (`GoldenWriter.group`).
Store = Callable[[str, dict[str, torch.Tensor]], dict]


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


def decode_table(record: DecodeRecord, max_text_len: int, k: int) -> dict[str, torch.Tensor]:
    """The table of one decode: unique histories (M, max_text_len) padded with -1, top-k indices/logits (M, k),
    and the logsumexp of the whole row and of the V - k others (M,), both computed in float64 from the float32
    row. ConversionError if two rows of one history differ by more than DUPLICATE_ROW_TOL."""
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


def check_replay(record: DecodeRecord, table: dict[str, torch.Tensor], graphs: CaptionGraphs, tokenizer: Tokenizer,
                 inputs: FusionInputs) -> None:
    """python_ref's decoder, fed rebuilt rows looked up by history, must make the recorded caption:
    ConversionError if it does not.

    The fake step graph finds each row's history in its cache: it returns the fed token as that row's new keys,
    which the decoder stores in slot t-1 and reorders with the beams."""
    cfg = graphs.cfg
    rows = {tuple(h[h >= 0].tolist()): m for m, h in enumerate(table["histories"])}
    p = cfg.max_tags_len + cfg.max_regions

    def prefix(*_: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        zeros = torch.zeros(cfg.num_layers, 1, cfg.cache_heads, p, cfg.head_dim)
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
        fed = token_ids[:, 0].float().view(1, n, 1, 1, 1).expand(cfg.num_layers, n, cfg.cache_heads, 1, cfg.head_dim)
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


def _decoding_entry(store: Store, prefix: str, record: DecodeRecord, graphs: CaptionGraphs, tokenizer: Tokenizer,
                    inputs: FusionInputs) -> dict:
    table = decode_table(record, graphs.cfg.max_text_len, CAPTION_TOP_K)
    check_replay(record, table, graphs, tokenizer, inputs)
    return {
        "num_beams": record.num_beams, "length_penalty": record.length_penalty,
        "max_caption_tokens": record.max_caption_tokens, "token_ids": list(record.caption.token_ids),
        "caption": record.text, "score": record.caption.score, "finished": record.caption.finished,
        "steps": len({len(h) for h, _ in record.rows}), "table": store(prefix, table),
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


def caption_decoding(trace: Trace, pipeline: Pipeline, store: Store) -> dict:
    """The `caption_decoding` entry of one image: the traced greedy decode and a beam-search decode through the
    pipeline's caption graphs, each table checked by `check_replay` before `store` writes it. A beam decode
    that fails its replay on a near-tie (`closest_beam_tie` within BEAM_NEAR_TIE) is left out, saying why in
    `beam_omitted`; any other replay failure is a ConversionError."""
    name, tokenizer = trace.sample.name, pipeline.tokenizer
    inputs = FusionInputs(*trace.steps["caption_packing"]["outputs"].values())
    graphs = pipeline.graphs.caption
    out = {"top_k": CAPTION_TOP_K,
           "greedy": _decoding_entry(store, f"{name}/caption_decoding.greedy", greedy_record(trace, tokenizer), graphs,
                                     tokenizer, inputs)}
    record = beam_record(graphs, tokenizer, inputs)
    try:
        out["beam"] = _decoding_entry(store, f"{name}/caption_decoding.beam", record, graphs, tokenizer, inputs)
    except ConversionError as err:
        gap = closest_beam_tie(record)
        if gap > BEAM_NEAR_TIE:
            raise
        out["beam_omitted"] = (f"two beam-search candidates are {gap:.2g} apart in log-probability, closer than "
                               f"BEAM_NEAR_TIE = {BEAM_NEAR_TIE:g}: rows rebuilt from the top-k logits ({err}) "
                               f"need not break that tie as the reference did")
        log.warning("%s: beam-search golden omitted: %s", name, out["beam_omitted"])
    return out


__all__ = ["BEAM_NEAR_TIE", "CAPTION_TOP_K", "DUPLICATE_ROW_TOL", "GOLDEN_BEAMS", "REPLAY_SCORE_TOL", "DecodeRecord",
           "Store", "beam_record", "caption_decoding", "check_replay", "closest_beam_tie", "decode_table",
           "greedy_record", "reconstruct_logits"]
