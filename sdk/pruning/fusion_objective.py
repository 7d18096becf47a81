"""The loss of one pruning step of MiniVLM's fusion encoder (`FusionPruneObjective`): its captioning and VQA losses
under freshly sampled gates (one pruned fusion serves both, as the bundled model does), distillation from the
unpruned fusion, and the Lagrangian holding the expected sparsity at the step's target:

    loss = 0.6 · (caption + VQA) + 0.4 · KD + λ₁ (ŝ − t) + λ₂ (ŝ − t)²

as EfficientVLM's pruning (Wang et al., arXiv 2210.07795) applies to MiniVLM's fusion encoder. The batches are
`minivlm train`'s fine-tuning ones (`training.objectives`): caption queries under the seq2seq arrangement of
`caption_query_states`, questions under full attention, from a `RegionCache` of the model's own detections.
The KD terms are `training.distill_losses`' on one stack, `fusion`: hidden states (embedding output and every
layer's) and self-attention probabilities of both passes, layer i against the unpruned layer i, and the caption
(vocabulary, at the caption positions) and VQA (answers) logits.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from minivlm.python_ref.fusion import Fusion
from minivlm.python_ref.losses import IGNORE, token_loss
from minivlm.python_ref.tokenizer import Tokenizer
from minivlm.training.data import RegionCache
from minivlm.training.distill_losses import StackStates, combine, kd_terms, kd_total
from minivlm.training.objectives import caption_query_states, full_attention_states, trimmed

from .sparsity import Lagrangian, PruningGates
from .units import masked

STACK = "fusion"  # the one stack MiniVLM distils


@contextmanager
def recording(fusion: Fusion) -> Iterator[StackStates]:
    """The hidden states (the first layer's input, then every layer's output) and self-attention probabilities
    of one encoder pass of `fusion` inside the block, not detached; hooks and `record` lists removed after it.
    The `mask` of the returned states is unset: the caller knows which tokens are valid."""
    layers = fusion.encoder.layers
    states = StackStates(hidden=[], attention=[])
    hooks = [layers[0].register_forward_pre_hook(lambda _m, args: states.hidden.append(args[0]))]
    hooks += [layer.register_forward_hook(lambda _m, _a, out: states.hidden.append(out)) for layer in layers]
    try:
        for layer in layers:
            layer.attn.record = states.attention
        yield states
    finally:
        for h in hooks:
            h.remove()
        for layer in layers:
            layer.attn.record = None


class FusionPruneObjective(nn.Module):
    """The pruning loss of `fusion` (trained) under `gates`, distilled from the frozen `teacher` (the unpruned
    fusion). Holds the fusion, the gates and the Lagrangian, so that one checkpoint keeps them all."""

    def __init__(self, fusion: Fusion, teacher: Fusion, gates: PruningGates, tokenizer: Tokenizer,
                 label_smoothing: float) -> None:
        super().__init__()
        self.fusion, self.gates, self.lagrangian = fusion, gates, Lagrangian()
        self.teacher = [teacher]  # not a submodule: neither trained nor checkpointed
        self.mask_id, self.label_smoothing = tokenizer.mask_id, label_smoothing

    @property
    def model(self) -> Fusion:
        return self.fusion

    def _passes(self, fusion: Fusion, cache: RegionCache, scenes: torch.Tensor, questions: torch.Tensor) -> dict:
        """Caption and VQA passes of `fusion`: their losses, logits and recorded states."""
        text = trimmed(cache.caption_ids[scenes], cache.caption_mask[scenes])
        tags = trimmed(cache.tag_ids[scenes], cache.tag_mask[scenes], cache.tag_types[scenes])
        regions = trimmed(cache.regions[scenes], cache.region_mask[scenes])
        with recording(fusion) as caption_states:
            hidden = caption_query_states(fusion, self.mask_id, *text, tags[0], tags[2], tags[1], *regions)
        caption_ids, caption_mask = text
        # Every key of the caption pass: [text | tags | regions | one query per caption position].
        caption_states = StackStates(caption_states.hidden, caption_states.attention,
                                     torch.cat([caption_mask, tags[1], regions[1], caption_mask[:, 1:]], dim=1))
        labels = torch.where(caption_mask[:, 1:] > 0, caption_ids[:, 1:], torch.full_like(caption_ids[:, 1:], IGNORE))
        picked = labels != IGNORE  # the vocabulary projection only where there is a label: (M, V)
        caption_logits = fusion.mlm_logits(hidden[picked])
        scene = cache.question_scene[questions]
        q = trimmed(cache.question_ids[questions], cache.question_mask[questions])
        q_tags = trimmed(cache.tag_ids[scene], cache.tag_mask[scene], cache.tag_types[scene])
        q_regions = trimmed(cache.regions[scene], cache.region_mask[scene])
        with recording(fusion) as vqa_states:
            hidden = full_attention_states(fusion, *q, q_tags[0], q_tags[2], q_tags[1], *q_regions)
        vqa_states = StackStates(vqa_states.hidden, vqa_states.attention, torch.cat([q[1], q_tags[1], q_regions[1]], dim=1))
        vqa_logits = fusion.vqa_logits(hidden)
        return {"caption": token_loss(caption_logits, labels[picked], self.label_smoothing),
                "vqa": F.cross_entropy(vqa_logits, cache.answers[questions]),
                "logits": {"caption": caption_logits, "vqa": vqa_logits},
                "stacks": {"caption": caption_states, "vqa": vqa_states}}

    def forward(self, cache: RegionCache, generator: torch.Generator, target: float, batch: int,
                questions: int) -> dict[str, torch.Tensor]:
        """One step on `batch` scenes' captions and `questions` questions of the cache, drawn from `generator`."""
        scenes = torch.randint(0, cache.tag_ids.shape[0], (batch,), generator=generator)
        asked = torch.randint(0, cache.question_ids.shape[0], (questions,), generator=generator)
        masks = self.gates.sample(generator)
        with masked(self.fusion, self.gates.units, masks):
            student = self._passes(self.fusion, cache, scenes, asked)
        with torch.no_grad():
            teacher = self._passes(self.teacher[0], cache, scenes, asked)
        terms = {}
        for name in ("caption", "vqa"):  # the two passes are two recordings of the one stack
            pass_terms = kd_terms({STACK: student["stacks"][name]}, {STACK: teacher["stacks"][name]},
                                  {name: student["logits"][name]}, {name: teacher["logits"][name]})
            terms.update({f"{name}_{k}" if k.startswith(STACK) else k: v for k, v in pass_terms.items()})
        task = student["caption"] + student["vqa"]
        kd = kd_total(terms)
        expected = self.gates.expected_sparsity()
        lagrangian = self.lagrangian(expected, target)
        return {"loss": combine(task, kd) + lagrangian, "task": task.detach(), "kd": kd.detach(),
                "lagrangian": lagrangian.detach(), "expected_sparsity": expected.detach()}


__all__ = ["FusionPruneObjective", "STACK", "recording"]
