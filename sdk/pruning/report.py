"""The pruning report: what a pruned model kept, counted from the two models themselves (not from the gates),
so that it states what the saved file holds. `minivlm prune` prints it and the weights' metadata keeps it
(`minivlm info` prints it again)."""

from __future__ import annotations

import json

from minivlm.errors import WeightsError
from minivlm.python_ref.weights import read_metadata

from .units import layout_of, prunable_units


def _layer_name(unit) -> str:
    """`cross.layers.0.cross_attn` -> `cross 0 cross-attention heads`: how the report names a unit."""
    parts = unit.name.split(".")
    what = "neurons" if unit.kind == "neurons" else "cross-attention heads" if parts[-1] == "cross_attn" else "heads"
    index = next(p for p in parts if p.isdigit())
    return f"{unit.modality} {index} {what}"


def pruning_report(before, after, settings=None,
                   expected: tuple[float, dict[str, float]] | None = None) -> dict:
    """Sparsity reached overall and per modality (removed head and neuron parameters / prunable ones), what each
    layer keeps of what it had, and the parameters of both models; `settings` (a dataclass) and the gates'
    final expected sparsity (overall, per modality) are recorded with it when given."""
    now = {u.name: u for u in prunable_units(after)}
    modalities = layout_of(before).modalities
    prunable: dict[str, int] = {m: 0 for m in modalities}
    kept: dict[str, int] = {m: 0 for m in modalities}
    layers = {}
    for unit in prunable_units(before):
        left = now.get(unit.name)
        count = 0 if left is None else left.count
        prunable[unit.modality] += unit.params
        kept[unit.modality] += count * unit.unit_params
        layers[_layer_name(unit)] = [count, unit.count]
    total = sum(prunable.values())
    report = {
        "sparsity": 1.0 - sum(kept.values()) / total,
        "sparsity_by_modality": {m: 1.0 - kept[m] / prunable[m] for m in modalities if prunable[m]},
        "kept": layers,
        "prunable_params": total,
        "params_before": sum(p.numel() for p in before.parameters()),
        "params_after": sum(p.numel() for p in after.parameters()),
    }
    if settings is not None:
        report["target"] = settings.sparsity
        report["task"] = settings.task
    if expected is not None:
        report["expected_sparsity"], report["expected_sparsity_by_modality"] = expected
    return report


def format_report(report: dict) -> str:
    """A few lines for a terminal."""
    by = ", ".join(f"{m} {s:.3f}" for m, s in report["sparsity_by_modality"].items())
    head = f"sparsity {report['sparsity']:.3f}"
    if "target" in report:
        head += f" (target {report['target']}, task {report['task']})"
    lines = [f"{head}; by modality: {by}",
             f"parameters {report['params_before'] / 1e6:.3f} M -> {report['params_after'] / 1e6:.3f} M"]
    for modality in report["sparsity_by_modality"]:
        kept = [f"{name.split(' ', 1)[1]} {k}/{n}" for name, (k, n) in report["kept"].items() if name.startswith(modality + " ")]
        if kept:
            lines.append(f"  {modality}: " + ", ".join(kept))
    return "\n".join(lines)


def pruning_of(path) -> dict | None:
    """The pruning report a weights file's metadata keeps, or None for a model that was not pruned."""
    raw = read_metadata(path).get("pruning")
    if raw is None:
        return None
    try:
        report = json.loads(raw)
        format_report(report)  # every field a report has
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise WeightsError(f"{path} has a 'pruning' metadata entry that is not a pruning report ({type(err).__name__})") from None
    return report


__all__ = ["format_report", "pruning_of", "pruning_report"]
