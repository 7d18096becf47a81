"""Goldens replay: every file the index lists exists with its size, and re-running python_ref on the stored
inputs gives the stored outputs (what a native port or a device test will do)."""

import json

import numpy as np
import torch

from minivlm.converters.goldens import GOLDEN_STEP_CALLS, TOKENIZER_CASES
from minivlm.python_ref.pipeline import GRAPH_NAMES
from minivlm.python_ref.postprocess import select_proposals
from minivlm.python_ref.tokenizer import Tokenizer


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
                torch.testing.assert_close(got, _load(folder, entry), rtol=0, atol=1e-6)
    step = case["host_steps"]["proposals"]
    ins = {k: _load(folder, e) for k, e in step["inputs"].items()}
    proposals, valid = select_proposals(ins["objectness"], ins["deltas"], ins["anchors"], pipe.level_sizes,
                                        pipe.cfg.tee.rpn, pipe.cfg.tee.image_size)
    assert torch.equal(proposals, _load(folder, step["outputs"]["proposals"]))
    assert torch.equal(valid, _load(folder, step["outputs"]["valid"]))
