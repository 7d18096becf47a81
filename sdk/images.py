"""Turn what a user hands us (a path, a PIL image, an array) into the uint8 (H, W, 3) RGB the model reads.

Accepted images, and how their values are read:
- a path (any format Pillow reads), a PIL image, or a NumPy array of shape (H, W), (H, W, 3) or (H, W, 4);
- 8-bit images (uint8 arrays, PIL's 8-bit modes) as they are;
- 16-bit images (PIL modes `I;16*`, mode `I` with values in 0..65535, uint16 arrays) scaled by their bit
  depth: v / 257, rounded, so 65535 is white;
- float images (PIL mode `F`, float16/32/64 arrays) must be finite; if every value is in [0, 1] they are
  fractions (× 255), else if every value is in [0, 255] they are 8-bit levels; anything else, and any NaN or
  infinity, is an InputError naming the range found;
- the EXIF orientation of files and PIL images is applied, so pixel coordinates (and the boxes `detect`
  returns) are those of the image as a viewer displays it;
- grayscale is replicated to three channels, palette images are expanded, and transparent pixels (RGBA, LA,
  palette with transparency) are composited onto white, because a transparent background has no colour of
  its own and white is what a viewer shows;
- a file with more pixels than Pillow's decompression-bomb limit (`PIL.Image.MAX_IMAGE_PIXELS`, 89,478,485 by
  default; None lifts it) is refused from its header, before any pixel is decoded.

Any size is accepted (the model letterboxes it). `shrink_for_input` reduces an image many times larger than
the model's input before preprocessing, so that its float copy stays small.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Union

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from minivlm.errors import InputError

ImageLike = Union[str, Path, Image.Image, np.ndarray]

# Images whose long side is at most this many times the model's input side reach preprocessing untouched
# (bit-exact with python_ref and the native core); larger ones are first box-reduced by an integer factor.
PRESHRINK_RATIO = 4
# ... to a long side of at least this many input sides, so the bilinear resize after it still interpolates.
PRESHRINK_TARGET = 2
_REDUCE_ROWS = 64  # output rows box-reduced at a time: bounds the uint32 work array
_COPY_BYTES = 1 << 22  # a decoded PIL image is copied into NumPy this many bytes at a time


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0]}" if text else type(err).__name__


def _levels_16bit(values: np.ndarray) -> np.ndarray:
    """Integers in 0..65535 -> uint8, v / 257 rounded (the exact inverse of 8 -> 16-bit scaling)."""
    return ((values.astype(np.uint32) + 128) // 257).astype(np.uint8)


def _levels_float(values: np.ndarray) -> np.ndarray:
    """Finite floats in [0, 1] (fractions) or [0, 255] (levels) -> uint8; InputError otherwise."""
    values = values.astype(np.float32, copy=False)
    if values.size == 0:
        return values.astype(np.uint8)
    if not np.isfinite(values).all():
        raise InputError("float image has NaN or infinite values, expected finite values in [0, 1] or [0, 255]")
    lo, hi = float(values.min()), float(values.max())
    if lo >= 0.0 and hi <= 1.0:
        return np.rint(values * 255.0).astype(np.uint8)
    if lo >= 0.0 and hi <= 255.0:
        return np.rint(values).astype(np.uint8)
    raise InputError(f"float image has values in [{lo:g}, {hi:g}], expected all in [0, 1] or all in [0, 255]")


def _upright(image: Image.Image) -> Image.Image:
    """The image as a viewer shows it: its EXIF orientation applied (a new image only if it has one)."""
    orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
    return ImageOps.exif_transpose(image) if orientation in range(2, 9) else image


def _from_pil(image: Image.Image) -> np.ndarray:
    image = _upright(image)
    if image.mode == "F" or image.mode.startswith("I;16"):
        return _from_array(np.asarray(image))
    if image.mode == "I":  # 32-bit integers: how Pillow holds 16-bit grayscale from several formats
        values = np.asarray(image)
        lo, hi = (int(values.min()), int(values.max())) if values.size else (0, 0)
        if lo < 0 or hi > 65535:
            raise InputError(f"image of mode 'I' has values in [{lo}, {hi}], expected 16-bit values in [0, 65535]")
        return _from_array(_levels_16bit(values))
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("RGBA", "LA", "PA"):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, rgba)
    if image.mode != "RGB":
        image = image.convert("RGB")
    return _rgb_pixels(image)


def _rgb_pixels(image: Image.Image) -> np.ndarray:
    """An RGB PIL image -> uint8 (H, W, 3), copied in bands of rows: `np.asarray` of the whole image would hold
    two more full-size copies at once (Pillow's `tobytes` joins its chunks)."""
    out = np.empty((image.height, image.width, 3), np.uint8)
    rows = max(1, _COPY_BYTES // max(1, 3 * image.width))
    for top in range(0, image.height, rows):
        bottom = min(top + rows, image.height)
        out[top:bottom] = np.asarray(image.crop((0, top, image.width, bottom)))
    return out


def _from_array(array: np.ndarray) -> np.ndarray:
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (3, 4))):
        raise InputError(f"image array has shape {array.shape}, expected (H, W), (H, W, 3) or (H, W, 4)")
    if array.dtype.kind == "u" and array.dtype.itemsize == 2:
        array = _levels_16bit(array)
    elif array.dtype.kind == "f":
        array = _levels_float(array)
    elif array.dtype != np.uint8:
        raise InputError(f"image array has dtype {array.dtype}, expected uint8, uint16 or float")
    if array.ndim == 2:
        return np.repeat(array[:, :, None], 3, axis=2)
    if array.shape[2] == 4:
        return _from_pil(Image.fromarray(np.ascontiguousarray(array)))  # uint8 (H, W, 4) is RGBA
    return np.ascontiguousarray(array)


def _pixel_limit() -> int | None:
    return Image.MAX_IMAGE_PIXELS


def _too_large(path: Path, pixels: int, size: str = "") -> InputError:
    return InputError(f"image {str(path)!r} has {pixels:,} pixels{size}, more than the {_pixel_limit():,} allowed "
                      f"(PIL.Image.MAX_IMAGE_PIXELS, the decompression-bomb limit)")


def _from_file(image: str | Path) -> np.ndarray:
    if isinstance(image, str) and not image:
        raise InputError("image path is empty, expected the path of an image file")
    path = Path(image)
    try:
        with Image.open(path) as opened:  # reads the header only
            width, height = opened.size
            limit = _pixel_limit()
            if limit is not None and width * height > limit:
                raise _too_large(path, width * height, f" ({width}x{height})")
            opened.load()
            return _from_pil(opened)
    except InputError:
        raise
    except FileNotFoundError:
        raise InputError(f"image file {str(path)!r} does not exist") from None
    except Image.DecompressionBombError as err:  # Pillow refuses twice its limit while reading the header
        found = re.search(r"\((\d+) pixels\)", str(err))
        if found is None:
            raise InputError(f"cannot read image {str(path)!r}: {_first_line(err)}") from None
        raise _too_large(path, int(found.group(1))) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
        raise InputError(f"cannot read image {str(path)!r}: {_first_line(err)}") from None


def load_image(image: ImageLike) -> np.ndarray:
    """A path, PIL image or array -> uint8 (H, W, 3) RGB (see the module docstring for the rules).
    Raises InputError with one line otherwise."""
    if isinstance(image, (str, Path)):
        array = _from_file(image)
    elif isinstance(image, Image.Image):
        try:
            image.load()  # a truncated file, or a closed image, fails here
            array = _from_pil(image)
        except InputError:
            raise
        except (OSError, ValueError, SyntaxError) as err:
            raise InputError(f"cannot read the PIL image ({image.mode}, {image.width}x{image.height}): {_first_line(err)}") from None
    elif isinstance(image, np.ndarray):
        array = _from_array(image)
    else:
        raise InputError(f"image is a {type(image).__name__}, expected a path, a PIL image or a NumPy array")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise InputError(f"image is {array.shape[0]}x{array.shape[1]}, expected at least 1x1 pixels")
    return array


def shrink_for_input(image: np.ndarray, size: int) -> tuple[np.ndarray, int]:
    """Reduce a uint8 (H, W, 3) image whose long side exceeds PRESHRINK_RATIO x `size` by an integer factor f
    (each output pixel the rounded mean of an f x f box, partial boxes at the right and bottom edges), to a
    long side of at least PRESHRINK_TARGET x `size`; returns it and f (1: the image itself, untouched).

    Output pixel i covers input pixels [i·f, (i+1)·f), so a coordinate x in it is x·f in the original. The
    work is done in bands of rows in integers: the float copy preprocessing makes is of the reduced image.
    """
    height, width = image.shape[:2]
    if max(height, width) <= PRESHRINK_RATIO * size:
        return image, 1
    f = max(height, width) // (PRESHRINK_TARGET * size)
    out_h, out_w = -(-height // f), -(-width // f)
    starts = np.arange(0, width, f)
    col_counts = np.minimum(starts + f, width) - starts  # (out_w,)
    out = np.empty((out_h, out_w, image.shape[2]), np.uint8)
    for top in range(0, out_h, _REDUCE_ROWS):
        bottom = min(top + _REDUCE_ROWS, out_h)
        rows = image[top * f : min(bottom * f, height)]  # view
        full = (bottom - top) if bottom * f <= height else (bottom - top - 1)
        sums = np.empty((bottom - top, out_w, image.shape[2]), np.uint32)
        if full:
            block = rows[: full * f].reshape(full, f, width, -1).sum(axis=1, dtype=np.uint32)  # (full, W, C)
            sums[:full] = np.add.reduceat(block, starts, axis=1)
        if full < bottom - top:  # the last, partial band of rows
            sums[full] = np.add.reduceat(rows[full * f :].sum(axis=0, dtype=np.uint32), starts, axis=0)
        row_counts = np.full(bottom - top, f, np.uint32)
        row_counts[-1] = min(bottom * f, height) - (bottom - 1) * f
        counts = row_counts[:, None, None] * col_counts[None, :, None].astype(np.uint32)
        out[top:bottom] = ((sums + counts // 2) // counts).astype(np.uint8)
    return out, f
