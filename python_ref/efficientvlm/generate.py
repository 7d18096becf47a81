"""Greedy captioning with EfficientVLM, as a host loop over the causal text + cross-modal stack.

The prompt is X-VLM's (zengyan-97/X-VLM `configs/Captioning.yaml`: "a picture of ", following BLIP), tokenised
as [CLS] a picture of (no [SEP]). Each step runs the text layers and the cross-modal layers under the causal
mask (`text.TextEncoder.forward_causal`, `cross_modal.CrossModalEncoder.forward_causal`) and takes the MLM
head's argmax at the last position as the next token, until [SEP] or `max_text_len` tokens in all. X-VLM's
fine-tuned captioner decodes with beam search (and its own decoder layers, `num_dec_layers`); greedy over this
stack is the simplest reference. No K/V cache: every step recomputes the whole sequence at the fixed length
`max_text_len` (padding after the current position is hidden by the causal mask), so one static-shape graph
could run each step.
"""

from __future__ import annotations

import torch

from ..errors import InputError
from ..tokenizer import Tokenizer
from .model import EfficientVLM

PROMPT = "a picture of "  # X-VLM's captioning prompt (`configs/Captioning.yaml`)


def prompt_ids(tokenizer: Tokenizer, prompt: str = PROMPT) -> list[int]:
    """[CLS] and the prompt's tokens, without [SEP]: the prefix the caption continues."""
    return [tokenizer.cls_id, *tokenizer.encode(prompt)]


@torch.no_grad()
def greedy_caption_ids(model: EfficientVLM, images: torch.Tensor, prefix: list[int], sep_id: int) -> list[list[int]]:
    """For each image of `images` (B, 3, S, S), the token ids generated after `prefix` (without the [SEP]
    that ends them; at most `max_text_len - len(prefix)` of them).

    Raises InputError if `prefix` leaves no room for a token (it has `max_text_len` or more tokens) or is empty.
    """
    length = model.cfg.text.max_text_len
    if not 0 < len(prefix) < length:
        raise InputError(f"prompt has {len(prefix)} tokens; it needs 1 to {length - 1} (max_text_len {length})")
    image = model.encode_image(images)  # once: the image does not change between steps
    b = images.shape[0]
    ids = torch.zeros(b, length, dtype=torch.long, device=images.device)
    ids[:, : len(prefix)] = torch.tensor(prefix, device=images.device)
    mask = torch.zeros(b, length, device=images.device)
    captions: list[list[int]] = [[] for _ in range(b)]
    done = [False] * b
    for t in range(len(prefix), length):
        mask[:, :t] = 1.0
        fused = model.fuse_causal(model.text.forward_causal(ids, mask), mask, image)
        ids[:, t] = model.mlm_logits(fused[:, t - 1]).argmax(dim=-1)
        for row, token in enumerate(ids[:, t].tolist()):
            done[row] = done[row] or token == sep_id
            if not done[row]:
                captions[row].append(token)
        if all(done):
            break
    return captions


def greedy_caption(model: EfficientVLM, images: torch.Tensor, tokenizer: Tokenizer, prompt: str = PROMPT) -> list[str]:
    """The greedy caption of each image, as text (the prompt not repeated)."""
    ids = greedy_caption_ids(model, images, prompt_ids(tokenizer, prompt), tokenizer.sep_id)
    return [tokenizer.decode(caption) for caption in ids]


__all__ = ["PROMPT", "greedy_caption", "greedy_caption_ids", "prompt_ids"]
