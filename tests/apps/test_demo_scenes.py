"""The demo scenes both apps ship (scripts/make_demo_scenes.py): each PNG shows the scene its index names, pixel
for pixel, and scenes.json holds that scene's caption and questions; the Android and iOS folders are the same."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
from PIL import Image

from _appbuild import REPO

SCRIPT = REPO / "scripts" / "make_demo_scenes.py"


def _script():
    spec = importlib.util.spec_from_file_location("make_demo_scenes", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_shipped_scenes_are_the_scripts():
    script = _script()
    assert [p for folder in script.FOLDERS for p in script.problems(folder)] == []


def test_index_names_every_png_and_its_grammar():
    android, ios = _script().FOLDERS
    index = json.loads((android / "scenes.json").read_text(encoding="utf-8"))
    assert index == json.loads((ios / "scenes.json").read_text(encoding="utf-8"))
    files = [s["file"] for s in index["scenes"]]
    assert sorted(files) == sorted(p.name for p in android.glob("*.png"))
    for scene in index["scenes"]:
        assert scene["caption"] and scene["questions"][0]["question"] == "how many shapes are there?"


def test_a_changed_pixel_is_found(tmp_path):
    script = _script()
    android = script.FOLDERS[0]
    copy = tmp_path / "scenes"
    copy.mkdir()
    for path in android.iterdir():
        (copy / path.name).write_bytes(path.read_bytes())
    pixels = np.asarray(Image.open(copy / "scene_2.png").convert("RGB")).copy()
    pixels[10, 10, 0] ^= 1
    Image.fromarray(pixels).save(copy / "scene_2.png")
    assert [p for p in script.problems(copy) if "scene_2.png" in p]
