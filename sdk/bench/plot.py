"""`--plot`: a PNG bar chart of a bench report, drawn with Pillow (a dependency already; matplotlib is not).

One panel per thread count; per graph and task one bar per runtime, its length the runtime's median time over
ONNX Runtime's (the dashed line is 1: left of it is faster than ONNX Runtime), labelled with the median in ms.
A report of several models adds, on top, one panel per thread count with a bar per model: its median over the
baseline model's for the same kind of runtime.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from minivlm.converters.atomic import atomic_path

from .compare import is_comparison, model_report

COLOURS = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
           (227, 119, 194), (127, 127, 127))
BAR, GAP, LABEL_W, PLOT_W, MARGIN = 12, 10, 170, 560, 20


def _items(report: dict, threads: str) -> list[tuple[str, str, str]]:
    tasks = next((rt["by_threads"][threads]["tasks"] for rt in report["runtimes"]
                  if "tasks" in rt["by_threads"].get(threads, {})), {})
    return [(g, "graphs", g) for g in report["graphs"]] + [(f"task: {t}", "tasks", t) for t in tasks]


def _bars(report: dict, threads: str, section: str, key: str) -> list[tuple[int, float | None, float | None]]:
    """(runtime index, median ms, ratio to ONNX Runtime) of each runtime that ran."""
    out = []
    for i, rt in enumerate(report["runtimes"]):
        row = rt["by_threads"].get(threads, {}).get(section, {}).get(key)
        out.append((i, row and row["median_ms"], row and row.get("vs_onnxruntime")))
    return out


def _image(report: dict) -> Image.Image:
    """The chart of a one-model report."""
    font = ImageFont.load_default()
    runtimes = report["runtimes"]
    panels = [str(t) for t in report["settings"]["threads"]]
    heights = [(len(_items(report, t)) * (len(runtimes) * BAR + GAP)) + 40 for t in panels]
    legend_h = 16 * len(runtimes) + 10
    width, height = MARGIN * 2 + LABEL_W + PLOT_W + 80, MARGIN * 2 + 30 + legend_h + sum(heights)
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    draw.text((MARGIN, MARGIN), f"{report['model']['preset']}: median time / ONNX Runtime fp32 (shorter is faster)",
              fill="black", font=font)
    y = MARGIN + 24
    for i, rt in enumerate(runtimes):
        draw.rectangle([MARGIN, y + 16 * i, MARGIN + 10, y + 16 * i + 10], fill=COLOURS[i % len(COLOURS)])
        state = " (not runnable here)" if rt.get("not_runnable") else ""
        draw.text((MARGIN + 16, y + 16 * i), rt["name"] + state, fill="black", font=font)
    y += legend_h
    for threads, panel_h in zip(panels, heights):
        items = _items(report, threads)
        ratios = [r for _, s, k in items for _, _, r in _bars(report, threads, s, k) if r is not None]
        top = max([2.0, *ratios]) * 1.05
        x0 = MARGIN + LABEL_W
        draw.text((MARGIN, y), f"{threads} thread(s)", fill="black", font=font)
        y += 20
        one = x0 + PLOT_W / top
        draw.line([one, y, one, y + panel_h - 40], fill=(90, 90, 90), width=1)
        for label, section, key in items:
            draw.text((MARGIN, y + 2), label, fill="black", font=font)
            for i, ms, ratio in _bars(report, threads, section, key):
                by = y + i * BAR
                if ms is None:
                    continue
                length = PLOT_W * (ratio if ratio is not None else 0) / top
                draw.rectangle([x0, by, x0 + max(length, 1), by + BAR - 2], fill=COLOURS[i % len(COLOURS)])
                draw.text((x0 + length + 4, by), f"{ms:.1f} ms", fill="black", font=font)
            y += len(runtimes) * BAR + GAP
        y += 20
    return img


def _comparison_items(report: dict, threads: str) -> list[tuple[str, dict]]:
    """(label, row) of each compared task and graph at `threads`, runtime by runtime."""
    out = []
    for entry in report["comparison"]["runtimes"]:
        rows = entry["by_threads"].get(threads)
        if rows:
            out += [(f"{entry['runtime']}: task: {t}", row) for t, row in rows["tasks"].items()]
            out += [(f"{entry['runtime']}: {g}", row) for g, row in rows["graphs"].items()]
    return out


def _comparison_image(report: dict) -> Image.Image:
    """The comparison of a report of several models: per thread count, per kind of runtime and task or graph,
    one bar per model, its length the model's median over the baseline's (the dashed line is 1)."""
    font = ImageFont.load_default()
    c = report["comparison"]
    names = list(c["models"])
    panels = [str(t) for t in report["settings"]["threads"]]
    heights = [len(_comparison_items(report, t)) * (len(names) * BAR + GAP) + 40 for t in panels]
    legend_h = 16 * len(names) + 10
    label_w = LABEL_W + 110
    width, height = MARGIN * 2 + label_w + PLOT_W + 80, MARGIN * 2 + 30 + legend_h + sum(heights)
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    draw.text((MARGIN, MARGIN), f"median time / {c['baseline']}'s, same runtime (shorter is faster)", fill="black", font=font)
    y = MARGIN + 24
    for i, name in enumerate(names):
        draw.rectangle([MARGIN, y + 16 * i, MARGIN + 10, y + 16 * i + 10], fill=COLOURS[i % len(COLOURS)])
        draw.text((MARGIN + 16, y + 16 * i), name + (" (baseline)" if name == c["baseline"] else ""), fill="black", font=font)
    y += legend_h
    for threads, panel_h in zip(panels, heights):
        items = _comparison_items(report, threads)
        top = max([2.0, *(r for _, row in items for r in row["vs_baseline"].values())]) * 1.05
        x0 = MARGIN + label_w
        draw.text((MARGIN, y), f"{threads} thread(s)", fill="black", font=font)
        y += 20
        one = x0 + PLOT_W / top
        draw.line([one, y, one, y + panel_h - 40], fill=(90, 90, 90), width=1)
        for label, row in items:
            draw.text((MARGIN, y + 2), label, fill="black", font=font)
            for i, name in enumerate(names):
                if name in row["median_ms"]:
                    by, length = y + i * BAR, PLOT_W * row["vs_baseline"][name] / top
                    draw.rectangle([x0, by, x0 + max(length, 1), by + BAR - 2], fill=COLOURS[i % len(COLOURS)])
                    draw.text((x0 + length + 4, by), f"{row['median_ms'][name]:.1f} ms", fill="black", font=font)
            y += len(names) * BAR + GAP
        y += 20
    return img


def plot(report: dict, path: Path) -> None:
    """Draw the chart of `report` and write it to `path` atomically. A report of several models: the comparison
    first, then each model's own chart below it."""
    if is_comparison(report):
        images = [_comparison_image(report)] + [_image(model_report(report, i)) for i in range(len(report["models"]))]
    else:
        images = [_image(report)]
    img = Image.new("RGB", (max(i.width for i in images), sum(i.height for i in images)), "white")
    y = 0
    for part in images:
        img.paste(part, (0, y))
        y += part.height
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")


__all__ = ["plot"]
