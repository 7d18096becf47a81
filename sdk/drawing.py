"""Draw detections on an image (for `minivlm detect --out`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from minivlm.converters.atomic import FolderNotWritable, atomic_file
from minivlm.errors import InputError
from minivlm.python_ref.pipeline import Detection

# File name suffix -> the Pillow format it is written in.
DRAW_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".bmp": "BMP", ".tif": "TIFF", ".tiff": "TIFF",
                ".webp": "WEBP"}


def check_output(out: str | Path) -> str:
    """The Pillow format `out` is written in; InputError unless its suffix is one of DRAW_FORMATS and its folder
    exists (checked before any work, so a bad `--out` fails fast)."""
    out = Path(out)
    fmt = DRAW_FORMATS.get(out.suffix.lower())
    if fmt is None:
        what = f"suffix {out.suffix!r}" if out.suffix else "no suffix"
        raise InputError(f"cannot write {str(out)!r}: it has {what}, expected one of {', '.join(DRAW_FORMATS)}")
    if not out.parent.is_dir():
        raise InputError(f"cannot write {str(out)!r}: folder {str(out.parent)!r} does not exist")
    if out.is_dir():
        raise InputError(f"cannot write {str(out)!r}: it is a folder, expected an image file name")
    return fmt


def draw_detections(image: np.ndarray, detections: list[Detection], out: str | Path) -> None:
    """Write `image` with a labelled box per detection to `out` (format from the suffix, one of DRAW_FORMATS),
    atomically, with the permissions of a newly created file (0666 less the umask)."""
    fmt = check_output(out)
    out = Path(out)
    canvas = Image.fromarray(image).convert("RGB")
    pen = ImageDraw.Draw(canvas)
    for d in detections:
        pen.rectangle(d.box, outline=(0, 0, 0), width=2)
        pen.text((d.box[0] + 2, max(0.0, d.box[1] - 11)), f"{d.label} {d.score:.2f}", fill=(0, 0, 0))
    try:
        with atomic_file(out) as file:  # interrupted too: the temporary file never stays behind
            canvas.save(file, format=fmt)
    except FolderNotWritable as err:
        raise InputError(f"cannot write {str(out)!r}: cannot create a file in {str(out.parent)!r} ({err.strerror})") from None
    except (OSError, ValueError, KeyError) as err:
        text = err.strerror if isinstance(err, OSError) and err.strerror else str(err).strip()
        raise InputError(f"cannot write {str(out)!r}: {text.splitlines()[0] if text else type(err).__name__}") from None
