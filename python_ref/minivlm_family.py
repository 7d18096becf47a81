"""MiniVLM's family declaration (`MINIVLM`, see `family.py`): its six graphs, the host steps a build records on
one image (`record_host_steps`: each step recomputed from what the graphs saw and checked against what the
pipeline did, so a golden can never drift from the pipeline it documents) and the manifest's description of
them (`describe`: docs/ARCHITECTURE.md §6)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from types import MappingProxyType

import numpy as np
import torch

from .config import PRESETS, MiniVLMConfig, structure, with_structure
from .family import Family, same_as_traced
from .fusion import MASK_VALUE
from .generate import DEFAULT_BEAMS, greedy
from .packing import FUSION_INPUT_NAMES
from .pipeline import GRAPH_NAMES, Graphs, MiniVLM, Pipeline, Vocabularies
from .postprocess import select_proposals, select_regions
from .preprocess import preprocess
from .tokenizer import DEFAULT_VOCAB

# caption_step calls a build's goldens keep per image: t=1 (empty cache) and t=2 (one cached token).
GOLDEN_STEP_CALLS = 2
HOST_STEPS = ("preprocess", "proposals", "region_selection", "detections", "caption_packing", "greedy_caption",
              "question_packing", "answer", "match")


@torch.no_grad()
def record_host_steps(traced: Pipeline, calls: dict, image: np.ndarray, question: str, text: str) -> dict:
    """Detect, caption, answer and match on one image through `traced` (whose graphs append to `calls`), and
    every host step's inputs and outputs."""
    steps: dict = {}
    tee = traced.cfg.tee
    found = traced.regions(image)
    (pixels,), stage1 = calls["tee_stage1"][0]
    mine, box = preprocess(image, tee.image_size, tee.pixel_mean, tee.pixel_std)
    same_as_traced("preprocess", mine, pixels)
    steps["preprocess"] = {
        "inputs": {"image": torch.from_numpy(np.ascontiguousarray(image))},
        "outputs": {"pixels": pixels, "letterbox": {"height": box.height, "width": box.width, "scale": box.scale,
                                                    "resized_height": box.resized_height, "resized_width": box.resized_width}},
    }
    objectness, deltas = stage1[-2][0], stage1[-1][0]
    proposals, valid = select_proposals(objectness, deltas, traced.anchors, traced.level_sizes, tee.rpn, tee.image_size)
    stage2_in, stage2 = calls["tee_stage2"][0]
    same_as_traced("proposals", proposals[None], stage2_in[-1])
    steps["proposals"] = {"inputs": {"objectness": objectness, "deltas": deltas, "anchors": traced.anchors},
                          "outputs": {"proposals": proposals, "valid": valid}}
    features, class_logits, box_deltas, attribute_logits = (t[0] for t in stage2)
    regions = select_regions(proposals, valid, class_logits, box_deltas, attribute_logits, features, tee.roi_head, tee.image_size)
    same_as_traced("region selection", regions.boxes, found.regions.boxes)
    steps["region_selection"] = {
        "inputs": {"proposals": proposals, "valid": valid, "class_logits": class_logits, "box_deltas": box_deltas,
                   "attribute_logits": attribute_logits, "features": features},
        "outputs": {"boxes": regions.boxes, "labels": regions.labels, "scores": regions.scores,
                    "proposal_indices": regions.proposal_indices},
    }
    steps["detections"] = {
        "inputs": {"boxes": regions.boxes, "letterbox_scale": box.scale},
        "outputs": {"boxes": found.boxes, "tags": list(found.tags), "region_tokens": found.tokens},
    }

    caption_inputs = traced.pack(found, "", require_text=False)
    caption = greedy(traced.graphs.caption, traced.tokenizer, caption_inputs)
    steps["caption_packing"] = {"inputs": {"tags": list(found.tags), "region_tokens": found.tokens},
                                "outputs": dict(zip(FUSION_INPUT_NAMES, caption_inputs.as_tuple()))}
    steps["greedy_caption"] = {"inputs": {}, "outputs": {
        "token_ids": torch.tensor(caption.token_ids, dtype=torch.int64),
        "caption": traced.tokenizer.decode(list(caption.token_ids)), "finished": caption.finished}}
    question_inputs = traced.pack(found, question)
    steps["question_packing"] = {"inputs": {"question": question, "tags": list(found.tags)},
                                 "outputs": dict(zip(FUSION_INPUT_NAMES, question_inputs.as_tuple()))}
    steps["answer"] = {"inputs": {"question": question}, "outputs": {"answer": traced.answer_of(found, question)}}
    steps["match"] = {"inputs": {"text": text}, "outputs": {"probability": traced.match_of(found, text)}}
    return steps


def describe(pipeline: Pipeline, vocab_file: str, vocabularies_file: str) -> dict:
    """The manifest's preprocessing, tokenizer, vocabularies file, fusion layout and postprocessing."""
    cfg, tok = pipeline.cfg, pipeline.tokenizer
    tee, fusion = cfg.tee, cfg.fusion
    return {
        "preprocessing": {
            "input": "uint8 RGB (H, W, 3)", "size": tee.image_size, "letterbox": "top-left",
            "scale": "size / max(H, W)", "resized": "floor(H*scale + 0.5) x floor(W*scale + 0.5)",
            "resample": "bilinear, half-pixel centres, no antialias, on float32 0..255",
            "normalise": "(v / 255 - mean) / std", "mean": list(tee.pixel_mean), "std": list(tee.pixel_std),
            "padding": "0 after normalisation", "layout": "NCHW float32",
        },
        "tokenizer": tok.describe(vocab_file),
        "vocabularies_file": vocabularies_file,
        "fusion_layout": {"max_text_len": fusion.max_text_len, "max_text_tags_len": fusion.max_text_tags_len,
                          "max_regions": fusion.max_regions, "region_dim": fusion.region_dim,
                          "attention_mask_value": MASK_VALUE},
        "postprocessing": {
            "rpn": dataclasses.asdict(tee.rpn), "roi_head": dataclasses.asdict(tee.roi_head),
            "region_geometry": "[x1/W, y1/H, x2/W, y2/H, w/W, h/H] in original-image pixels",
            "caption": {"max_caption_tokens": fusion.max_caption_tokens, "decoding": "greedy (argmax) or beam search",
                        "stop": "[SEP]"},
            "match": "softmax(match_logits)[1]", "answer": "argmax(answer_logits)",
        },
    }


def _vocab_file(cfg: MiniVLMConfig) -> Path:
    return DEFAULT_VOCAB  # every MiniVLM preset uses BERT uncased's vocabulary


MINIVLM = Family(
    name="minivlm",
    config_type=MiniVLMConfig,
    presets=MappingProxyType(PRESETS),
    graph_names=GRAPH_NAMES,
    model=MiniVLM,
    graphs=lambda model: Graphs.of(model).modules(),
    assemble=lambda cfg, tokenizer, vocab, graphs: Pipeline(cfg, tokenizer, vocab, Graphs.named(cfg.fusion, graphs)),
    vocab_file=_vocab_file,
    vocabularies=Vocabularies,
    host_steps=HOST_STEPS,
    record=record_host_steps,
    describe=describe,
    # caption_step's second call, whose cache already holds a token, so export never sees only the empty-cache
    # special case.
    export_call=MappingProxyType({"caption_step": 1}),
    golden_calls=MappingProxyType({"caption_step": GOLDEN_STEP_CALLS}),
    slowest=("tee_stage1", "caption_step"),
    # Beam search steps every beam at once: a build runs them in one call of this graph, not one call per beam.
    batched=MappingProxyType({"caption_step_beam": ("caption_step", DEFAULT_BEAMS)}),
    # A pruned fusion encoder's per-layer heads and FFN widths (`minivlm prune`).
    structure=structure,
    with_structure=with_structure,
)

__all__ = ["GOLDEN_STEP_CALLS", "HOST_STEPS", "MINIVLM", "describe", "record_host_steps"]
