"""Writes tests/golden_efficientvlm/: an EfficientVLM build folder without graph files, for the native core's
ctest and the demo apps' replay tests of the EfficientVLM host steps.

    python sdk/native/tools/make_efficientvlm_goldens.py [OUT]      # default: tests/golden_efficientvlm

The model is efficientvlm-demo-tiny (the demo vocabulary and text length on 32² images) with seeded random
weights: no weights file is needed, and every file stays a few kB. Seed 7 is one whose greedy captions run a few
tokens before [SEP] on these images, so the decoding loop is exercised past its first step. The folder holds:
- manifest.json: what a build's manifest says about the model, its graphs' I/O and its host steps (family,
  graph_order, model.config, preprocessing, tokenizer, text layout); target "replay": every graph's "file" is
  golden/index.json, whose recorded calls the replay tests play back;
- vocab.txt and vocabularies.json, as a build writes them;
- golden/index.json and raw arrays (converters/goldens.py's format): per image every host step python_ref records
  and *every* graph call (all caption_step calls, so a replay can run the whole greedy loop), plus
  `preprocess_cases`: crops of the images resized to squares of other sizes (downscale, upscale, one axis
  unchanged, no resize, 1-pixel images) with Pillow-exact bicubic and normalised with the model's mean/std.
`tests/native/test_efficientvlm_goldens.py` regenerates it and compares with the committed copy.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import torch

import minivlm
from minivlm.converters.build_folder import atomic_directory
from minivlm.converters.goldens import INDEX_FORMAT, INDEX_VERSION, GoldenWriter, tokenizer_cases
from minivlm.converters.manifest import SCHEMA_VERSION, VOCAB_FILE, VOCABULARIES_FILE
from minivlm.converters.samples import SampleImage, golden_images, trace
from minivlm.python_ref.efficientvlm.family import EFFICIENTVLM
from minivlm.python_ref.efficientvlm.graphs import export_graphs
from minivlm.python_ref.efficientvlm.preprocess import preprocess, resize_bicubic

REPO = Path(__file__).resolve().parents[3]
DEFAULT_OUT = REPO / "tests" / "golden_efficientvlm"
PRESET = "efficientvlm-demo-tiny"
SEED = 7
# What stands in for each graph's file: the replay tests run every graph from its calls recorded in the index.
REPLAY_FILE = "golden/index.json"
# Images of the replay: crops of the golden images (index into golden_images(), top, left, height, width), small
# enough that the uint8 input stays under 40 kB; both aspect ratios, one scene and one photo.
CASES = (("scene_crop", 2, 40, 20, 120, 90), ("photo_crop", 0, 100, 200, 70, 100))
# Preprocessing cases: (image, top, left, height, width, size): 4x downscale, non-square, upscale, one axis
# already `size` (that pass is skipped), no resize at all, 1x1 and 1xN images, a large odd-factor downscale.
PREPROCESS_CASES = (
    (2, 0, 0, 96, 96, 24),
    (0, 180, 190, 50, 70, 32),
    (3, 120, 120, 9, 13, 40),
    (1, 100, 100, 32, 57, 32),
    (2, 64, 64, 20, 20, 20),
    (0, 250, 250, 1, 1, 8),
    (1, 40, 40, 1, 37, 12),
    (3, 0, 0, 150, 130, 17),
)


def _tensor_specs(names: tuple[str, ...], tensors: tuple[torch.Tensor, ...]) -> list[dict]:
    return [{"name": n, "shape": list(t.shape), "dtype": str(t.dtype).removeprefix("torch."), "batch_axis": 0}
            for n, t in zip(names, tensors, strict=True)]


@torch.no_grad()
def graph_specs(model) -> dict[str, dict]:
    """Each graph's inputs and outputs as a build's manifest lists them (name, shape, dtype, batch axis)."""
    specs = {}
    for name, graph in export_graphs(model).items():
        inputs = graph.example_inputs(1)
        specs[name] = {"file": REPLAY_FILE, "inputs": _tensor_specs(graph.input_names, inputs),
                       "outputs": _tensor_specs(graph.output_names, graph(*inputs))}
    return specs


def manifest(pipeline) -> dict:
    cfg = pipeline.cfg
    return {
        "schema_version": SCHEMA_VERSION,
        "family": EFFICIENTVLM.name,
        "note": "host-step goldens and recorded graph calls of python_ref, no graph files (the graphs replay "
                "golden/index.json): written by "
                "sdk/native/tools/make_efficientvlm_goldens.py",
        "model": {"name": PRESET, "preset": cfg.name, "source": f"random init (seed {SEED})",
                  "config": dataclasses.asdict(cfg)},
        "target": "replay",
        "delegate": None,
        "precision": "fp32",
        "graph_order": list(EFFICIENTVLM.graph_names),
        "graphs": graph_specs(pipeline.model),
        **EFFICIENTVLM.describe(pipeline, VOCAB_FILE, VOCABULARIES_FILE),
        "golden_dir": "golden",
    }


def write(out: Path) -> None:
    pipeline = minivlm.load(PRESET, random_init=True, seed=SEED).pipeline
    images = golden_images()
    with atomic_directory(out, force=True, replaceable=_not_these_goldens) as tmp:
        (tmp / "manifest.json").write_text(json.dumps(manifest(pipeline), indent=1) + "\n", encoding="utf-8")
        tok = pipeline.tokenizer
        (tmp / VOCAB_FILE).write_text("".join(tok.id_to_token(i) + "\n" for i in range(tok.vocab_size)), encoding="utf-8")
        (tmp / VOCABULARIES_FILE).write_text(json.dumps(dataclasses.asdict(pipeline.vocab), indent=1) + "\n",
                                             encoding="utf-8")
        golden = tmp / "golden"
        golden.mkdir()
        w = GoldenWriter(golden)
        io = {name: (g.input_names, g.output_names) for name, g in export_graphs(pipeline.model).items()}
        cases = {}
        for name, index, top, left, h, wd in CASES:
            base = images[index]
            image = np.ascontiguousarray(base.image[top:top + h, left:left + wd])
            sample = SampleImage(name, f"{base.name}[{top}:{top + h}, {left}:{left + wd}]", image, base.question, base.text)
            tr = trace(pipeline, sample)
            host = {step: {io: w.group(f"{name}/{step}.{io}", values[io]) for io in ("inputs", "outputs")}
                    for step, values in tr.steps.items()}
            graphs = {}
            for graph in EFFICIENTVLM.graph_names:
                in_names, out_names = io[graph]
                graphs[graph] = [
                    {"call": i, "inputs": w.group(f"{name}/{graph}.{i}.inputs", dict(zip(in_names, ins, strict=True))),
                     "outputs": w.group(f"{name}/{graph}.{i}.outputs", dict(zip(out_names, outs, strict=True)))}
                    for i, (ins, outs) in enumerate(tr.calls[graph])]
            cases[name] = {"source": sample.source, "height": h, "width": wd, "question": sample.question,
                           "text": sample.text, "host_steps": host, "graphs": graphs}
        v = pipeline.cfg.vision
        pre = []
        for i, (index, top, left, h, wd, size) in enumerate(PREPROCESS_CASES):
            crop = np.ascontiguousarray(images[index].image[top:top + h, left:left + wd])
            assert crop.shape == (h, wd, 3), (i, crop.shape)
            pre.append({"source": f"{images[index].name}[{top}:{top + h}, {left}:{left + wd}]", "size": size,
                        "image": w.entry(f"preprocess/{i}.image.bin", torch.from_numpy(crop)),
                        "resized": w.entry(f"preprocess/{i}.resized.bin", torch.from_numpy(resize_bicubic(crop, size))),
                        "pixels": w.entry(f"preprocess/{i}.pixels.bin", preprocess(crop, size, v.pixel_mean, v.pixel_std))})
        index_json = {"version": INDEX_VERSION, "format": INDEX_FORMAT, "model": PRESET, "images": list(cases),
                      "cases": cases, "preprocess_cases": pre, "tokenizer": tokenizer_cases(tok)}
        (golden / "index.json").write_text(json.dumps(index_json, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        (tmp / ".gitattributes").write_text("*.bin binary\n", encoding="utf-8")


def _not_these_goldens(folder: Path) -> str | None:
    """Why `write` may not replace `folder`, or None: only an empty folder or one this script wrote."""
    if not any(folder.iterdir()):
        return None
    try:
        note = json.loads((folder / "manifest.json").read_text(encoding="utf-8")).get("note", "")
    except (OSError, ValueError, AttributeError):
        note = ""
    if "make_efficientvlm_goldens.py" in note:
        return None
    return f"{folder} was not written by make_efficientvlm_goldens.py; nothing was touched"


if __name__ == "__main__":
    write(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_OUT)
