import numpy as np
import pytest
from PIL import Image

from minivlm.errors import InputError
from minivlm.images import load_image


def test_modes_become_rgb(tmp_path):
    gray = Image.fromarray(np.full((5, 7), 100, np.uint8), mode="L")
    assert load_image(gray).shape == (5, 7, 3) and load_image(gray)[0, 0].tolist() == [100, 100, 100]
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[0, 0] = [255, 0, 0, 255]  # opaque red stays red; transparent black becomes white
    out = load_image(rgba)
    assert out[0, 0].tolist() == [255, 0, 0] and out[1, 1].tolist() == [255, 255, 255]
    palette = Image.fromarray(np.full((3, 3, 3), 40, np.uint8)).convert("P", palette=Image.Palette.ADAPTIVE)
    path = tmp_path / "p.png"
    palette.save(path)
    assert load_image(path)[1, 1].tolist() == [40, 40, 40]
    assert load_image(str(path)).dtype == np.uint8


def test_unreadable_and_missing_files_give_one_line_errors(tmp_path):
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not a png at all")
    for path, message in [(junk, "cannot read image"), (tmp_path / "missing.jpg", "does not exist")]:
        with pytest.raises(InputError, match=message) as err:
            load_image(path)
        assert "\n" not in str(err.value)


def test_bad_arrays_and_types_are_rejected():
    with pytest.raises(InputError, match="dtype float64"):
        load_image(np.zeros((4, 4, 3)))
    with pytest.raises(InputError, match=r"shape \(4, 4, 2\)"):
        load_image(np.zeros((4, 4, 2), np.uint8))
    with pytest.raises(InputError, match="is a int"):
        load_image(3)
