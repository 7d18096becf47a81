"""EfficientVLM configs: the presets' depths as the paper states them, and configs that cannot work refused."""

import pytest

from minivlm.python_ref.efficientvlm.config import (PRESETS, TextConfig, ViTConfig, efficientvlm_demo_student,
                                                    efficientvlm_demo_teacher, efficientvlm_paper, efficientvlm_teacher,
                                                    vocab_path)
from minivlm.python_ref.efficientvlm.generate import PROMPT
from minivlm.python_ref.errors import ConfigError
from minivlm.python_ref.scenes import generate_scene
from minivlm.python_ref.tokenizer import Tokenizer


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


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_has_a_vocabulary_of_its_embedding_size(name):
    cfg = PRESETS[name]()
    assert Tokenizer.from_vocab(vocab_path(cfg)).vocab_size == cfg.text.vocab_size


def test_the_demo_vocabulary_spells_every_caption_question_and_answer_of_the_scenes():
    """Every text of 500 scenes encodes without [UNK] and decodes to itself."""
    tokenizer = Tokenizer.from_vocab(vocab_path(efficientvlm_demo_teacher()))
    for index in range(500):
        scene = generate_scene(11, index)
        for text in (scene.caption, PROMPT.strip(), *(part for qa in scene.qa for part in qa)):
            ids = tokenizer.encode(text)
            assert tokenizer.unk_id not in ids, text
            assert tokenizer.decode(ids) == text


def test_the_demo_student_halves_the_teacher_layer_for_layer():
    """Student layer i <-> teacher layer 2i in each stack, at the same widths (hidden states compare 1:1)."""
    teacher, student = efficientvlm_demo_teacher(), efficientvlm_demo_student()
    assert teacher.vision.layers == 2 * student.vision.layers
    assert teacher.text.text_layers == 2 * student.text.text_layers
    assert teacher.text.cross_layers == 2 * student.text.cross_layers
    assert (teacher.vision.width, teacher.text.hidden_size) == (student.vision.width, student.text.hidden_size)
    assert teacher.vision.heads == student.vision.heads and teacher.text.heads == student.text.heads
