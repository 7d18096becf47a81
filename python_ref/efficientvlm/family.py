"""EfficientVLM's family declaration (`EFFICIENTVLM`, see `python_ref/family.py`): its five graphs, the host steps a
build records on one image (`record_host_steps`, each checked against what the graphs were fed) and the manifest's
description of them (`describe`)."""

from __future__ import annotations

from types import MappingProxyType

import numpy as np
import torch

from ..family import Family, same_as_traced
from ..fusion import MASK_VALUE
from .config import PRESETS, EfficientVLMConfig, structure, vocab_path, with_structure
from .generate import PROMPT
from .graphs import GRAPH_NAMES, export_graphs
from .model import EfficientVLM
from .pipeline import Graphs, Pipeline, Vocabularies, similarity
from .preprocess import PRECISION_BITS, resize_bicubic

HOST_STEPS = ("preprocess", "caption_packing", "greedy_caption", "question_packing", "answer", "text_packing", "match",
              "retrieval")


def _packed(ids: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
    return {"input_ids": ids, "token_mask": mask}


@torch.no_grad()
def record_host_steps(traced: Pipeline, calls: dict, image: np.ndarray, question: str, text: str) -> dict:
    """Caption, answer, match and the retrieval features of one image through `traced` (whose graphs append to
    `calls`), and every host step's inputs and outputs."""
    encoded = traced.encode(image)
    (pixels,), _ = calls["vision"][0]
    same_as_traced("preprocess", traced.preprocess(image), pixels)
    resized = torch.from_numpy(resize_bicubic(image, traced.cfg.vision.image_size))
    steps: dict = {"preprocess": {"inputs": {"image": torch.from_numpy(np.ascontiguousarray(image))},
                                  "outputs": {"resized": resized, "pixels": pixels}}}
    caption = traced.caption_tokens(encoded)
    prompt = traced.prompt()
    first, _ = calls["caption_step"][0]
    same_as_traced("caption packing", prompt[0], first[1])
    same_as_traced("caption packing", prompt[1], first[2])
    steps["caption_packing"] = {"inputs": {"prompt": PROMPT}, "outputs": _packed(*prompt)}
    steps["greedy_caption"] = {"inputs": {}, "outputs": {
        "token_ids": torch.tensor(caption.token_ids, dtype=torch.int64),
        "caption": traced.tokenizer.decode(list(caption.token_ids)), "finished": caption.finished}}
    question_inputs = traced.pack(question, "question")
    steps["question_packing"] = {"inputs": {"question": question}, "outputs": _packed(*question_inputs)}
    steps["answer"] = {"inputs": {"question": question}, "outputs": {"answer": traced.answer_of(encoded, question)}}
    same_as_traced("question packing", question_inputs[0], calls["vqa"][0][0][1])
    text_inputs = traced.pack(text)
    steps["text_packing"] = {"inputs": {"text": text}, "outputs": _packed(*text_inputs)}
    steps["match"] = {"inputs": {"text": text}, "outputs": {"probability": traced.match_of(encoded, text)}}
    same_as_traced("text packing", text_inputs[0], calls["match"][0][0][1])
    text_feature = traced.text_feature(text)
    steps["retrieval"] = {"inputs": {"text": text}, "outputs": {
        "image_feature": encoded.feature, "text_feature": text_feature,
        "similarity": float(similarity(encoded.feature[None], text_feature[None])[0, 0])}}
    return steps


def describe(pipeline: Pipeline, vocab_file: str, vocabularies_file: str) -> dict:
    """The manifest's preprocessing, tokenizer, vocabularies file, text layout and postprocessing."""
    cfg, tok = pipeline.cfg, pipeline.tokenizer
    v, t = cfg.vision, cfg.text
    prompt_ids, prompt_mask = pipeline.prompt()
    return {
        "preprocessing": {
            "input": "uint8 RGB (H, W, 3)", "size": v.image_size,
            "resize": "the whole image to size x size (aspect ratio not kept, no letterbox), as X-VLM",
            "resample": f"Pillow's BICUBIC (a = -0.5, support 2 x max(1, in/out) per axis), horizontal pass then "
                        f"vertical, integer weights with {PRECISION_BITS} fraction bits, each pass rounded and "
                        f"clipped to uint8 (python_ref/efficientvlm/preprocess.py)",
            "normalise": "(v / 255 - mean) / std", "mean": list(v.pixel_mean), "std": list(v.pixel_std),
            "layout": "NCHW float32",
        },
        "tokenizer": tok.describe(vocab_file),
        "vocabularies_file": vocabularies_file,
        "text_layout": {"max_text_len": t.max_text_len, "packing": "[CLS] text [SEP] then [PAD] to max_text_len",
                        "token_mask": "1 on [CLS] text [SEP], 0 on padding", "image_tokens": v.num_tokens,
                        "attention_mask_value": MASK_VALUE},
        "postprocessing": {
            "caption": {"prompt": PROMPT, "prompt_ids": prompt_ids[0, : int(prompt_mask.sum())].tolist(),
                        "decoding": "greedy: caption_step on the tokens so far (token_mask 1 on them), next token = "
                                    "argmax(token_logits[last of them])",
                        "stop": "[SEP]", "max_text_len": t.max_text_len},
            "match": "softmax(match_logits)[1]", "answer": "argmax(answer_logits)",
            "retrieval": "image_feature . text_feature (unit ITC vectors)",
        },
    }


def _assemble(cfg: EfficientVLMConfig, tokenizer, vocab: Vocabularies, graphs) -> Pipeline:
    return Pipeline(cfg, tokenizer, vocab, Graphs.named(graphs))


EFFICIENTVLM = Family(
    name="efficientvlm",
    config_type=EfficientVLMConfig,
    presets=MappingProxyType(PRESETS),
    graph_names=GRAPH_NAMES,
    model=EfficientVLM,
    graphs=export_graphs,
    assemble=_assemble,
    vocab_file=vocab_path,
    vocabularies=Vocabularies,
    host_steps=HOST_STEPS,
    record=record_host_steps,
    describe=describe,
    slowest=("vision", "caption_step"),
    structure=structure,
    with_structure=with_structure,
)

__all__ = ["EFFICIENTVLM", "HOST_STEPS", "describe", "record_host_steps"]
