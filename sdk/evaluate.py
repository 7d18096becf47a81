"""`minivlm eval`: score a pipeline on fresh scenes from a stream it was not trained on (docs/ARCHITECTURE.md §2).

Detection mAP@0.5 over the 18 classes, caption exact match (greedy decoding), VQA accuracy (overall and per
question type). Training draws scenes of stream 1; evaluation defaults to stream 1000.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

import numpy as np

from minivlm.errors import ConfigError, InputError
from minivlm.metrics import accuracy, average_precision_at_iou, exact_match_rate
from minivlm.python_ref.pipeline import Pipeline
from minivlm.python_ref.scenes import generate_scene

EVAL_SEED = 1000
QUESTION_TYPES = (("how many", "count"), ("what color", "colour"), ("what shape", "shape"), ("is there", "yes/no"))


@dataclass(frozen=True)
class EvalReport:
    n: int
    seed: int
    detection_map: float
    caption_exact_match: float
    vqa_accuracy: float
    vqa_by_type: dict[str, float] = field(default_factory=dict)
    questions: int = 0
    seconds: float = 0.0
    caption_errors: tuple[tuple[str, str], ...] = ()  # (reference, prediction), first few

    def table(self) -> str:
        rows = [
            ("scenes", f"{self.n} (seed {self.seed})"),
            ("detection mAP@0.5", f"{self.detection_map:.3f}"),
            ("caption exact match", f"{100 * self.caption_exact_match:.1f} %"),
            ("VQA accuracy", f"{100 * self.vqa_accuracy:.1f} % of {self.questions}"),
            *((f"  {name}", f"{100 * acc:.1f} %") for name, acc in self.vqa_by_type.items()),
            ("time", f"{self.seconds:.0f} s"),
        ]
        return format_rows(rows)


def format_rows(rows: list[tuple[str, str]]) -> str:
    """An eval report's table: names left-aligned in one column, values after them."""
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def question_type(question: str) -> str:
    return next((name for prefix, name in QUESTION_TYPES if question.startswith(prefix)), "other")


def evaluate(pipe: Pipeline, n: int = 300, seed: int = EVAL_SEED, progress: Callable[[Iterable], Iterable] = iter) -> EvalReport:
    """Run detection, greedy captioning and every question of `n` scenes of stream `seed` (a MiniVLM pipeline:
    detection mAP needs a detector)."""
    if not isinstance(pipe, Pipeline):
        raise ConfigError(f"minivlm eval scores MiniVLM models (its detection mAP needs a detector); "
                          f"{pipe.cfg.name} is not one")
    if n < 1:
        raise InputError(f"n is {n}, expected at least 1 scene")
    started = time.monotonic()
    detections, truths, captions, references = [], [], [], []
    answers, expected, kinds = [], [], []
    for index in progress(range(n)):
        scene = generate_scene(seed, index)
        found = pipe.regions(scene.image)
        dets = pipe.detections_of(found)
        detections.append((np.array([d.box for d in dets], dtype=np.float64).reshape(-1, 4),
                           [d.label for d in dets], np.array([d.score for d in dets])))
        truths.append((np.asarray(scene.boxes, dtype=np.float64), list(scene.labels)))
        captions.append(pipe.caption_of(found))
        references.append(scene.caption)
        for question, answer in scene.qa:
            answers.append(pipe.answer_of(found, question))
            expected.append(answer)
            kinds.append(question_type(question))
    by_type = {}
    for _, name in QUESTION_TYPES:
        idx = [i for i, k in enumerate(kinds) if k == name]
        if idx:
            by_type[name] = accuracy([answers[i] for i in idx], [expected[i] for i in idx])
    errors = tuple((r, c) for r, c in zip(references, captions) if r.strip().lower() != c.strip().lower())[:5]
    return EvalReport(
        n=n,
        seed=seed,
        detection_map=average_precision_at_iou(detections, truths, 0.5),
        caption_exact_match=exact_match_rate(captions, references),
        vqa_accuracy=accuracy(answers, expected),
        vqa_by_type=by_type,
        questions=len(answers),
        seconds=time.monotonic() - started,
        caption_errors=errors,
    )
