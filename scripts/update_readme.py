"""Regenerate the README's number tables from the code: per-part parameters/FLOPs and the demo model's scores.

    python scripts/update_readme.py            # model tables + `minivlm eval --n 300` on the bundled weights
    python scripts/update_readme.py --n 50     # quicker, for a draft
    python scripts/update_readme.py --only EFFICIENTVLM-TABLE   # one table (a name of TABLES)

Each table sits between `<!-- NAME -->` and `<!-- /NAME -->` markers; nothing else in README.md changes.
tests/test_readme.py holds the README to the tables that are quick to count (EFFICIENTVLM-TABLE always,
MODEL-TABLE in the slow tier) and to the reports they are made from (EFFICIENTVLM-DEMO-TABLE, BENCH-TABLE).
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from minivlm.evaluate import evaluate
from minivlm.loading import bundled_weights, load
from minivlm.python_ref.efficientvlm.config import PRESETS as EFFICIENTVLM_PRESETS
from minivlm.python_ref.efficientvlm.config import TEACHERS
from minivlm.python_ref.efficientvlm.profile import profile_efficientvlm
from minivlm.python_ref.profile import profile_model
from minivlm.python_ref.weights import read_safetensors

README = Path(__file__).resolve().parents[1] / "README.md"
MATRIX = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "convert_matrix.json"
# scripts/train_efficientvlm_demo.py --install writes it: the chain's scores and times, and the weights' sha256.
EFFICIENTVLM_REPORT = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "efficientvlm_demo.json"
# scripts/prune_efficientvlm_demo.py --install writes it: the pruned students' reports and scores.
PRUNING_REPORT = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "efficientvlm_pruning.json"
# `minivlm bench ... --json` writes them (docs/BENCHMARKS.md): the demo model's, the paper preset's if run, and
# the EfficientVLM demo student against its teacher (`--versus`) if run.
BENCH_REPORTS = tuple(Path(__file__).resolve().parents[1] / "benchmarks" / "results" / f"bench_{name}.json"
                      for name in ("demo", "paper", "efficientvlm_compare"))
# The budget derived from the MiniVLM authors' configs (arXiv 2012.06946), for comparison with what we count.
PAPER_BUDGET = {"backbone (EfficientNet)": "≈ 3.6", "BiFPN": "≈ 0.2", "box head fc6+fc7": "≈ 2.1",
                "predictors (cls, box)": "≈ 8.2", "attribute head": "≈ 1.0", "tee/total": "≈ 15",
                "word embeddings": "11.7", "fusion/total": "≈ 33 (without task heads)"}
# EfficientVLM's abstract (Wang et al. 2022, arXiv 2210.07795): the distilled 6/3/3 student after modal-adaptive
# pruning has 93 M parameters, 44.3 % of the teacher's. Quoted as reported (no pruned paper-size weights exist here), as a row
# below efficientvlm-paper's.
EFFICIENTVLM_PAPER_STUDENT_M, EFFICIENTVLM_PAPER_STUDENT_SHARE = 93, 0.443


def model_table() -> str:
    paper = profile_model("minivlm-paper")
    demo = {(r.model, r.part.split(" (")[0]): r for r in profile_model("minivlm-demo")}
    lines = ["## Model sizes (counted by `minivlm info`)", "",
             "Paper preset at 512×512, 300 proposals, 70 text+tag tokens and 50 regions; demo preset at its own sizes.",
             "", "| network | part | paper params (M) | paper GFLOPs | design budget (M) | demo params (M) | demo GFLOPs |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for r in paper:
        key = f"{r.model}/total" if r.part == "total" else r.part
        d = demo.get((r.model, r.part.split(" (")[0]))
        lines.append(f"| {r.model} | {r.part} | {r.params / 1e6:.2f} | {r.flops / 1e9:.2f} | {PAPER_BUDGET.get(key, '')} | "
                     f"{d.params / 1e6:.2f} | {d.flops / 1e9:.3f} |" if d else "")
    return "\n".join(lines)


def efficientvlm_table() -> str:
    """Parameters and FLOPs per part of every EfficientVLM preset, as `minivlm info` counts them."""
    cells = "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |"
    lines = ["## EfficientVLM sizes (counted by `minivlm info`)", "",
             "One image at the preset's size and one text of `max_text_len` tokens: image encoder, text encoder, "
             "cross-modal layers over every image token, ITC, ITM and VQA heads, MLM logits of one position. "
             "Each part as parameters (M) / GFLOPs; text = embeddings + text layers, heads = ITC, ITM, MLM and "
             "the SDK's VQA classifier. The vocabulary-sized tensors are the word embeddings (which the MLM decoder "
             "reuses) and the MLM bias.", "",
             cells.format("preset", "layers (vision/text/cross), width", "image (tokens), text tokens", "vision",
                          "text", "cross-modal", "heads", "total", "params without vocabulary tensors (M)",
                          "vs its teacher: params, without vocabulary, FLOPs"),
             "|---|---|---|---:|---:|---:|---:|---:|---:|---|"]
    profiles = {name: profile_efficientvlm(name) for name in EFFICIENTVLM_PRESETS}
    for name, profile in profiles.items():
        v, t = profile.cfg.vision, profile.cfg.text
        r = profile.rows
        parts = [r[:1], r[1:3], r[3:4], r[4:6], r[6:]]
        teacher = profiles.get(TEACHERS.get(name, ""))
        ratios = (f"{profile.total.params / teacher.total.params:.3f}, "
                  f"{profile.params_without_vocabulary / teacher.params_without_vocabulary:.3f}, "
                  f"{profile.total.flops / teacher.total.flops:.3f}") if teacher else ""
        lines.append(cells.format(
            f"`{name}`", f"{v.layers}/{t.text_layers}/{t.cross_layers}, {v.width}",
            f"{v.image_size}² ({v.num_tokens}), {t.max_text_len}",
            *(f"{sum(x.params for x in p) / 1e6:.3f} / {sum(x.flops for x in p) / 1e9:.3f}" for p in parts),
            f"{profile.params_without_vocabulary / 1e6:.3f}", ratios))
        if name == "efficientvlm-paper":
            lines.append(cells.format("the paper's pruned student (reported, not counted)", "6/3/3, pruned", "", "",
                                      "", "", "", f"{EFFICIENTVLM_PAPER_STUDENT_M} / –", "",
                                      f"params {EFFICIENTVLM_PAPER_STUDENT_SHARE:.3f}"))
    teacher, student = profiles["efficientvlm-teacher"], profiles["efficientvlm-paper"]
    without_vqa = {p: p.total.params - p.rows[5].params for p in (teacher, student)}
    lines += ["", f"X-VLM and EfficientVLM answer generatively, so their counts have no VQA classifier: without it "
              f"the teacher has {without_vqa[teacher] / 1e6:.2f} M parameters and the unpruned paper student "
              f"{without_vqa[student] / 1e6:.2f} M ({without_vqa[student] / without_vqa[teacher]:.3f} of the "
              f"teacher). The paper's {EFFICIENTVLM_PAPER_STUDENT_M} M at {EFFICIENTVLM_PAPER_STUDENT_SHARE:.1%} "
              f"implies a teacher of ≈ {EFFICIENTVLM_PAPER_STUDENT_M / EFFICIENTVLM_PAPER_STUDENT_SHARE:.0f} M; the "
              f"gap from {without_vqa[student] / 1e6:.2f} M to {EFFICIENTVLM_PAPER_STUDENT_M} M is the paper's "
              f"modal-adaptive pruning (`minivlm prune`, docs/PRUNING.md; the paper's own pruned weights are not available)."]
    return "\n".join(lines)


def demo_table(n: int) -> str:
    path = bundled_weights("minivlm-demo")
    _, meta = read_safetensors(path)
    settings = json.loads(meta["training"])
    report = evaluate(load("minivlm-demo").pipeline, n=n)
    return "\n".join([
        "## The bundled demo model", "",
        f"`minivlm-demo` ({path.stat().st_size / 1e6:.1f} MB of safetensors) is the output of `minivlm train` with "
        f"its default settings (seed {settings['seed']}: {settings['detector_steps']} detector steps, "
        f"{settings['region_scenes']} region scenes, {settings['pretrain_steps']} + {settings['finetune_steps']} fusion "
        f"steps). {training_time(meta)} `minivlm eval` on scenes from a stream it never saw:", "", "```",
        *report.table().splitlines(), "```",
    ])


def efficientvlm_demo_table() -> str:
    """The bundled EfficientVLM demo models and the no-teacher student, from the chain's report."""
    report = json.loads(EFFICIENTVLM_REPORT.read_text())
    models = report["models"]
    teacher, student = models["teacher"], models["student"]
    counts = {m["preset"]: profile_efficientvlm(m["preset"]) for m in models.values()}
    rows = [("teacher (`efficientvlm-demo-teacher`)", teacher), ("distilled student (`efficientvlm-demo-student`)", student),
            ("student without the teacher (not bundled)", models["no-teacher"])]
    tasks = (("caption_exact_match", "caption exact match"), ("vqa_accuracy", "VQA"), ("retrieval_r1", "image→text R@1"))

    def stages(m: dict) -> str:
        times = m["stage_seconds"]
        names = {"vision": "vision warm-up", "train": "joint" if "vision" in times else "training",
                 "distill": "distillation"}
        return " + ".join(f"{names.get(k, k)} {v / 60:.1f}" for k, v in times.items())

    lines = ["## The bundled EfficientVLM demo models", "",
             f"Made by `python scripts/train_efficientvlm_demo.py --install`: {report['chain_seconds'] / 60:.1f} min "
             "of training on 2 CPU cores (the three runs below, one after the other, "
             + ("one of them resumed" if any(m["resumed"] for m in models.values()) else "each in one sitting")
             + ", as their weights record); scored by `minivlm eval` on "
             f"{teacher['n']} scenes of a stream no run saw (retrieval over the first {teacher['gallery']}).", "",
             "| model | steps | parameters without vocabulary tables (M) | training (min) | "
             + " | ".join(t for _, t in tasks) + " |", "|---|---:|---:|---|" + "---:|" * len(tasks)]
    for label, m in rows:
        warmup = m["settings"].get("vision_steps", 0) if "vision" in m["stage_seconds"] else 0
        steps = f"{warmup} + {m['settings']['steps']}" if warmup else str(m["settings"]["steps"])
        params = counts[m["preset"]].params_without_vocabulary / 1e6
        lines.append(f"| {label} | {steps} | {params:.2f} | {stages(m)} | "
                     + " | ".join(f"{100 * m[k]:.1f} %" for k, _ in tasks) + " |")
    lines.append("| distilled student / teacher | | "
                 f"{counts[student['preset']].params_without_vocabulary / counts[teacher['preset']].params_without_vocabulary:.3f} | | "
                 + " | ".join(f"{student[k] / teacher[k]:.3f}" for k, _ in tasks) + " |")
    return "\n".join(lines)


def efficientvlm_pruning_table() -> str:
    """The pruned demo students and the unpruned one, from scripts/prune_efficientvlm_demo.py's report."""
    report = json.loads(PRUNING_REPORT.read_text())
    models = report["models"]
    base = models["unpruned"]
    pruned = [m for m in models.values() if m["pruning"] is not None]
    score = {"caption": "caption_exact_match", "vqa": "vqa_accuracy", "match": "retrieval_r1"}
    scores = lambda m: " | ".join(f"{100 * m[k]:.1f} %" for k in score.values())  # noqa: E731
    minutes = lambda seconds: "–" if seconds is None else f"{seconds / 60:.1f}"  # noqa: E731
    lines = ["## Pruned EfficientVLM demo models", "",
             "Made by `python scripts/prune_efficientvlm_demo.py --install` (docs/PRUNING.md): "
             "`minivlm prune --model efficientvlm-demo-student` for each task and target t, one after the other; "
             f"scored by `minivlm eval` on {base['n']} scenes of a stream no run saw. Sparsity is the share of the "
             "attention-head and feed-forward-neuron parameters removed, counted on the saved models; "
             f"`efficientvlm-demo` (bundled, the default EfficientVLM model) is the {report['bundled']} model. "
             "Pruning time is the steps' wall time as the weights record it (– where a run's last checkpoint "
             "predates that record).", "",
             "| model | sparsity reached | vision / text / cross | parameters (M) | pruning (min) | caption exact match "
             "| VQA | image→text R@1 | task score / unpruned |", "|---|---:|---|---:|---:|---:|---:|---:|---:|",
             f"| unpruned student (`efficientvlm-demo-student`) | | | {pruned[0]['pruning']['params_before'] / 1e6:.3f} | | "
             f"{scores(base)} | |"]
    for m in pruned:
        p = m["pruning"]
        by = " / ".join(f"{v:.3f}" for v in p["sparsity_by_modality"].values())
        ratio = m[score[p["task"]]] / base[score[p["task"]]]
        lines.append(f"| {p['task']}, t = {p['target']:g} | {p['sparsity']:.3f} | {by} | {p['params_after'] / 1e6:.3f} | "
                     f"{minutes(m['training_seconds'])} | {scores(m)} | {ratio:.3f} |")
    return "\n".join(lines)


def training_time(meta: dict[str, str]) -> str:
    """The run's wall time as its weights record it (`minivlm.training.train` writes both fields)."""
    if "stage_seconds" not in meta:
        return ""
    stages = json.loads(meta["stage_seconds"])
    names = {"detector": "detector", "regions": "region extraction", "pretrain": "pre-training", "finetune": "fine-tuning"}
    parts = ", ".join(f"{names.get(k, k)} {v / 60:.1f}" for k, v in stages.items())
    sitting = "its last sitting (it was resumed)" if json.loads(meta.get("resumed", "true")) else "one sitting"
    return (f"That run took {int(meta['training_seconds']) / 60:.1f} min of wall time in {sitting} on 2 CPU cores "
            f"({parts} min), as recorded in the weights' metadata.")


def _loads(rows: list[dict]) -> str:
    """The load averages the build times were taken at (rows of older runs recorded none)."""
    if not any("load_average" in r for r in rows):
        return ""
    dates = sorted({r["date"] for r in rows if "date" in r})
    return (f" Each build's row gives the 1-minute load average at its start (– where an older run recorded none; "
            f"runs of {', '.join(dates)}): other processes on the cores stretch a build's wall time.")


def build_table() -> str:
    """Sizes and wall times of every build, from `benchmarks/convert_matrix.py`'s last run."""
    import sys

    sys.path.insert(0, str(MATRIX.parents[1]))
    from convert_matrix import markdown

    from minivlm.converters.targets import TARGETS

    results = json.loads(MATRIX.read_text())
    defaults = [r for r in results["builds"] if r["exit"] == 0 and r["precision"] == TARGETS[r["target"]].precisions[0]
                and r["delegate"] == (TARGETS[r["target"]].delegates or (None,))[0]]
    names = ", ".join(f"{r['target']} {r['precision']}" for r in defaults)
    return "\n".join([
        "## Build sizes, times and parity", "",
        f"`python benchmarks/convert_matrix.py --parity` builds the bundled model for every target and precision, "
        f"one `minivlm-convert` process at a time, timed from outside ({results['machine']}), then runs "
        f"`minivlm parity` on each build. The default build of each target "
        f"({names}) "
        f"took {sum(r['seconds'] for r in defaults):.0f} s together.{_loads(results['builds'])}", "",
        markdown(results["builds"]),
    ])


def bench_table() -> str:
    """Speed, memory and size per runtime from the `minivlm bench` reports in benchmarks/results (1 thread)."""
    from minivlm.bench.report import markdown

    parts = ["## Speed, memory and size on this CPU (`minivlm bench`)", "",
             "Made by `minivlm bench` (docs/BENCHMARKS.md says what is measured and how): each graph on the real "
             "inputs the reference recorded on one demo scene, each task end to end through the same host code, "
             "every runtime in its own process. Times are from the machine and load named, so compare the "
             "columns of one table, not tables of different runs."]
    for path in BENCH_REPORTS:
        if path.exists():
            parts += ["", markdown(json.loads(path.read_text()))]
    return "\n".join(parts)


def replace_section(text: str, name: str, body: str) -> str:
    block = f"<!-- {name} -->\n{body}\n<!-- /{name} -->"
    pattern = re.compile(rf"<!-- {name} -->.*?(<!-- /{name} -->|$)", re.S)
    if f"<!-- /{name} -->" not in text:
        pattern = re.compile(rf"<!-- {name} -->")
    return pattern.sub(lambda _: block, text, count=1)


# Every table by its marker, in README order; the build table only when convert_matrix.py has run.
TABLES = ("MODEL-TABLE", "EFFICIENTVLM-TABLE", "EFFICIENTVLM-DEMO-TABLE", "EFFICIENTVLM-PRUNING-TABLE", "DEMO-TABLE",
          "BUILD-TABLE", "BENCH-TABLE")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=300, help="scenes for the demo evaluation")
    parser.add_argument("--only", choices=TABLES, action="append", help="regenerate only this table (repeatable)")
    args = parser.parse_args()
    makers = {"MODEL-TABLE": model_table, "EFFICIENTVLM-TABLE": efficientvlm_table,
              "EFFICIENTVLM-DEMO-TABLE": efficientvlm_demo_table, "EFFICIENTVLM-PRUNING-TABLE": efficientvlm_pruning_table,
              "DEMO-TABLE": lambda: demo_table(args.n), "BUILD-TABLE": build_table, "BENCH-TABLE": bench_table}
    text = README.read_text()
    for name in args.only or TABLES:
        source = {"BUILD-TABLE": MATRIX, "EFFICIENTVLM-DEMO-TABLE": EFFICIENTVLM_REPORT,
                  "EFFICIENTVLM-PRUNING-TABLE": PRUNING_REPORT, "BENCH-TABLE": BENCH_REPORTS[0]}.get(name)
        if source is None or source.exists():
            text = replace_section(text, name, makers[name]())
    README.write_text(text)


if __name__ == "__main__":
    main()
