"""EfficientVLM's image preprocessing, as X-VLM's test transform (zengyan-97/X-VLM `dataset/__init__.py`):
`Resize((S, S), interpolation=BICUBIC)` of the whole image (no letterbox: the aspect ratio is not kept),
`ToTensor` (/255) and `Normalize` with CLIP's mean and std.

The resize is PIL's (what torchvision applies to a PIL image), so a phone build that resizes with another
library must match PIL's bicubic filter (antialiased, a = -0.5) to see the same pixels.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from ..errors import InputError
from .config import ViTConfig


def resize(image: np.ndarray, size: int) -> np.ndarray:
    """uint8 (H, W, 3) RGB -> uint8 (size, size, 3): PIL bicubic, as X-VLM's transform."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        shape = getattr(image, "shape", None)
        dtype = getattr(image, "dtype", type(image).__name__)
        raise InputError(f"image is {dtype} with shape {shape}, expected uint8 (H, W, 3) RGB")
    if image.shape[:2] == (size, size):
        return image
    return np.asarray(Image.fromarray(image).resize((size, size), Image.BICUBIC))


def normalise(pixels: np.ndarray, cfg: ViTConfig) -> torch.Tensor:
    """uint8 (B, S, S, 3) -> float32 (B, 3, S, S): /255, then the config's mean and std."""
    x = torch.from_numpy(np.ascontiguousarray(pixels)).permute(0, 3, 1, 2).float() / 255.0
    mean = torch.tensor(cfg.pixel_mean, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(cfg.pixel_std, dtype=torch.float32).view(1, 3, 1, 1)
    return (x - mean) / std


def preprocess_images(images: list[np.ndarray], cfg: ViTConfig) -> torch.Tensor:
    """uint8 RGB images of any sizes -> the ViT's input (B, 3, S, S)."""
    return normalise(np.stack([resize(image, cfg.image_size) for image in images]), cfg)


__all__ = ["normalise", "preprocess_images", "resize"]
