"""EfficientVLM's heads: image-text contrast (ITC), matching (ITM), masked LM (MLM) and a VQA classifier.

Mirrors zengyan-97/X-VLM `models/xvlm.py` (`XVLMBase`: `vision_proj`, `text_proj`, `temp`, `get_features`,
`get_contrastive_loss`'s similarities, `itm_head = build_mlp(text_width, 2)`), `models/model_pretrain.py`
(`temp.clamp_(0.001, 0.5)`) and `models/xbert.py` (`BertLMPredictionHead`, tied to the word embeddings); the
same heads in swaggy-TN/EfficientVLM `efficient_models/xvlm.py`.

VQA: X-VLM and EfficientVLM answer generatively (an answer decoder ranks the answer list). The SDK's demo task
uses a classifier over a fixed answer list instead, as MiniVLM's VQA head does (`python_ref/fusion.py`), here
on the fused [CLS] through X-VLM's `build_mlp` layout (its classifier heads: ITM, NLVR's `cls_head`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..fusion import LayerNorm, MLMHead, init_bert
from .config import EfficientVLMConfig

TEMPERATURE_RANGE = (0.001, 0.5)  # X-VLM's clamp of the learned ITC temperature
MLP_NORM_EPS = 1e-5  # build_mlp's nn.LayerNorm default


class MLPHead(nn.Module):
    """X-VLM `build_mlp`: Linear(D, 2D) -> LayerNorm -> GELU -> Linear(2D, out)."""

    def __init__(self, dim: int, out: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, 2 * dim)
        self.norm = LayerNorm(2 * dim, MLP_NORM_EPS)
        self.fc2 = nn.Linear(2 * dim, out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.norm(self.fc1(x))))


class ITCHead(nn.Module):
    """Contrastive head: class-token projections to `embed_dim`, L2-normalised, and a learned temperature.

    The temperature is clamped in the forward pass (X-VLM clamps the parameter in place before each step:
    the same value, without mutating state, so that the head exports)."""

    def __init__(self, cfg: EfficientVLMConfig) -> None:
        super().__init__()
        self.vision_proj = nn.Linear(cfg.vision.width, cfg.embed_dim)
        self.text_proj = nn.Linear(cfg.text.hidden_size, cfg.embed_dim)
        self.temp = nn.Parameter(torch.tensor(cfg.temperature))

    def image_features(self, image: torch.Tensor) -> torch.Tensor:
        """(B, embed_dim) unit vectors of the image class token of `image` (B, N, Dv)."""
        return F.normalize(self.vision_proj(image[:, 0]), dim=-1)

    def text_features(self, text: torch.Tensor) -> torch.Tensor:
        """(B, embed_dim) unit vectors of the text [CLS] of `text` (B, T, H) (text encoder output, unfused)."""
        return F.normalize(self.text_proj(text[:, 0]), dim=-1)

    def similarity(self, queries: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        """(Bq, Bk) logits: cosine similarity / temperature (image->text with image features first, text->image
        with text features first)."""
        return queries @ keys.t() / self.temp.clamp(*TEMPERATURE_RANGE)

    def forward(self, image: torch.Tensor, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(image->text, text->image) logits of a batch of image tokens (B, N, Dv) and text states (B, T, H)."""
        image_feat, text_feat = self.image_features(image), self.text_features(text)
        return self.similarity(image_feat, text_feat), self.similarity(text_feat, image_feat)


class Heads(nn.Module):
    """All four heads; each reads the [CLS] (position 0) or every position of the states it is given."""

    def __init__(self, cfg: EfficientVLMConfig) -> None:
        super().__init__()
        self.itc = ITCHead(cfg)
        self.itm_head = MLPHead(cfg.text.hidden_size, 2)  # index 1 = match, as X-VLM's itm labels
        # fusion.MLMHead is HF's BertLMPredictionHead and reads only hidden_size, layer_norm_eps and vocab_size,
        # which TextConfig names the same way.
        self.mlm_head = MLMHead(cfg.text)  # type: ignore[arg-type]
        self.vqa_head = MLPHead(cfg.text.hidden_size, cfg.num_answers)
        self.apply(init_bert)

    def contrast(self, image: torch.Tensor, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """ITC (image->text, text->image) logits, each (B, B); see `ITCHead.forward`."""
        return self.itc(image, text)

    def itm_logits(self, fused: torch.Tensor) -> torch.Tensor:
        """(B, 2) no-match / match logits from the fused [CLS] of `fused` (B, T, H)."""
        return self.itm_head(fused[:, 0])

    def mlm_logits(self, fused: torch.Tensor, word_embeddings: torch.Tensor) -> torch.Tensor:
        """(B, T, V) vocabulary logits; the decoder is the text encoder's word embedding matrix (tied)."""
        return self.mlm_head(fused, word_embeddings)

    def vqa_logits(self, fused: torch.Tensor) -> torch.Tensor:
        """(B, num_answers) answer logits from the fused [CLS]."""
        return self.vqa_head(fused[:, 0])


__all__ = ["Heads", "ITCHead", "MLPHead", "TEMPERATURE_RANGE"]
