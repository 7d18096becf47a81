"""Regenerate tests/golden/: the host-step goldens of the bundled model that the native core's ctest replays.

    python scripts/update_goldens.py                 # bundled minivlm-demo weights -> tests/golden/
    python scripts/update_goldens.py --out /tmp/g    # somewhere else (tests/converters compares the two)

Run it after retraining the bundled weights; `MINIVLM_ACCEPT_GOLDEN=1 pytest tests/converters/test_goldens.py`
does the same. Host goldens do not depend on a conversion target, so nothing is converted here.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from minivlm.converters.host_goldens import update_host_goldens
from minivlm.loading import load

GOLDEN = Path(__file__).resolve().parents[1] / "tests" / "golden"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="minivlm-demo", help="model to trace (default: the bundled demo model)")
    parser.add_argument("--out", type=Path, default=GOLDEN, help=f"folder to replace (default: {GOLDEN})")
    args = parser.parse_args()
    torch.set_num_threads(1)  # the same float reductions on every machine
    written = update_host_goldens(load(args.model).pipeline, args.model, args.out)
    files = sorted(p for p in args.out.rglob("*") if p.is_file())
    largest = max(files, key=lambda p: p.stat().st_size)
    print(f"{args.out}: {len(files)} files, {written / 1e3:.0f} kB of arrays, largest {largest.name} "
          f"{largest.stat().st_size / 1e3:.0f} kB")


if __name__ == "__main__":
    main()
