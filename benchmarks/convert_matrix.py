"""Build the default model for every target × precision and record each build's wall time, sizes and parity.

    python benchmarks/convert_matrix.py                    # all builds, into a temporary folder
    python benchmarks/convert_matrix.py --only executorch  # one target
    python benchmarks/convert_matrix.py --parity           # and `minivlm parity` on each build

Each build is one `minivlm-convert` process, timed from outside (imports included), run one after another on
an otherwise idle machine (each row records the 1-minute load average at its start). With `--parity`, `minivlm parity` then runs on each build (not timed) and its
`parity_report.json` gives the worst graph output and the task agreement. The results go to
`benchmarks/results/convert_matrix.json`, which `scripts/update_readme.py` turns into the README's build table.
"""

from __future__ import annotations

import argparse
import json
import os
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


def _default_delegate(target: str) -> str | None:
    return TARGETS[target].delegates[0] if TARGETS[target].delegates else None


def run_build(target: str, precision: str, delegate: str | None, out: Path) -> dict:
    cmd = [str(Path(sys.executable).with_name("minivlm-convert")), "--target", target, "--precision", precision,
           "--out", str(out)]
    if delegate:
        cmd += ["--delegate", delegate]
    load = os.getloadavg()[0]  # other processes on the cores stretch the wall time: recorded with it
    started = time.perf_counter()
    result = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    row = {"target": target, "precision": precision, "delegate": delegate or _default_delegate(target),
           "seconds": round(seconds, 1), "exit": result.returncode, "load_average": round(load, 2),
           "date": time.strftime("%Y-%m-%d")}
    if result.returncode != 0:
        row["error"] = _cli_error(result.stderr)
        return row
    manifest = json.loads((out / "manifest.json").read_text())
    suffix = TARGETS[target].suffix
    # A build whose graphs share one weights file (ExecuTorch's `weights.ptd`) names it in its manifest.
    weights = manifest.get("weights_file")
    row["graph_bytes"] = _folder_bytes(out, suffix) + ((out / weights).stat().st_size if weights else 0)
    row["golden_bytes"] = sum(f.stat().st_size for f in (out / "golden").rglob("*") if f.is_file())
    row["graphs"] = {name: g.get("ops") for name, g in manifest["graphs"].items()}
    return row


def _cli_error(stderr: str) -> str:
    """The CLI's one-line `error: ...` (progress bars may share its line), else the last line of stderr."""
    text = stderr.replace("\r", "\n")
    if "error: " in text:
        return text[text.rindex("error: ") + 7:].splitlines()[0].strip()
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1].strip() if lines else "?"


def run_parity(out: Path) -> dict:
    """`minivlm parity` on a build: pass/fail, the worst graph output (lowest PSNR) and the task agreement."""
    result = subprocess.run([str(Path(sys.executable).with_name("minivlm")), "parity", str(out)],
                            capture_output=True, text=True)
    report_path = out / "parity_report.json"
    if result.returncode not in (0, 1) or not report_path.is_file():
        return {"exit": result.returncode, "error": _cli_error(result.stderr)}
    report = json.loads(report_path.read_text())
    row = {"exit": result.returncode, "passed": report["passed"], "images": len(report["images"]),
           "failed": [f"{c['kind']} {c['name']} {c['metric']}" for c in report["checks"] if c["status"] == "FAIL"],
           "not_checked": report["not_checked"]}
    worst = None
    for graph, outputs in report["graphs"].items():
        for name, stats in outputs.items():
            psnr = float(stats["psnr_db"])
            if stats["calls"] and (worst is None or psnr < worst["psnr_db"]):
                worst = {"output": f"{graph}.{name}", "psnr_db": psnr, "max_abs": float(stats["max_abs"]),
                         "max_abs_over_peak": float(stats["max_abs_over_peak"]), "min_cosine": float(stats["min_cosine"])}
    row["worst_graph_output"] = worst
    row["tasks"] = {c["name"]: c["value"] for c in report["checks"]
                    if c["kind"] == "task" and c["metric"] in ("matched", "identical")}
    return row


def _parity_cell(p: dict | None) -> str:
    if p is None:
        return ""
    if "passed" not in p:
        return f"error: {p['error']}"
    if not p["worst_graph_output"]:  # an ExecuTorch Core ML delegate build off macOS: checked, not run
        return ("pass" if p["passed"] else "FAIL") + " (conversion, spec I/O and fp16 range; runs on macOS)"
    w = p["worst_graph_output"]
    tasks = ", ".join(f"{k} {100 * v:.0f} %" for k, v in p["tasks"].items())
    executor = any("ML-program executor" in n for n in p.get("not_checked", ()))  # a Core ML build off macOS
    return (f"{'pass' if p['passed'] else 'FAIL'}{' (in the SDK executor)' if executor else ''}: worst {w['output']} "
            f"{w['psnr_db']:.0f} dB, max abs {w['max_abs']:.2g}; {tasks}")


def markdown(rows: list[dict]) -> str:
    parity = any("parity" in r for r in rows)
    lines = ["| target | precision | delegate | build time (s) | load average | graphs + weights (MB) | goldens (MB) |"
             + (" parity (`minivlm parity`, 4 photos + 24 scenes) |" if parity else ""),
             "|---|---|---|---:|---:|---:|---:|" + ("---|" if parity else "")]
    for r in rows:
        if r["exit"] != 0:
            lines.append(f"| {r['target']} | {r['precision']} | {r['delegate'] or ''} | failed: {r['error']} | | | |"
                         + (" |" if parity else ""))
            continue
        load = f"{r['load_average']:.1f}" if "load_average" in r else "–"
        lines.append(f"| {r['target']} | {r['precision']} | {r['delegate'] or ''} | {r['seconds']:.0f} | {load} | "
                     f"{r['graph_bytes'] / 1e6:.1f} | {r['golden_bytes'] / 1e6:.1f} |"
                     + (f" {_parity_cell(r.get('parity'))} |" if parity else ""))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=sorted(TARGETS), help="build this target only")
    parser.add_argument("--parity", action="store_true", help="run `minivlm parity` on each build (not timed)")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="minivlm-matrix-") as tmp:
        for i, (target, precision, delegate) in enumerate(BUILDS):
            if args.only and target != args.only:
                continue
            row = run_build(target, precision, delegate, Path(tmp) / f"build-{i}")
            print(f"{target} {precision} {delegate or ''}: {row['seconds']:.0f} s, exit {row['exit']}", flush=True)
            if args.parity and row["exit"] == 0:
                row["parity"] = run_parity(Path(tmp) / f"build-{i}")
                print(f"  parity: {_parity_cell(row['parity'])}", flush=True)
            rows.append(row)
    if args.only and RESULTS.is_file():  # keep the other targets' rows of the last full run
        kept = [r for r in json.loads(RESULTS.read_text())["builds"] if r["target"] != args.only]
        rank = {(t, p, d or _default_delegate(t)): i for i, (t, p, d) in enumerate(BUILDS)}
        rows = sorted(kept + rows, key=lambda r: rank.get((r["target"], r["precision"], r["delegate"]), len(rank)))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
                                   "builds": rows}, indent=1) + "\n")
    print(markdown(rows))


if __name__ == "__main__":
    main()
