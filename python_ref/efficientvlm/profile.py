"""Parameters of an EfficientVLM per architectural part (the budget that distillation and pruning cut).

Build large presets on the meta device (`with torch.device("meta"): EfficientVLM(cfg)`): only shapes are
read, so counting the teacher takes no memory. The VQA classifier has its own row: X-VLM and EfficientVLM
answer generatively, so their parameter counts have no such head (`heads.py`).
"""

from __future__ import annotations

from torch import nn

from .model import EfficientVLM


def _count(*modules: nn.Module) -> int:
    return sum(p.numel() for m in modules for p in m.parameters())


def parameter_budget(model: EfficientVLM) -> dict[str, int]:
    """Parameters per part, in order: vision, text embeddings, text layers, cross layers, heads (ITC, ITM,
    MLM), VQA head, total. The MLM decoder is the word embedding matrix, counted once (text embeddings)."""
    heads = model.heads
    budget = {
        "vision": _count(model.vision),
        "text embeddings": _count(model.text.embeddings),
        "text layers": _count(model.text.layers),
        "cross layers": _count(model.cross),
        "heads (ITC, ITM, MLM)": _count(heads.itc, heads.itm_head, heads.mlm_head),
        "VQA head": _count(heads.vqa_head),
    }
    budget["total"] = sum(budget.values())
    assert budget["total"] == _count(model), "every parameter belongs to exactly one part"
    return budget


def format_budget(budget: dict[str, int]) -> str:
    """A fixed-width table: part, parameters (M)."""
    return "\n".join([f"{'part':<24} {'params (M)':>10}", *(f"{k:<24} {v / 1e6:>10.3f}" for k, v in budget.items())])


__all__ = ["format_budget", "parameter_budget"]
