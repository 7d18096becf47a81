"""A bench run of several models (`run_bench(..., versus=...)`): the comparison of each model with the baseline,
and each model's part of the report read as a one-model report.

The baseline is the first `--versus` model. A ratio is a model's median over the baseline's, for the same kind of
runtime (eager with eager, ONNX Runtime with ONNX Runtime, a build with the baseline's build of the same target,
precision and delegate) at the same thread count: below 1 the model is faster, 1 / ratio is how many times.
"""

from __future__ import annotations

RATIO = ("vs_baseline = a model's median (or parameters, or size) / the baseline model's, for the same kind of "
         "runtime at the same thread count; below 1 is faster (smaller), and 1 / vs_baseline is the speed-up")


def is_comparison(report: dict) -> bool:
    """Whether `report` is of several models (schema version 2, `models` and `comparison`)."""
    return "models" in report


def model_report(report: dict, index: int) -> dict:
    """Model `index`'s part of a comparison report, shaped as a one-model report (what `report.table`,
    `report.markdown` and `plot.plot` read); it shares the report's dicts."""
    part = report["models"][index]
    return {"created": report["created"], "command": report["command"], "machine": report["machine"],
            "model": part["model"], "settings": report["settings"], "graphs": part["graphs"],
            "onnx_export_seconds": part["onnx_export_seconds"], "runtimes": part["runtimes"]}


def runtime_kind(rt: dict) -> str:
    """What a runtime is compared by: "pytorch eager", "onnxruntime fp32", or a build's target, precision and
    delegate (its name without the folder added when one model has two such builds)."""
    return rt["name"].split(" [", 1)[0]


def _ran(rt: dict, threads: str) -> dict | None:
    result = rt["by_threads"].get(threads)
    return result if result and "error" not in result else None


def add_comparison(report: dict) -> None:
    """`report["comparison"]`: the baseline's name, what the ratio is (`RATIO`), each model's parameters and
    weights' size with their ratios, and per kind of runtime the baseline and another model have (in the baseline's
    order) each model's runtime name, size, and per thread count per task and graph its median and `vs_baseline`
    (and each task's result, each graph's FLOPs). A task or graph is compared where two models ran it under the
    same name; a kind of runtime the baseline did not run (a Core ML build off macOS, a failure) has sizes only."""
    models = report["models"]
    names = [m["model"]["name"] for m in models]
    base = names[1]
    by_model = {m["model"]["name"]: m for m in models}
    base_params = by_model[base]["model"]["parameters"]
    summary = {}
    for m in models:
        eager = next(rt for rt in m["runtimes"] if rt["kind"] == "eager")
        summary[m["model"]["name"]] = {
            "preset": m["model"]["preset"], "parameters": m["model"]["parameters"],
            "parameters_vs_baseline": m["model"]["parameters"] / base_params,
            "weights_bytes": eager["size_bytes"], "weights_of": eager["size_of"]}
    runtimes, seen = [], set()
    for base_rt in by_model[base]["runtimes"]:
        kind = runtime_kind(base_rt)
        if kind in seen:
            continue
        seen.add(kind)
        peers = {}
        for m in models:
            rt = next((r for r in m["runtimes"] if runtime_kind(r) == kind), None)
            if rt is not None:
                peers[m["model"]["name"]] = rt
        if len(peers) < 2:
            continue
        entry = {"runtime": kind, "names": {n: rt["name"] for n, rt in peers.items()},
                 "size_bytes": {n: rt["size_bytes"] for n, rt in peers.items()},
                 "size_vs_baseline": {n: rt["size_bytes"] / base_rt["size_bytes"] for n, rt in peers.items()},
                 "by_threads": {}}
        for threads in map(str, report["settings"]["threads"]):
            base_result = _ran(base_rt, threads)
            if base_result is None:
                continue
            rows = {"tasks": {}, "graphs": {}}
            for section, items in rows.items():
                for item, base_row in base_result[section].items():
                    ran = {n: result[section][item] for n, rt in peers.items()
                           if (result := _ran(rt, threads)) is not None and item in result[section]}
                    if len(ran) < 2:
                        continue
                    items[item] = {"median_ms": {n: row["median_ms"] for n, row in ran.items()},
                                   "vs_baseline": {n: row["median_ms"] / base_row["median_ms"] for n, row in ran.items()}}
                    if section == "tasks":  # what each model answered: the same work need not give the same result
                        items[item]["result"] = {n: row["result"] for n, row in ran.items()}
                    else:  # the work itself: a pruned model's graph does fewer FLOPs on the same image
                        items[item]["flops"] = {n: by_model[n]["graphs"][item]["flops"] for n in ran}
            entry["by_threads"][threads] = rows
        runtimes.append(entry)
    report["comparison"] = {"baseline": base, "ratio": RATIO, "models": summary, "runtimes": runtimes}


def _cell(value: str, ratio: float | None, width: int) -> str:
    return f"{value} {ratio:5.2f}x".rjust(width) if ratio is not None else "-".rjust(width)


def comparison_table(report: dict) -> str:
    """The comparison as console text: per model its parameters and weights, then per thread count and kind of
    runtime each task's and graph's median ms per model with its ratio to the baseline."""
    c = report["comparison"]
    names = list(c["models"])
    width = max(20, *(len(n) + 2 for n in names))
    label_w = 30
    lines = [f"comparison with the baseline {c['baseline']} (x = median / the baseline's, same runtime and thread "
             "count; below 1x is faster, 1/x times)",
             f"{'':<{label_w}} " + " ".join(n.rjust(width) for n in names)]
    lines.append(f"{'parameters (M)':<{label_w}} " + " ".join(
        _cell(f"{c['models'][n]['parameters'] / 1e6:.2f}", c["models"][n]["parameters_vs_baseline"], width) for n in names))
    for threads in map(str, report["settings"]["threads"]):
        lines.append(f"{threads} thread(s): median ms")
        for entry in c["runtimes"]:
            rows = entry["by_threads"].get(threads)
            lines.append(f"  {entry['runtime']}" + ("" if rows else " (not timed: the baseline's did not run)"))
            rows = rows or {"tasks": {}, "graphs": {}}
            items = [(f"task: {t}", row) for t, row in rows["tasks"].items()] + list(rows["graphs"].items())
            for label, row in items:
                lines.append(f"    {label:<{label_w - 4}} " + " ".join(
                    _cell(f"{row['median_ms'][n]:.2f}", row["vs_baseline"][n], width) if n in row["median_ms"]
                    else "-".rjust(width) for n in names))
            lines.append(f"    {'size (MB)':<{label_w - 4}} " + " ".join(
                _cell(f"{entry['size_bytes'][n] / 1e6:.1f}", entry["size_vs_baseline"][n], width) if n in entry["size_bytes"]
                else "-".rjust(width) for n in names))
    return "\n".join(lines)


def comparison_markdown(report: dict, threads: int = 1) -> str:
    """The README's table of a comparison at one thread count: per kind of runtime each task's median ms per model
    (× the baseline's in brackets), then parameters and sizes. Graphs are in the JSON and the console table."""
    c, s, machine = report["comparison"], report["settings"], report["machine"]
    t = str(threads)
    names = list(c["models"])
    lines = [f"`{report['command']}` on {machine['cpu']} ({machine['usable_cores']} cores usable, load average "
             f"{machine['load_average_start'][0]:.1f} at the start), {report['created'][:10]}: {t} thread(s), median ms "
             f"of {s['task_runs']} runs per task on `{s['image']}`, end to end (× the baseline `{c['baseline']}`'s, "
             "same runtime, in brackets; below 1 is faster).", "",
             "| | " + " | ".join(f"`{n}`" for n in names) + " |", "|---|" + "---:|" * len(names),
             "| parameters (M) | " + " | ".join(f"{c['models'][n]['parameters'] / 1e6:.2f} "
                                              f"({c['models'][n]['parameters_vs_baseline']:.2f}×)" for n in names) + " |"]
    for entry in c["runtimes"]:
        for task, row in entry["by_threads"].get(t, {}).get("tasks", {}).items():
            lines.append(f"| {entry['runtime']}: {task} | " + " | ".join(
                f"{row['median_ms'][n]:.2f} ({row['vs_baseline'][n]:.2f}×)" if n in row["median_ms"] else "-"
                for n in names) + " |")
        lines.append(f"| {entry['runtime']}: size (MB) | " + " | ".join(
            f"{entry['size_bytes'][n] / 1e6:.1f} ({entry['size_vs_baseline'][n]:.2f}×)" if n in entry["size_bytes"] else "-"
            for n in names) + " |")
    return "\n".join(lines)


__all__ = ["RATIO", "add_comparison", "comparison_markdown", "comparison_table", "is_comparison", "model_report",
           "runtime_kind"]
