"""Draw detections on an image (for `minivlm detect --out`)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from minivlm.errors import InputError
from minivlm.python_ref.pipeline import Detection


def draw_detections(image: np.ndarray, detections: list[Detection], out: str | Path) -> None:
    """Write `image` with a labelled box per detection to `out` (format from the suffix), atomically."""
    out = Path(out)
    if not out.parent.is_dir():
        raise InputError(f"cannot write {str(out)!r}: folder {str(out.parent)!r} does not exist")
    canvas = Image.fromarray(image).convert("RGB")
    pen = ImageDraw.Draw(canvas)
    for d in detections:
        pen.rectangle(d.box, outline=(0, 0, 0), width=2)
        pen.text((d.box[0] + 2, max(0.0, d.box[1] - 11)), f"{d.label} {d.score:.2f}", fill=(0, 0, 0))
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=out.suffix, dir=out.parent)
    os.close(fd)
    try:
        canvas.save(tmp)
        os.replace(tmp, out)
    except (OSError, ValueError) as err:
        Path(tmp).unlink(missing_ok=True)
        raise InputError(f"cannot write {str(out)!r}: {err}") from None
