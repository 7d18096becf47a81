"""Write the demo scenes both apps ship: a few shape scenes of the stream the demo models are evaluated on (never
trained on), as PNGs with a scenes.json index of what each one shows (its reference caption and questions with
their answers), so a new user of the apps sees the models on pictures of the kind they were trained for.

    python scripts/make_demo_scenes.py            # android_demo/app/src/main/assets/scenes + ios_demo/App/Resources/Scenes
    python scripts/make_demo_scenes.py --check    # exit 1 unless both folders hold exactly these scenes

Each folder is replaced as a whole (written beside, then renamed), so an interrupted run leaves the old scenes.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from minivlm.converters.atomic import atomic_folder
from minivlm.evaluate import EVAL_SEED
from minivlm.python_ref.scenes import generate_scene

REPO = Path(__file__).resolve().parents[1]
FOLDERS = (REPO / "android_demo" / "app" / "src" / "main" / "assets" / "scenes",
           REPO / "ios_demo" / "App" / "Resources" / "Scenes")
INDICES = (0, 1, 2, 3, 4, 5)
INDEX_FILE = "scenes.json"


def scenes_index() -> dict:
    """The index both apps read: per scene its file, where it comes from, reference caption, questions."""
    entries = []
    for index in INDICES:
        scene = generate_scene(EVAL_SEED, index)
        entries.append({
            "file": f"scene_{index}.png",
            "source": f"python_ref.scenes.generate_scene({EVAL_SEED}, {index})",
            "caption": scene.caption,
            "questions": [{"question": q, "answer": a} for q, a in scene.qa],
        })
    return {"scenes": entries}


def png_bytes(index: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(generate_scene(EVAL_SEED, index).image).save(buffer, format="PNG")
    return buffer.getvalue()


def write(folder: Path) -> None:
    folder.parent.mkdir(parents=True, exist_ok=True)
    with atomic_folder(folder) as tmp:
        for index in INDICES:
            (tmp / f"scene_{index}.png").write_bytes(png_bytes(index))
        (tmp / INDEX_FILE).write_text(json.dumps(scenes_index(), indent=1) + "\n", encoding="utf-8")


def problems(folder: Path) -> list[str]:
    """What differs between `folder` and the scenes this script writes (pixels compared, not PNG bytes: zlib
    versions may compress the same pixels differently)."""
    if not folder.is_dir():
        return [f"{folder} is missing"]
    expected = {f"scene_{i}.png" for i in INDICES} | {INDEX_FILE}
    found = {p.name for p in folder.iterdir()}
    out = [f"{folder}: unexpected {sorted(found - expected)}, missing {sorted(expected - found)}"] if found != expected else []
    for index in INDICES:
        path = folder / f"scene_{index}.png"
        if path.is_file() and not np.array_equal(np.asarray(Image.open(path).convert("RGB")),
                                                 generate_scene(EVAL_SEED, index).image):
            out.append(f"{path} does not show generate_scene({EVAL_SEED}, {index})")
    index_path = folder / INDEX_FILE
    if index_path.is_file() and json.loads(index_path.read_text(encoding="utf-8")) != scenes_index():
        out.append(f"{index_path} differs from the scenes' annotations")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only compare the shipped scenes; exit 1 on a difference")
    args = parser.parse_args()
    if args.check:
        found = [p for folder in FOLDERS for p in problems(folder)]
        for line in found:
            print(line, file=sys.stderr)
        sys.exit(1 if found else 0)
    for folder in FOLDERS:
        write(folder)
        print(f"{folder.relative_to(REPO)}: {len(INDICES)} scenes + {INDEX_FILE}")


if __name__ == "__main__":
    main()
