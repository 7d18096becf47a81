"""Prune the distilled EfficientVLM demo student for captioning and for VQA at two sparsities, score every model,
and optionally bundle the captioning model at t = 0.25 as `efficientvlm-demo`.

    python scripts/prune_efficientvlm_demo.py --out runs/prune             # four runs (resumable) + eval
    python scripts/prune_efficientvlm_demo.py --out runs/prune --install   # then bundle efficientvlm-demo and
                                                                           # write the README's report

Each run is `minivlm prune --model efficientvlm-demo-student --task T --sparsity t` in its own folder under
--out (`<task>-<t>`). Then `minivlm eval` scores the unpruned student and each pruned model on the same unseen
scenes; the scores, each model's pruning report (sparsity reached overall and per modality, what each layer
kept, parameters), its run's recorded time and its weights' sha256 go to --out/report.json, with --install also
to benchmarks/results/efficientvlm_pruning.json, which scripts/update_readme.py turns into the README's table.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from tqdm import tqdm

from minivlm.checkpoints import save_weights
from minivlm.converters.atomic import atomic_path
from minivlm.converters.manifest import sha256_file
from minivlm.evaluate_vlm import evaluate_vlm
from minivlm.loading import bundled_weights, install_weights, load
from minivlm.pruning.report import pruning_of
from minivlm.pruning.run import PruneSettings, prune_run
from minivlm.python_ref.weights import read_metadata

STUDENT = "efficientvlm-demo-student"
BUNDLED = "efficientvlm-demo"  # the default EfficientVLM model: the student pruned for captioning at t = 0.25
BUNDLED_RUN = ("caption", 0.25)
RUNS = (("caption", 0.25), ("caption", 0.5), ("vqa", 0.25), ("vqa", 0.5))
ROOT = Path(__file__).resolve().parents[1]
REPORT = ROOT / "benchmarks" / "results" / "efficientvlm_pruning.json"  # what the README's table is made from


def _score(name: str, weights: Path, n: int) -> dict:
    scores = evaluate_vlm(load(str(weights)).pipeline, n=n, progress=lambda it: tqdm(it, desc=f"eval {name}", leave=False))
    print(f"== {name}\n{scores.table()}")
    meta = read_metadata(weights)
    return {"weights": str(weights), "sha256": sha256_file(weights), "preset": meta["preset"],
            "training_seconds": float(meta["training_seconds"]) if "training_seconds" in meta else None,
            "resumed": json.loads(meta["resumed"]) if "resumed" in meta else None,
            "pruning": pruning_of(weights), "caption_exact_match": scores.caption_exact_match,
            "vqa_accuracy": scores.vqa_accuracy, "vqa_by_type": scores.vqa_by_type,
            "retrieval_r1": scores.retrieval_r1, "n": scores.n, "seed": scores.seed}


def _install(weights: Path, preset: str) -> Path:
    """Bundle `weights` as `preset`: the same tensors and metadata, the metadata naming `preset`."""
    meta = {**read_metadata(weights), "preset": preset}
    with tempfile.TemporaryDirectory() as tmp:
        renamed = Path(tmp) / "model.safetensors"
        save_weights(load(str(weights)).pipeline.model, renamed, meta)
        return install_weights(renamed, preset)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/prune", help="working folder (one run folder per task and sparsity)")
    parser.add_argument("--n", type=int, default=300, help="scenes for each evaluation")
    parser.add_argument("--steps", type=int, default=PruneSettings.steps, help="fine-tuning steps of each run")
    parser.add_argument("--install", action="store_true",
                        help=f"bundle {BUNDLED} and copy the report to {REPORT.relative_to(ROOT)}")
    args = parser.parse_args()
    out = Path(args.out)
    student = bundled_weights(STUDENT)
    finals = {(task, t): prune_run(PruneSettings(model=STUDENT, task=task, sparsity=t, steps=args.steps),
                                   out / f"{task}-{t:g}") for task, t in RUNS}
    models = {"unpruned": _score(STUDENT, student, args.n)}
    models.update({f"{task} t={t:g}": _score(f"{task} t={t:g}", final, args.n) for (task, t), final in finals.items()})
    report = {"bundled": f"{BUNDLED_RUN[0]} t={BUNDLED_RUN[1]:g}", "models": models}
    with atomic_path(out / "report.json") as tmp:
        tmp.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out / 'report.json'}")
    if args.install:
        installed = _install(finals[BUNDLED_RUN], BUNDLED)
        report["bundled_sha256"] = sha256_file(installed)
        print(f"installed {installed}")
        with atomic_path(REPORT) as tmp:
            tmp.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {REPORT}: run `python scripts/update_readme.py --only EFFICIENTVLM-PRUNING-TABLE`")


if __name__ == "__main__":
    main()
