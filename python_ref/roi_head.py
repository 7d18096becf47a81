"""RoI box head: 2-layer MLP feature extractor, class/box predictors and an attribute head.

The MLP and predictors mirror maskrcnn-benchmark `modeling/roi_heads/box_head/roi_box_feature_extractors.py`
(`FPN2MLPFeatureExtractor`: fc6, fc7 with ReLU) and `roi_box_predictors.py` (`FPNPredictor`: cls_score,
class-specific bbox_pred); fc7 is MiniVLM's region feature. The attribute head follows bottom-up attention
(Anderson et al. 2018, `faster_rcnn/models/.../attributes`): the embedding of the predicted class is
concatenated with fc7 -> fc_attr (512) -> ReLU -> attr_score.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import RoIHeadConfig
from .graph_ops import first_max_one_hot

CLASS_EMBEDDING_DIM = 256  # bottom-up attention's `cls_embedding` width
ATTRIBUTE_HIDDEN = 512  # bottom-up attention's `fc_attr` width


class RoIBoxHead(nn.Module):
    """Pooled RoI features (K, C, P, P) -> (region features (K, D), class logits (K, num_classes),
    class-specific box deltas (K, num_classes * 4), attribute logits (K, num_attributes)).

    Class 0 is background. The attribute head embeds the argmax non-background class as one_hot @ E
    (a matmul, not a gather, and the one-hot from arithmetic, not argmax: the graph stays in one XNNPACK
    partition); training code may call `attributes` with ground-truth one-hot labels instead.
    """

    def __init__(self, cfg: RoIHeadConfig, channels: int) -> None:
        super().__init__()
        d, c = cfg.representation_size, cfg.num_classes
        self.num_classes = c
        self.fc6 = nn.Linear(channels * cfg.pooler_resolution**2, d)
        self.fc7 = nn.Linear(d, d)
        self.cls_score = nn.Linear(d, c)
        self.bbox_pred = nn.Linear(d, c * 4)
        self.cls_embedding = nn.Embedding(c, CLASS_EMBEDDING_DIM)
        self.fc_attr = nn.Linear(d + CLASS_EMBEDDING_DIM, ATTRIBUTE_HIDDEN)
        self.attr_score = nn.Linear(ATTRIBUTE_HIDDEN, cfg.num_attributes)

    def attributes(self, features: torch.Tensor, class_one_hot: torch.Tensor) -> torch.Tensor:
        """Attribute logits (K, A) from fc7 features (K, D) and a class one-hot (K, num_classes)."""
        embedded = class_one_hot @ self.cls_embedding.weight  # (K, 256)
        return self.attr_score(F.relu(self.fc_attr(torch.cat([features, embedded], dim=1))))

    def forward(self, pooled: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        x = F.relu(self.fc6(pooled.flatten(1)))  # (K, D)
        x = F.relu(self.fc7(x))  # (K, D): the region feature
        logits = self.cls_score(x)  # (K, num_classes)
        one_hot = first_max_one_hot(logits, skip_first=True)  # (K, num_classes): argmax, never background
        return x, logits, self.bbox_pred(x), self.attributes(x, one_hot)
