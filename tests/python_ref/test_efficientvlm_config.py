"""EfficientVLM configs: the presets' depths as the paper states them, and configs that cannot work refused."""

import pytest

from minivlm.python_ref.efficientvlm.config import (PRESETS, TextConfig, ViTConfig, efficientvlm_paper,
                                                    efficientvlm_teacher)
from minivlm.python_ref.errors import ConfigError


def test_teacher_and_student_depths_follow_the_paper():
    """X-VLM-clip teacher 12 / 6 / 6 at width 768; the paper's student 6 / 3 / 3 at the same width."""
    teacher, student = efficientvlm_teacher(), efficientvlm_paper()
    assert (teacher.vision.layers, teacher.text.text_layers, teacher.text.cross_layers) == (12, 6, 6)
    assert (student.vision.layers, student.text.text_layers, student.text.cross_layers) == (6, 3, 3)
    assert teacher.vision.width == teacher.text.hidden_size == student.vision.width == 768
    assert (teacher.vision.patch_size, teacher.vision.num_tokens) == (16, (224 // 16) ** 2 + 1)
    assert {name: make().name for name, make in PRESETS.items()} == {name: name for name in PRESETS}


@pytest.mark.parametrize(("make", "message"), [
    (lambda: ViTConfig(image_size=100, patch_size=16), "image_size 100 is not a multiple of patch_size 16"),
    (lambda: ViTConfig(width=100, heads=12), "vision width 100 is not divisible by 12 heads"),
    (lambda: TextConfig(hidden_size=100, heads=12), "text hidden_size 100 is not divisible by 12 heads"),
    (lambda: TextConfig(max_text_len=600), "max_text_len 600 exceeds max_position_embeddings 512"),
])
def test_a_config_that_cannot_work_is_refused_in_one_line(make, message):
    with pytest.raises(ConfigError, match=message):
        make()
