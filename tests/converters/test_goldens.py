"""Goldens replay: every file the index lists exists with its size, and re-running python_ref on the stored
inputs gives the stored outputs (what a native port or a device test will do)."""

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from minivlm.converters.caption_goldens import (CAPTION_TOP_K, beam_record, check_replay, decode_table, greedy_record,
                                                reconstruct_logits)
from minivlm.converters.goldens import INDEX_VERSION, TOKENIZER_CASES
from minivlm.converters.host_goldens import update_host_goldens
from minivlm.loading import bundled_weights, load
from minivlm.python_ref.errors import ConversionError
from minivlm.python_ref.minivlm_family import GOLDEN_STEP_CALLS
from minivlm.python_ref.packing import FusionInputs
from minivlm.python_ref.pipeline import GRAPH_NAMES
from minivlm.python_ref.postprocess import select_proposals
from minivlm.python_ref.tokenizer import Tokenizer


# The build traced its goldens on one thread; this replay runs on the default thread count, whose reductions
# sum in another order: fp32 rounding only, relative to each output's magnitude.
REPLAY_RTOL, REPLAY_ATOL = 1e-5, 1e-5


def _load(folder, entry):
    data = (folder / entry["file"]).read_bytes()
    dtype = np.dtype(entry["dtype"] if entry["dtype"] == "bool" else "<" + np.dtype(entry["dtype"]).str[1:])
    return torch.from_numpy(np.frombuffer(data, dtype=dtype).reshape(entry["shape"]).copy())


def test_goldens_cover_every_graph_and_host_step_on_photos_and_scenes(tiny_executorch_build, tiny_reference):
    folder = tiny_executorch_build.path / "golden"
    index = json.loads((folder / "index.json").read_text())
    assert [n.split("_")[0] for n in index["images"]] == ["photo", "photo", "scene", "scene"]
    total = 0
    for case in index["cases"].values():
        assert set(case["graphs"]) == set(GRAPH_NAMES)
        assert len(case["graphs"]["caption_step"]) == GOLDEN_STEP_CALLS
        assert {"preprocess", "proposals", "region_selection", "caption_packing", "greedy_caption",
                "question_packing", "answer", "match"} <= set(case["host_steps"])
        for step in case["host_steps"].values():
            for entry in (*step["inputs"].values(), *step["outputs"].values()):
                if "file" in entry:
                    size = (folder / entry["file"]).stat().st_size
                    assert size == int(np.prod(entry["shape"])) * np.dtype(entry["dtype"]).itemsize
                    total += size
    assert total < 20e6
    tok = Tokenizer.default()
    assert [c["text"] for c in index["tokenizer"]] == list(TOKENIZER_CASES)
    assert all(c["ids"] == tok.encode(c["text"]) for c in index["tokenizer"])


def test_replaying_goldens_through_python_ref_reproduces_them(tiny_executorch_build, tiny_reference):
    folder = tiny_executorch_build.path / "golden"
    index = json.loads((folder / "index.json").read_text())
    pipe = tiny_reference.pipeline
    modules = pipe.graphs.modules()
    case = index["cases"][index["images"][0]]
    for name in GRAPH_NAMES:
        for call in case["graphs"][name]:
            inputs = [_load(folder, e) for e in call["inputs"].values()]
            with torch.no_grad():
                outputs = modules[name](*inputs)
            for got, entry in zip(outputs, call["outputs"].values()):
                torch.testing.assert_close(got, _load(folder, entry), rtol=REPLAY_RTOL, atol=REPLAY_ATOL)
    step = case["host_steps"]["proposals"]
    ins = {k: _load(folder, e) for k, e in step["inputs"].items()}
    proposals, valid = select_proposals(ins["objectness"], ins["deltas"], ins["anchors"], pipe.level_sizes,
                                        pipe.cfg.tee.rpn, pipe.cfg.tee.image_size)
    assert torch.equal(proposals, _load(folder, step["outputs"]["proposals"]))
    assert torch.equal(valid, _load(folder, step["outputs"]["valid"]))


def test_build_goldens_hold_the_whole_greedy_decode(tiny_executorch_build):
    """Every caption_step call of the traced greedy caption, keyed by history, replayable to the same tokens."""
    folder = tiny_executorch_build.path / "golden"
    index = json.loads((folder / "index.json").read_text())
    assert index["version"] == INDEX_VERSION
    for case in index["cases"].values():
        decoding = case["caption_decoding"]
        greedy_out = case["host_steps"]["greedy_caption"]["outputs"]
        assert decoding["greedy"]["token_ids"] == _load(folder, greedy_out["token_ids"]).tolist()
        assert decoding["greedy"]["caption"] == greedy_out["caption"]["value"]
        table = {k: _load(folder, e) for k, e in decoding["greedy"]["table"].items()}
        assert table["top_logits"].shape[1] == decoding["top_k"] == CAPTION_TOP_K
        assert len(table["histories"]) == decoding["greedy"]["steps"]  # greedy: one row per step
        assert set(case["letterbox"]) == {"height", "width", "scale", "resized_height", "resized_width"}


def _traced(tiny_reference):
    from minivlm.converters.samples import golden_images, trace

    return trace(tiny_reference.pipeline, golden_images()[2])


def test_compact_caption_goldens_replay_and_a_wrong_table_is_caught(tiny_reference):
    pipe = tiny_reference.pipeline
    tr = _traced(tiny_reference)
    inputs = FusionInputs(*tr.steps["caption_packing"]["outputs"].values())
    for record in (greedy_record(tr, pipe.tokenizer), beam_record(pipe.graphs.caption, pipe.tokenizer, inputs, num_beams=3)):
        table = decode_table(record, pipe.cfg.fusion.max_text_len, CAPTION_TOP_K)
        check_replay(record, table, pipe.graphs.caption, pipe.tokenizer, inputs)  # the recorded caption comes back
        wrong = dict(table, top_indices=table["top_indices"].roll(1, dims=1))  # each row's best logit on another word
        with pytest.raises(ConversionError, match="replays to|unrecorded history"):
            check_replay(record, wrong, pipe.graphs.caption, pipe.tokenizer, inputs)


def test_rebuilt_logits_keep_the_top_k_and_the_logsumexp():
    torch.manual_seed(0)
    logits = torch.randn(1000) * 3
    values, indices = torch.topk(logits, 10)
    rest = torch.ones(1000, dtype=torch.bool)
    rest[indices] = False
    row = reconstruct_logits(indices, values, float(torch.logsumexp(logits[rest].double(), 0)), 1000)
    assert torch.equal(torch.topk(row, 10).indices, indices) and torch.equal(row[indices], values)
    assert (row[rest] < values.min()).all()
    assert abs(float(torch.logsumexp(row.double(), 0)) - float(torch.logsumexp(logits.double(), 0))) < 1e-6


GOLDEN = Path(__file__).resolve().parents[1] / "golden"
FLOAT_TOL = 1e-4  # graph outputs traced on another CPU (other SIMD kernels) differ in the last bits


def _same_golden(fresh: Path, committed: Path) -> list[str]:
    """Differences between two host-golden folders: file sets, index.json (floats to FLOAT_TOL), arrays."""
    problems = []

    def files(root: Path) -> list[str]:
        return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())

    if files(fresh) != files(committed):
        return [f"file sets differ: {sorted(set(files(fresh)) ^ set(files(committed)))[:5]}"]

    def same(a, b, where):
        if isinstance(a, float) and isinstance(b, float):
            if not math.isclose(a, b, rel_tol=FLOAT_TOL, abs_tol=FLOAT_TOL):
                problems.append(f"{where}: {a} != {b}")
        elif isinstance(a, dict) and isinstance(b, dict) and a.keys() == b.keys():
            for k in a:
                same(a[k], b[k], f"{where}/{k}")
        elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
            for i, (x, y) in enumerate(zip(a, b)):
                same(x, y, f"{where}/{i}")
        elif a != b:
            problems.append(f"{where}: {str(a)[:60]} != {str(b)[:60]}")

    for name in ("index.json", "manifest.json", "vocabularies.json"):
        same(json.loads((fresh / name).read_text()), json.loads((committed / name).read_text()), name)
    index = json.loads((fresh / "index.json").read_text())

    def entries(node):
        if isinstance(node, dict):
            if "file" in node and "dtype" in node:
                yield node
            for v in node.values():
                yield from entries(v)
        elif isinstance(node, list):
            for v in node:
                yield from entries(v)

    for entry in entries(index):
        a, b = _load(fresh, entry), _load(committed, entry)
        if a.is_floating_point():
            if not torch.allclose(a, b, rtol=FLOAT_TOL, atol=FLOAT_TOL):
                problems.append(f"{entry['file']}: max abs difference {float((a - b).abs().max()):.3g}")
        elif not torch.equal(a, b):
            problems.append(f"{entry['file']}: integers differ")
    return problems


@pytest.mark.skipif(bundled_weights("minivlm-demo") is None, reason="demo weights not bundled")
def test_committed_host_goldens_are_current(tmp_path):
    """tests/golden/ is what scripts/update_goldens.py writes for the bundled weights now (MINIVLM_ACCEPT_GOLDEN=1
    rewrites it), and every file stays small (docs/TESTING.md)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as scripts/update_goldens.py: the same reductions on every machine
    try:
        pipeline = load("minivlm-demo").pipeline
        if os.environ.get("MINIVLM_ACCEPT_GOLDEN") == "1":
            update_host_goldens(pipeline, "minivlm-demo", GOLDEN)
        update_host_goldens(pipeline, "minivlm-demo", tmp_path / "golden")
    finally:
        torch.set_num_threads(threads)
    problems = _same_golden(tmp_path / "golden", GOLDEN)
    assert not problems, ("tests/golden/ is stale (" + "; ".join(problems[:5]) + "): regenerate it with "
                          "MINIVLM_ACCEPT_GOLDEN=1 pytest tests/converters/test_goldens.py (or python scripts/update_goldens.py) "
                          "and commit it")
    big = [p.name for p in GOLDEN.rglob("*") if p.is_file() and p.stat().st_size > 100_000]
    assert not big, f"golden files over 100 kB: {big}"


def test_duplicate_histories_in_one_batch_are_compared_within_a_tolerance(tiny_reference):
    """Beam search's first call runs every beam on [CLS]: rows that differ in the last bits (other CPUs' kernels)
    make one table row; rows that really differ stop the build."""
    from minivlm.converters.caption_goldens import DUPLICATE_ROW_TOL, DecodeRecord

    pipe = tiny_reference.pipeline
    tr = _traced(tiny_reference)
    inputs = FusionInputs(*tr.steps["caption_packing"]["outputs"].values())
    record = beam_record(pipe.graphs.caption, pipe.tokenizer, inputs, num_beams=3)
    first = [logits for history, logits in record.rows if history == (pipe.tokenizer.cls_id,)]
    assert len(first) == 3  # every beam of step 1
    scale = max(1.0, float(first[0].abs().max()))

    def with_first_rows(delta: float) -> DecodeRecord:
        rows = [(h, logits + delta * scale * (i % 2) if h == (pipe.tokenizer.cls_id,) else logits)
                for i, (h, logits) in enumerate(record.rows)]
        return DecodeRecord(record.num_beams, record.length_penalty, record.max_caption_tokens, record.caption,
                            record.text, rows)

    table = decode_table(with_first_rows(DUPLICATE_ROW_TOL / 10), pipe.cfg.fusion.max_text_len, CAPTION_TOP_K)
    assert int((table["histories"][:, 1] == -1).sum()) == 1  # one row for the history [CLS]
    check_replay(record, table, pipe.graphs.caption, pipe.tokenizer, inputs)
    with pytest.raises(ConversionError, match=r"history \[101\] have logits .* apart"):
        decode_table(with_first_rows(DUPLICATE_ROW_TOL * 10), pipe.cfg.fusion.max_text_len, CAPTION_TOP_K)


def _one_step_record(logits: list[float], num_beams: int = 1):
    from minivlm.converters.caption_goldens import DecodeRecord
    from minivlm.python_ref.generate import Caption

    row = torch.tensor(logits)
    return DecodeRecord(num_beams, 1.0, 1, Caption((), row[None], 0.0, False), "", [((101,), row)])


def test_closest_beam_tie_is_the_gap_between_the_top_candidates():
    from minivlm.converters.caption_goldens import closest_beam_tie

    assert closest_beam_tie(_one_step_record([0, 1, 2, 3, 4, 5])) == pytest.approx(1.0)
    near = closest_beam_tie(_one_step_record([0, 1, 2, 3 + 2e-6, 3, 5]))  # 3rd and 2nd best almost equal
    assert 0 < near < 1e-5
    # Only the top 2·beams + 1 candidates count: a tie further down decides nothing.
    assert closest_beam_tie(_one_step_record([1, 1, 5, 7, 9, 11])) == pytest.approx(2.0)


def test_a_beam_decode_on_a_near_tie_is_left_out_saying_so_and_any_other_failure_stops(tiny_reference, monkeypatch,
                                                                                        tmp_path):
    from minivlm.converters import caption_goldens
    from minivlm.converters.goldens import GoldenWriter

    tr = _traced(tiny_reference)
    pipe = tiny_reference.pipeline
    real = caption_goldens.check_replay

    def beams_diverge(record, *args):
        if record.num_beams > 1:
            raise ConversionError("replaying the compact caption golden asked for unrecorded history [101, 7]")
        return real(record, *args)

    monkeypatch.setattr(caption_goldens, "check_replay", beams_diverge)
    monkeypatch.setattr(caption_goldens, "closest_beam_tie", lambda record: 3e-6)
    w = GoldenWriter(tmp_path)
    out = caption_goldens.caption_decoding(tr, pipe, w.group)
    assert "beam" not in out and "greedy" in out
    assert "3e-06 apart" in out["beam_omitted"] and "unrecorded history [101, 7]" in out["beam_omitted"]
    assert not list(tmp_path.rglob("*beam*"))  # nothing of the beam table was written
    monkeypatch.setattr(caption_goldens, "closest_beam_tie", lambda record: 0.5)
    with pytest.raises(ConversionError, match="unrecorded history"):
        caption_goldens.caption_decoding(tr, pipe, w.group)
