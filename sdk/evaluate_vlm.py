"""`minivlm eval` for an EfficientVLM: caption exact match, VQA accuracy (overall and per question type) and
image-to-text retrieval on fresh scenes of a stream training never draws (docs/ARCHITECTURE.md §2, §11).

Retrieval ranks a gallery of the first `gallery` scenes' captions for each of their images, as X-VLM
evaluates it (zengyan-97/X-VLM `Retrieval.py`, `evaluation`): ITC similarity ranks every caption, then ITM
re-scores the top `rerank` and orders them by its match score. A hit is a top caption whose text equals the
image's own caption: demo captions repeat ("a red circle"), and identical texts cannot be told apart.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

import torch

from minivlm.errors import InputError
from minivlm.evaluate import EVAL_SEED, QUESTION_TYPES, evaluate, format_rows, question_type
from minivlm.metrics import accuracy, exact_match_rate
from minivlm.python_ref.efficientvlm.pipeline import Pipeline, similarity
from minivlm.python_ref.scenes import generate_scene

GALLERY = 100  # scenes in the retrieval gallery
RERANK = 16  # captions ITM re-scores per image (X-VLM's k_test, scaled to the gallery)


@dataclass(frozen=True)
class VLMEvalReport:
    n: int
    seed: int
    caption_exact_match: float
    vqa_accuracy: float
    retrieval_r1: float  # image -> text, ITC then ITM re-ranking
    retrieval_r1_itc: float  # image -> text, ITC alone
    gallery: int
    vqa_by_type: dict[str, float] = field(default_factory=dict)
    questions: int = 0
    seconds: float = 0.0
    caption_errors: tuple[tuple[str, str], ...] = ()  # (reference, prediction), first few

    def table(self) -> str:
        rows = [
            ("scenes", f"{self.n} (seed {self.seed})"),
            ("caption exact match", f"{100 * self.caption_exact_match:.1f} %"),
            ("VQA accuracy", f"{100 * self.vqa_accuracy:.1f} % of {self.questions}"),
            *((f"  {name}", f"{100 * acc:.1f} %") for name, acc in self.vqa_by_type.items()),
            (f"image->text R@1 ({self.gallery} scenes)", f"{100 * self.retrieval_r1:.1f} %"),
            ("  ITC alone", f"{100 * self.retrieval_r1_itc:.1f} %"),
            ("time", f"{self.seconds:.0f} s"),
        ]
        return format_rows(rows)


def evaluate_vlm(pipe: Pipeline, n: int = 300, seed: int = EVAL_SEED, gallery: int = GALLERY,
                 progress: Callable[[Iterable], Iterable] = iter) -> VLMEvalReport:
    """Greedy captions and every question of `n` scenes of stream `seed`; retrieval over its first `gallery`."""
    if n < 1:
        raise InputError(f"n is {n}, expected at least 1 scene")
    if not 1 <= gallery <= n:
        raise InputError(f"gallery is {gallery}, expected 1 to n ({n}) scenes")
    started = time.monotonic()
    captions, references, answers, expected, kinds, features = [], [], [], [], [], []
    encodings = []
    for index in progress(range(n)):
        scene = generate_scene(seed, index)
        image = pipe.encode(scene.image)
        captions.append(pipe.caption_of(image))
        references.append(scene.caption)
        for question, answer in scene.qa:
            answers.append(pipe.answer_of(image, question))
            expected.append(answer)
            kinds.append(question_type(question))
        if index < gallery:
            features.append(image.feature)
            encodings.append(image)
    by_type = {}
    for _, name in QUESTION_TYPES:
        idx = [i for i, k in enumerate(kinds) if k == name]
        if idx:
            by_type[name] = accuracy([answers[i] for i in idx], [expected[i] for i in idx])
    texts = references[:gallery]
    scores = similarity(torch.stack(features), torch.stack([pipe.text_feature(t) for t in texts]))
    itc_hits = rerank_hits = 0
    for row, image in enumerate(encodings):
        top = scores[row].topk(min(RERANK, gallery)).indices.tolist()
        itc_hits += texts[top[0]] == texts[row]
        best = max(top, key=lambda k: pipe.match_of(image, texts[k]))
        rerank_hits += texts[best] == texts[row]
    errors = tuple((r, c) for r, c in zip(references, captions) if r.strip().lower() != c.strip().lower())[:5]
    return VLMEvalReport(
        n=n, seed=seed, caption_exact_match=exact_match_rate(captions, references),
        vqa_accuracy=accuracy(answers, expected), retrieval_r1=rerank_hits / gallery,
        retrieval_r1_itc=itc_hits / gallery, gallery=gallery, vqa_by_type=by_type, questions=len(answers),
        seconds=time.monotonic() - started, caption_errors=errors,
    )


def score(pipe, n: int = 300, seed: int = EVAL_SEED, progress: Callable[[Iterable], Iterable] = iter):
    """`minivlm eval` of either family's pipeline: `evaluate_vlm` for an EfficientVLM, `evaluate.evaluate`
    (which adds detection mAP) for a MiniVLM."""
    if isinstance(pipe, Pipeline):
        return evaluate_vlm(pipe, n=n, seed=seed, gallery=min(GALLERY, n), progress=progress)
    return evaluate(pipe, n=n, seed=seed, progress=progress)


__all__ = ["GALLERY", "RERANK", "VLMEvalReport", "evaluate_vlm", "score"]
