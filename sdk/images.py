"""Turn what a user hands us (a path, a PIL image, an array) into the uint8 (H, W, 3) RGB the model reads.

Any size is accepted (the model letterboxes it). Grayscale is replicated to three channels, palette images
are expanded, and transparent pixels (RGBA, LA, palette with transparency) are composited onto white,
because a transparent background has no colour of its own and white is what a viewer shows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, UnidentifiedImageError

from minivlm.errors import InputError

ImageLike = Union[str, Path, Image.Image, np.ndarray]


def _from_pil(image: Image.Image) -> np.ndarray:
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("RGBA", "LA", "PA"):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, rgba)
    if image.mode != "RGB":
        image = image.convert("RGB")
    return np.asarray(image, dtype=np.uint8).copy()


def _from_array(array: np.ndarray) -> np.ndarray:
    if array.dtype != np.uint8:
        raise InputError(f"image array has dtype {array.dtype}, expected uint8")
    if array.ndim == 2:
        return np.repeat(array[:, :, None], 3, axis=2)
    if array.ndim == 3 and array.shape[2] in (3, 4):
        if array.shape[2] == 4:
            return _from_pil(Image.fromarray(array, mode="RGBA"))
        return np.ascontiguousarray(array)
    raise InputError(f"image array has shape {array.shape}, expected (H, W), (H, W, 3) or (H, W, 4)")


def load_image(image: ImageLike) -> np.ndarray:
    """A path, PIL image or uint8 array -> uint8 (H, W, 3) RGB. Raises InputError with one line otherwise."""
    if isinstance(image, (str, Path)):
        path = Path(image)
        try:
            with Image.open(path) as opened:
                opened.load()
                array = _from_pil(opened)
        except FileNotFoundError:
            raise InputError(f"image file {str(path)!r} does not exist") from None
        except (UnidentifiedImageError, OSError, ValueError) as err:
            raise InputError(f"cannot read image {str(path)!r}: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else 'unreadable'}") from None
    elif isinstance(image, Image.Image):
        array = _from_pil(image)
    elif isinstance(image, np.ndarray):
        array = _from_array(image)
    else:
        raise InputError(f"image is a {type(image).__name__}, expected a path, a PIL image or a uint8 array")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise InputError(f"image is {array.shape[0]}x{array.shape[1]}, expected at least 1x1 pixels")
    return array
