"""`minivlm.convert`: build a model for a phone target (the library side of `minivlm-convert`)."""

from __future__ import annotations

from pathlib import Path

from minivlm.converters.build import build
from minivlm.converters.build_folder import Interrupted
from minivlm.converters.progress import BuildReport, Progress
from minivlm.converters.targets import TARGETS, BuildOptions, resolve_options
from minivlm.loading import DEFAULT_MODEL, load
from minivlm.python_ref.families import PRESET_FAMILIES

OUT_ROOT = Path("out")


def model_name(model: str) -> str:
    """A preset's name (of any family), or a weights file's stem."""
    return model if model in PRESET_FAMILIES else Path(model).stem


def default_out(name: str, options: BuildOptions) -> Path:
    """`out/<model>-<target>-<precision>`, plus the delegate or compute units when not the target's default,
    so that two different builds never land in the same folder."""
    t = TARGETS[options.target]
    parts = [name, options.target, options.precision]
    if options.delegate and options.delegate != t.delegates[0]:
        parts.append(options.delegate)
    if options.compute_units and options.compute_units != t.compute_units[0]:
        parts.append(options.compute_units)
    return OUT_ROOT / "-".join(parts)


def convert(model: str = DEFAULT_MODEL, target: str = "executorch", *, precision: str | None = None,
            delegate: str | None = None, compute_units: str | None = None, out: str | Path | None = None,
            force: bool = False, random_init: bool = False, seed: int | None = None, progress: Progress | None = None,
            jobs: int = 1) -> BuildReport:
    """Build `model` (a preset with bundled weights, or a `.safetensors` from `minivlm train`; MiniVLM or
    EfficientVLM) for `target`. `random_init` builds an untrained preset, its weights drawn with `seed` (default
    `minivlm.loading.DEFAULT_SEED`); the manifest records the seed and the weights' sha256, from which
    `minivlm parity` re-creates the reference.

    Options are checked before anything is loaded; unknown or impossible choices raise ConversionError
    naming what exists. The build folder (default `default_out`) is written atomically: see
    `minivlm.converters.build_folder.atomic_directory`. `jobs` > 1 converts graphs in that many worker processes,
    whose log records and warnings are re-emitted in this process (under its logging and warning filters).
    An exception, or a SIGTERM/SIGHUP left at its default action, stops the workers and removes the
    unfinished folder first (the signal then ends the process as it would have).
    """
    options = resolve_options(target, precision, delegate, compute_units)
    reference = load(model, random_init=random_init, seed=seed)
    name = model_name(model)
    return build(reference.pipeline, model_name=name, source=reference.source, options=options,
                 out=Path(out) if out is not None else default_out(name, options), force=force, progress=progress,
                 jobs=jobs, seed=reference.seed)


def _size(n: int) -> str:
    return f"{n / 1e6:.2f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"


def format_report(report: BuildReport) -> str:
    """The final table of a build: graph, file, size, ops delegated vs not, conversion time."""
    o = report.options
    backend = {"executorch": o.delegate, "coreml": "Core ML", "tflite": o.delegate, "coreai": "Core AI"}[o.target]
    if o.target == "tflite" and o.delegate != "xnnpack":
        backend = f"{o.delegate} (predicted from documented ops)"
    rows = [("graph", "file", "size", f"ops on {backend}", "other ops", "time")]
    for g in report.graphs:
        rows.append((g.name, g.path, _size(g.size_bytes), "-" if g.ops_delegated is None else str(g.ops_delegated),
                     "-" if g.ops_other is None else str(g.ops_other), f"{g.seconds:.1f} s"))
    # A build's size: its distinct graph files (graphs may share one) and the weights file they share, if any.
    total = sum({g.path: g.size_bytes for g in report.graphs}.values())
    if weights := report.manifest.get("weights_file"):
        size = (report.path / weights).stat().st_size
        rows.append(("weights", weights, _size(size), "", "", ""))
        total += size
    rows.append(("total", "", _size(total), "", "", f"{sum(g.seconds for g in report.graphs):.1f} s"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    lines.insert(len(lines) - 1, "-" * len(lines[0]))
    extra = ""
    if o.target == "tflite":
        worst = max((g.details["compatibility"]["nnapi"]["min_android_api"] for g in report.graphs), default=27)
        gpu_bad = sum(g.details["compatibility"]["gpu"]["unsupported"] for g in report.graphs)
        nnapi_bad = sum(g.details["compatibility"]["nnapi"]["unsupported"] for g in report.graphs)
        extra = (f"\ndelegate check (documented op lists): GPU leaves {gpu_bad} ops to the CPU, NNAPI {nnapi_bad} "
                 f"(supported ones need Android API {worst}+); details per graph in manifest.json")
    extra += _fp16_range_lines(report.manifest.get("fp16_range"))
    files = len(report.manifest["files"])
    return ("\n".join(lines) + extra +
            f"\nwrote {report.path} ({o.target}, {o.precision}, {o.delegate or o.compute_units}) in {report.seconds:.1f} s: "
            f"graphs {_size(total)}, goldens {_size(report.golden_bytes)}, sha256 of {files} files in manifest.json")


def _fp16_range_lines(ranges: dict | None) -> str:
    """The fp16 range check of a build: a warning per tensor beyond the fp16 maximum or within its margin of it."""
    if not ranges:
        return ""
    worst = max(ranges["per_graph"].items(), key=lambda kv: kv[1]["max_abs"], default=None)
    head = (f"\nfp16 range on {ranges['images']} calibration images ({ranges['tensors_checked']} tensors, fp16 max "
            f"{ranges['fp16_max']:g}): ")
    if not ranges["warnings"]:
        where = f"; largest {worst[0]}: {worst[1]['tensor']} |x| = {worst[1]['max_abs']:.4g}" if worst else ""
        return head + f"every tensor stays {ranges['margin']:g}x below it{where}"
    masked = ranges.get("warnings_at_mask_level", 0)
    others = [w for w in ranges["warnings"] if "attention mask's level" not in w]
    lines = [head + f"{len(ranges['warnings'])} warnings"]
    if masked:
        lines.append(f"  {masked} tensors sit at the additive attention mask's level (|x| ~ 1e4, exactly representable in "
                     f"fp16, 6.5x headroom by design); listed in manifest.json")
    return "\n".join([*lines, *(f"  warning: {w}" for w in others)])


__all__ = ["Interrupted", "convert", "default_out", "format_report", "model_name"]
