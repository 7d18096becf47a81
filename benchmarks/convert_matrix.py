"""Build the default model for every target × precision and record each build's wall time and sizes.

    python benchmarks/convert_matrix.py                    # all builds, into a temporary folder
    python benchmarks/convert_matrix.py --only executorch  # one target

Each build is one `minivlm-convert` process, timed from outside (imports included), run one after another on
an otherwise idle machine. The results go to `benchmarks/results/convert_matrix.json`, which
`scripts/update_readme.py` turns into the README's build table.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from minivlm.converters.targets import TARGETS

RESULTS = Path(__file__).resolve().parent / "results" / "convert_matrix.json"
# (target, precision, delegate or None): every precision of every target with its default delegate, plus the
# ExecuTorch delegates that change the graphs (TFLite's delegate only changes what the build is checked for).
BUILDS = [(t, p, None) for t, spec in TARGETS.items() for p in spec.precisions] + [
    ("executorch", "fp32", "coreml"), ("executorch", "fp32", "portable")]


def _folder_bytes(folder: Path, suffix: str) -> int:
    """Bytes of the graph files (a `.mlpackage` is a folder)."""
    total = 0
    for path in folder.iterdir():
        if path.name.endswith(suffix):
            total += sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else path.stat().st_size
    return total


def run_build(target: str, precision: str, delegate: str | None, out: Path) -> dict:
    cmd = [str(Path(sys.executable).with_name("minivlm-convert")), "--target", target, "--precision", precision,
           "--out", str(out)]
    if delegate:
        cmd += ["--delegate", delegate]
    started = time.perf_counter()
    result = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    default_delegate = TARGETS[target].delegates[0] if TARGETS[target].delegates else None
    row = {"target": target, "precision": precision, "delegate": delegate or default_delegate,
           "seconds": round(seconds, 1), "exit": result.returncode}
    if result.returncode != 0:
        lines = result.stderr.replace("\r", "\n").splitlines()
        errors = [line[line.index("error: ") + 7:] for line in lines if "error: " in line]  # the CLI's one-line error
        row["error"] = errors[-1] if errors else (lines or ["?"])[-1]
        return row
    manifest = json.loads((out / "manifest.json").read_text())
    suffix = TARGETS[target].suffix
    row["graph_bytes"] = _folder_bytes(out, suffix)
    row["golden_bytes"] = sum(f.stat().st_size for f in (out / "golden").rglob("*") if f.is_file())
    row["graphs"] = {name: g.get("ops") for name, g in manifest["graphs"].items()}
    return row


def markdown(rows: list[dict]) -> str:
    lines = ["| target | precision | delegate | build time (s) | graph files (MB) | goldens (MB) |",
             "|---|---|---|---:|---:|---:|"]
    for r in rows:
        if r["exit"] != 0:
            lines.append(f"| {r['target']} | {r['precision']} | {r['delegate'] or ''} | failed: {r['error']} | | |")
            continue
        lines.append(f"| {r['target']} | {r['precision']} | {r['delegate'] or ''} | {r['seconds']:.0f} | "
                     f"{r['graph_bytes'] / 1e6:.1f} | {r['golden_bytes'] / 1e6:.1f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=sorted(TARGETS), help="build this target only")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="minivlm-matrix-") as tmp:
        for i, (target, precision, delegate) in enumerate(BUILDS):
            if args.only and target != args.only:
                continue
            row = run_build(target, precision, delegate, Path(tmp) / f"build-{i}")
            print(f"{target} {precision} {delegate or ''}: {row['seconds']:.0f} s, exit {row['exit']}", flush=True)
            rows.append(row)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"machine": f"{platform.machine()}, {__import__('os').cpu_count()} CPUs",
                                   "builds": rows}, indent=1) + "\n")
    print(markdown(rows))


if __name__ == "__main__":
    main()
