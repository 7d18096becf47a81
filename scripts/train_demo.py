"""Retrain the bundled demo model from scratch, score it, and optionally install it as the bundled weights.

    python scripts/train_demo.py --out runs/demo             # train (resumable) + `minivlm eval --n 300`
    python scripts/train_demo.py --out runs/demo --install   # then copy it to sdk/weights/minivlm-demo.safetensors

The same recipe as `minivlm train` (minivlm.training.TrainSettings defaults, seed 1).
"""

from __future__ import annotations

import argparse

from tqdm import tqdm

from minivlm.evaluate import evaluate
from minivlm.loading import install_weights, load
from minivlm.training import TrainSettings, train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/minivlm-demo", help="working folder (checkpoints, final weights)")
    parser.add_argument("--n", type=int, default=300, help="scenes for the evaluation")
    parser.add_argument("--install", action="store_true", help="copy the result into the package as the bundled model")
    args = parser.parse_args()
    weights = train(TrainSettings(), args.out)
    report = evaluate(load(str(weights)).pipeline, n=args.n, progress=lambda it: tqdm(it, desc="eval", leave=False))
    print(report.table())
    if args.install:
        print(f"installed {install_weights(weights, 'minivlm-demo')}")


if __name__ == "__main__":
    main()
