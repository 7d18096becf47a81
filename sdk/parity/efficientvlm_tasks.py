"""Per task, for an EfficientVLM build end to end against the reference: the same greedy caption tokens, the same
answers and match decisions, close match probabilities, each held to the named tolerance MiniVLM's rows use
(`tasks.py`). A match decision (probability above 1/2 or not) answers "does this text describe the image?",
so it is held to the answers' bar. EfficientVLM has no detector: there are no detection, tag or proposal rows,
and its host steps (preprocessing, packing) never read a graph output, so no step row either."""

from __future__ import annotations

from minivlm.converters.tolerances import Tolerance

from .checks import Check, judged
from .efficientvlm_run import EfficientVLMImageRun


def efficientvlm_task_checks(runs: list[tuple[EfficientVLMImageRun, EfficientVLMImageRun]],
                             tol: Tolerance) -> tuple[list[Check], list[dict]]:
    n = len(runs)
    same = {"captions": 0, "answers": 0, "decisions": 0}
    answers_total = decisions_total = 0
    diffs: list[float] = []
    first: dict[str, str] = {}
    per_image = []
    for ref, got in runs:
        answer_ok = [a == b for a, b in zip(ref.answers, got.answers)]
        decision_ok = [(a > 0.5) == (b > 0.5) for a, b in zip(ref.match, got.match)]
        flags = {"captions": ref.caption == got.caption, "answers": all(answer_ok), "decisions": all(decision_ok)}
        same["captions"] += flags["captions"]
        same["answers"] += sum(answer_ok)
        same["decisions"] += sum(decision_ok)
        answers_total += len(answer_ok)
        decisions_total += len(decision_ok)
        diffs += [abs(a - b) for a, b in zip(ref.match, got.match)]
        for key, ok in flags.items():
            if not ok:
                first.setdefault(key, ref.name)
        per_image.append({
            "image": ref.name,
            "caption": {"reference": ref.caption_text, "build": got.caption_text, "identical_tokens": flags["captions"]},
            "answers": {"reference": list(ref.answers), "build": list(got.answers)},
            "match": {"reference": list(ref.match), "build": list(got.match)},
        })
    where = lambda key: f"first: {first[key]}" if key in first else ""  # noqa: E731
    share = lambda k, total: same[k] / total if total else 1.0  # noqa: E731
    checks = [
        judged("task", "captions", "identical", share("captions", n), tol.captions, where("captions"), unit="%"),
        judged("task", "answers", "identical", share("answers", answers_total), tol.answers, where("answers"), unit="%"),
        judged("task", "match", "same decision", share("decisions", decisions_total), tol.answers, where("decisions"),
               unit="%"),
        judged("task", "match", "max prob diff", max(diffs, default=0.0), tol.score_max_diff),
        judged("task", "match", "mean prob diff", sum(diffs) / len(diffs) if diffs else 0.0, tol.score_mean_diff),
    ]
    return checks, per_image


__all__ = ["efficientvlm_task_checks"]
