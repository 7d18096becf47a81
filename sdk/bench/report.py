"""A bench report: ratios to ONNX Runtime and to eager, the JSON file, the console table and the README's
markdown table (scripts/update_readme.py), all from the one report dict `run.run_bench` returns."""

from __future__ import annotations

import json
from pathlib import Path

from minivlm.converters.atomic import atomic_file

from .compare import comparison_markdown, comparison_table, is_comparison, model_report

PEERS = {"onnxruntime": "vs_onnxruntime", "eager": "vs_eager"}


def _results(report: dict, threads: str) -> dict[str, dict]:
    """Runtime name -> its measurements at `threads` (only those that ran)."""
    return {rt["name"]: rt["by_threads"][threads] for rt in report["runtimes"]
            if threads in rt["by_threads"] and "error" not in rt["by_threads"][threads]}


def _peer(report: dict, threads: str, kind: str) -> dict | None:
    for rt in report["runtimes"]:
        if rt["kind"] == kind:
            result = rt["by_threads"].get(threads)
            return result if result and "error" not in result else None
    return None


def add_ratios(report: dict) -> None:
    """Every runtime's median per graph and task divided by ONNX Runtime's (`vs_onnxruntime`) and eager's
    (`vs_eager`) at the same thread count, and each graph's achieved GFLOP/s (`gflops_per_s`)."""
    for threads in map(str, report["settings"]["threads"]):
        peers = {key: _peer(report, threads, kind) for kind, key in PEERS.items()}
        for result in _results(report, threads).values():
            for section in ("graphs", "tasks"):
                for name, row in result[section].items():
                    for key, peer in peers.items():
                        row[key] = row["median_ms"] / peer[section][name]["median_ms"] if peer else None
                    if section == "graphs":
                        row["gflops_per_s"] = report["graphs"][name]["flops"] / (row["median_ms"] / 1e3) / 1e9


def write_json(report: dict, path: Path) -> None:
    """The report as indented JSON, written atomically."""
    with atomic_file(path, "w", encoding="utf-8") as f:
        f.write(json.dumps(report, indent=1) + "\n")


def _rows(report: dict, threads: str) -> list[tuple[str, str, str]]:
    """(label, section, key) of every timed row: graphs, then tasks."""
    first = next(iter(_results(report, threads).values()), {"tasks": {}})
    return [(g, "graphs", g) for g in report["graphs"]] + [(f"task: {t}", "tasks", t) for t in first["tasks"]]


def _cell(rt: dict, threads: str, section: str, key: str, markdown: bool) -> str:
    if rt.get("not_runnable"):
        return "not runnable here"
    result = rt["by_threads"].get(threads)
    if result is None or "error" in result:
        return "failed"
    row = result[section][key]
    ratio = row.get("vs_onnxruntime")
    if markdown:
        return f"{row['median_ms']:.2f}" + (f" ({ratio:.2f}×)" if ratio is not None and rt["kind"] != "onnxruntime" else "")
    ratios = " ".join(f"{row[k]:5.2f}x" if row.get(k) is not None else "    - " for k in PEERS.values())
    return f"{row['median_ms']:9.2f} {ratios}"


def _extras(rt: dict, threads: str) -> tuple[str, str, str]:
    """Load seconds, peak RSS MB, size MB."""
    size = f"{rt['size_bytes'] / 1e6:.1f}"
    result = rt["by_threads"].get(threads)
    if rt.get("not_runnable") or result is None or "error" in result:
        return "-", "-", size
    return f"{result['load_seconds']:.2f}", f"{result['peak_rss_mb']:.0f}", size


def _notes(report: dict) -> list[str]:
    notes = []
    for rt in report["runtimes"]:
        if rt.get("not_runnable"):
            notes.append(f"{rt['name']}: not run: {rt['not_runnable']}")
        for threads, result in rt["by_threads"].items():
            if "error" in result:
                notes.append(f"{rt['name']}, {threads} thread(s): failed: {result['error']}")
    return notes


def _decoding(report: dict, threads: str) -> str | None:
    eager = _peer(report, threads, "eager")
    dec = eager and eager.get("caption_decoding")
    if not dec:
        return None
    return (f"caption decoding in eager ({dec['cached']['tokens']} tokens): cached prefix {dec['cached']['median_ms']:.1f} ms, "
            f"recomputing the sequence per token {dec['uncached']['median_ms']:.1f} ms: {dec['speedup']:.2f}x faster cached"
            + (f"; the vocabulary head alone takes {dec['vocab_head']['median_ms']:.2f} ms a token in both, so caching "
               f"can gain at most {dec['speedup_bound']:.2f}x" if "vocab_head" in dec else ""))


def table(report: dict) -> str:
    """The console table: per thread count, each graph and task's median ms per runtime with its ratio to ONNX
    Runtime and to eager, then load time, peak RSS and size; notes for runtimes that did not run. A report of
    several models: that table per model, then the comparison (`compare.comparison_table`)."""
    if is_comparison(report):
        parts = [table(model_report(report, i)) for i in range(len(report["models"]))]
        return "\n\n".join([*parts, comparison_table(report)])
    m, s = report["model"], report["settings"]
    runtimes = report["runtimes"]
    width = max(22, *(len(rt["name"]) for rt in runtimes))
    lines = []
    for threads in map(str, s["threads"]):
        lines += [f"{m['preset']} ({m['family']}, {m['source']}), {threads} thread(s), image {s['image']}: median ms of "
                  f"{s['runs']} runs per graph, {s['task_runs']} per task; x ONNX Runtime, x eager",
                  f"{'':<22} {'GFLOP':>7} " + " ".join(f"{rt['name']:>{width}}" for rt in runtimes)]
        for label, section, key in _rows(report, threads):
            flop = f"{report['graphs'][key]['flops'] / 1e9:7.3f}" if section == "graphs" else " " * 7
            lines.append(f"{label:<22} {flop} " + " ".join(f"{_cell(rt, threads, section, key, False):>{width}}" for rt in runtimes))
        extras = [_extras(rt, threads) for rt in runtimes]
        for i, label in enumerate(("load (s)", "peak RSS (MB)", "size (MB)")):
            lines.append(f"{label:<22} {'':7} " + " ".join(f"{e[i]:>{width}}" for e in extras))
        decoding = _decoding(report, threads)
        lines += [decoding] if decoding else []
        lines.append("")
    return "\n".join(lines + _notes(report)).rstrip()


def markdown(report: dict, threads: int = 1) -> str:
    """The README's table of one report at one thread count: median ms per graph and task (× ONNX Runtime),
    GFLOP per graph, load time, peak RSS and size per runtime. A report of several models: its comparison
    (`compare.comparison_markdown`)."""
    if is_comparison(report):
        return comparison_markdown(report, threads)
    m, s, machine = report["model"], report["settings"], report["machine"]
    t = str(threads)
    runtimes = report["runtimes"]
    lines = [f"`{report['command']}` on {machine['cpu']} ({machine['usable_cores']} cores usable, load average "
             f"{machine['load_average_start'][0]:.1f} at the start), {report['created'][:10]}: `{m['preset']}`, "
             f"{t} thread(s), median ms of {s['runs']} runs per graph and {s['task_runs']} per task on `{s['image']}` "
             "(× ONNX Runtime fp32 in brackets).", "",
             "| | GFLOP | " + " | ".join(rt["name"] for rt in runtimes) + " |",
             "|---|---:|" + "---:|" * len(runtimes)]
    for label, section, key in _rows(report, t):
        flop = f"{report['graphs'][key]['flops'] / 1e9:.3f}" if section == "graphs" else ""
        lines.append(f"| {label} | {flop} | " + " | ".join(_cell(rt, t, section, key, True) for rt in runtimes) + " |")
    extras = [_extras(rt, t) for rt in runtimes]
    for i, label in enumerate(("load (s)", "peak RSS (MB)", "size (MB)")):
        lines.append(f"| {label} | | " + " | ".join(e[i] for e in extras) + " |")
    decoding = _decoding(report, t)
    notes = ([decoding[0].upper() + decoding[1:] + "."] if decoding else []) + [n + "." for n in _notes(report)]
    return "\n".join(lines + ([""] + notes if notes else []))


__all__ = ["add_ratios", "markdown", "table", "write_json"]
