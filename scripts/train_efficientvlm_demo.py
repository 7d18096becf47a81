"""Retrain the EfficientVLM demo models from scratch, score them, and optionally install them as bundled weights.

    python scripts/train_efficientvlm_demo.py --out runs/efficientvlm             # the chain (resumable) + eval
    python scripts/train_efficientvlm_demo.py --out runs/efficientvlm --install   # then bundle teacher + student
                                                                                  # and write the README's report

The chain, each stage resumable in its own folder under --out:
1. `teacher`   — `minivlm train --preset efficientvlm-demo-teacher`;
2. `student`   — `minivlm distill --teacher teacher/model.safetensors` (efficientvlm-demo-student);
3. `no-teacher` — the same student, the same steps, started from the same teacher layers, without KD: what
   distillation is measured against (not bundled).
Then `minivlm eval` of each on unseen scenes; the scores, each stage's time, the weights' sha256 and the
chain's time (the sum of the three runs' recorded times) go to --out/report.json, with --install also to
benchmarks/results/efficientvlm_demo.json, which scripts/update_readme.py turns into the README's table.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tqdm import tqdm

from minivlm.converters.atomic import atomic_path
from minivlm.converters.manifest import sha256_file
from minivlm.evaluate_vlm import evaluate_vlm
from minivlm.loading import install_weights, load
from minivlm.python_ref.weights import read_metadata
from minivlm.training.vlm import train_vlm
from minivlm.training.vlm_settings import STUDENT_STEPS, VLMTrainSettings

STUDENT = "efficientvlm-demo-student"
TEACHER = "efficientvlm-demo-teacher"
ROOT = Path(__file__).resolve().parents[1]
REPORT = ROOT / "benchmarks" / "results" / "efficientvlm_demo.json"  # what the README's table is made from


def _score(name: str, weights: Path, n: int) -> dict:
    scores = evaluate_vlm(load(str(weights)).pipeline, n=n,
                          progress=lambda it: tqdm(it, desc=f"eval {name}", leave=False))
    print(f"== {name}\n{scores.table()}")
    meta = read_metadata(weights)
    return {
        "weights": str(weights), "sha256": sha256_file(weights), "preset": meta["preset"],
        "settings": json.loads(meta["training"]), "training_seconds": float(meta["training_seconds"]),
        "stage_seconds": json.loads(meta["stage_seconds"]), "resumed": json.loads(meta["resumed"]),
        "caption_exact_match": scores.caption_exact_match, "vqa_accuracy": scores.vqa_accuracy,
        "vqa_by_type": scores.vqa_by_type, "retrieval_r1": scores.retrieval_r1,
        "retrieval_r1_itc": scores.retrieval_r1_itc, "n": scores.n, "seed": scores.seed, "gallery": scores.gallery,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/efficientvlm", help="working folder (one run folder per stage)")
    parser.add_argument("--n", type=int, default=300, help="scenes for each evaluation")
    parser.add_argument("--student-steps", type=int, default=STUDENT_STEPS,
                        help="steps of the distilled and the no-teacher student")
    parser.add_argument("--install", action="store_true",
                        help=f"copy teacher and student into the package and the report to {REPORT.relative_to(ROOT)}")
    args = parser.parse_args()
    out = Path(args.out)
    teacher = train_vlm(VLMTrainSettings(preset=TEACHER), out / "teacher")
    student = train_vlm(VLMTrainSettings(preset=STUDENT, steps=args.student_steps, teacher=str(teacher)), out / "student")
    alone = train_vlm(VLMTrainSettings(preset=STUDENT, steps=args.student_steps, init_from=str(teacher)),
                      out / "no-teacher")
    models = {name: _score(name, weights, args.n)
              for name, weights in (("teacher", teacher), ("student", student), ("no-teacher", alone))}
    # The chain's time is what its three runs record (a finished run is not redone when the chain resumes).
    chain_seconds = sum(m["training_seconds"] for m in models.values())
    report = {"chain_seconds": round(chain_seconds), "models": models}
    with atomic_path(out / "report.json") as tmp:
        tmp.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out / 'report.json'} (chain: {chain_seconds / 60:.1f} min)")
    if args.install:
        for preset, weights in ((TEACHER, teacher), (STUDENT, student)):
            print(f"installed {install_weights(weights, preset)}")
        with atomic_path(REPORT) as tmp:
            tmp.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {REPORT}: run `python scripts/update_readme.py --only EFFICIENTVLM-DEMO-TABLE`")


if __name__ == "__main__":
    main()
