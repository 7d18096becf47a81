"""`--plot`: a PNG bar chart of a bench report, drawn with Pillow (a dependency already; matplotlib is not).

One panel per thread count; per graph and task one bar per runtime, its length the runtime's median time over
ONNX Runtime's (the dashed line is 1: left of it is faster than ONNX Runtime), labelled with the median in ms.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from minivlm.converters.atomic import atomic_path

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


def plot(report: dict, path: Path) -> None:
    """Draw the chart and write it to `path` atomically."""
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
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")


__all__ = ["plot"]
