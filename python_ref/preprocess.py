"""Image preprocessing: letterbox any RGB image into the model's fixed square and normalise it.

Exactly defined so the native core can reproduce it bit for bit: scale = S / max(H, W); the resized size
is floor(H·scale + 0.5) × floor(W·scale + 0.5) (at least 1); bilinear resampling with half-pixel centres
and no antialiasing (`F.interpolate(..., align_corners=False)`) on float32 pixel values; then
(v / 255 − mean) / std per channel; the image sits at the top-left and the padding is 0 after
normalisation (the mean colour). Boxes map back to the original image by dividing by `scale`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .errors import InputError


@dataclass(frozen=True)
class Letterbox:
    """Where the original image sits inside the square input."""

    height: int  # original image
    width: int
    scale: float  # input pixels per original pixel
    resized_height: int
    resized_width: int

    def boxes_to_image(self, boxes: torch.Tensor) -> torch.Tensor:
        """Input-pixel xyxy boxes -> original-image pixels, clipped to the image."""
        out = boxes / self.scale
        out[:, 0::2] = out[:, 0::2].clamp(0, self.width)
        out[:, 1::2] = out[:, 1::2].clamp(0, self.height)
        return out


def letterbox_geometry(height: int, width: int, size: int) -> Letterbox:
    """The scale and resized size for an image of `height`x`width` in a `size`-square input."""
    if height < 1 or width < 1:
        raise InputError(f"image is {height}x{width}, expected at least 1x1 pixels")
    scale = size / max(height, width)
    rh = max(1, math.floor(height * scale + 0.5))
    rw = max(1, math.floor(width * scale + 0.5))
    return Letterbox(height, width, scale, min(rh, size), min(rw, size))


def preprocess(image: np.ndarray, size: int, mean: tuple[float, ...], std: tuple[float, ...]) -> tuple[torch.Tensor, Letterbox]:
    """uint8 (H, W, 3) RGB -> normalised float32 (1, 3, size, size) and its Letterbox."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        shape = getattr(image, "shape", None)
        dtype = getattr(image, "dtype", type(image).__name__)
        raise InputError(f"image is {dtype} with shape {shape}, expected uint8 (H, W, 3) RGB")
    box = letterbox_geometry(image.shape[0], image.shape[1], size)
    pixels = torch.from_numpy(np.array(image, dtype=np.uint8, copy=True)).permute(2, 0, 1)[None].float()  # (1, 3, H, W)
    if (box.resized_height, box.resized_width) != (box.height, box.width):
        pixels = F.interpolate(pixels, size=(box.resized_height, box.resized_width), mode="bilinear", align_corners=False)
    mean_t = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
    normalised = (pixels / 255.0 - mean_t) / std_t
    out = torch.zeros(1, 3, size, size, dtype=torch.float32)
    out[:, :, : box.resized_height, : box.resized_width] = normalised
    return out, box


def check_images(images: object, image_size: int) -> None:
    """Raise InputError (one line) unless `images` is a finite float32 tensor (B, 3, S, S), S = `image_size`:
    what an image encoder's graph takes (TEE stage 1, the EfficientVLM ViT), checked outside the graph."""
    s = image_size
    if not isinstance(images, torch.Tensor):
        raise InputError(f"images is a {type(images).__name__}, expected a torch.Tensor (B, 3, {s}, {s})")
    if images.dim() != 4:
        raise InputError(f"images has rank {images.dim()} (shape {tuple(images.shape)}), expected 4: (B, 3, {s}, {s})")
    if images.dtype != torch.float32:
        raise InputError(f"images dtype is {images.dtype}, expected torch.float32 (normalised pixels)")
    if images.shape[0] < 1 or tuple(images.shape[1:]) != (3, s, s):
        raise InputError(f"images shape is {tuple(images.shape)}, expected (B, 3, {s}, {s}) with B >= 1")
    if not bool(torch.isfinite(images).all()):
        raise InputError("images contain NaN or infinite values")
