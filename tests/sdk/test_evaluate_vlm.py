"""`minivlm eval` of an EfficientVLM: the scores against pipelines whose right and wrong answers are known."""

import hashlib
from dataclasses import dataclass

import pytest
import torch
from typer.testing import CliRunner

from minivlm.cli import app
from minivlm.errors import InputError
from minivlm.evaluate import EVAL_SEED
from minivlm.evaluate_vlm import evaluate_vlm
from minivlm.checkpoints import save_weights
from minivlm.python_ref.efficientvlm.config import PRESETS
from minivlm.python_ref.efficientvlm.model import EfficientVLM
from minivlm.python_ref.scenes import generate_scene
from minivlm.training.vlm import vlm_metadata


@dataclass(frozen=True)
class Encoded:
    index: int
    feature: torch.Tensor


class Oracle:
    """Knows every scene of the stream by its pixels: captions and answers right, or shifted by one scene
    (`wrong`); ITC features one-hot per distinct caption (`itc_right`), else per scene."""

    def __init__(self, n: int, wrong: bool = False, itc_right: bool = True) -> None:
        self.scenes = [generate_scene(EVAL_SEED, i) for i in range(n)]
        self.by_pixels = {hashlib.sha1(s.image.tobytes()).hexdigest(): i for i, s in enumerate(self.scenes)}
        self.captions = sorted({s.caption for s in self.scenes})
        self.wrong, self.itc_right = wrong, itc_right

    def _scene(self, image: Encoded):
        return self.scenes[(image.index + self.wrong) % len(self.scenes)]

    def _onehot(self, k: int) -> torch.Tensor:
        return torch.nn.functional.one_hot(torch.tensor(k), len(self.scenes) + len(self.captions)).float()

    def encode(self, pixels) -> Encoded:
        index = self.by_pixels[hashlib.sha1(pixels.tobytes()).hexdigest()]
        own = self.captions.index(self.scenes[index].caption) if self.itc_right else len(self.captions) + index
        return Encoded(index, self._onehot(own))

    def caption_of(self, image: Encoded) -> str:
        return self._scene(image).caption

    def answer_of(self, image: Encoded, question: str) -> str:
        return dict(self._scene(image).qa).get(question, "no")

    def text_feature(self, text: str) -> torch.Tensor:
        return self._onehot(self.captions.index(text))

    def match_of(self, image: Encoded, text: str) -> float:
        return float(text == self._scene(image).caption)


def test_a_pipeline_that_is_always_right_scores_everything():
    report = evaluate_vlm(Oracle(20), n=20, gallery=20)
    assert (report.caption_exact_match, report.vqa_accuracy, report.retrieval_r1, report.retrieval_r1_itc) == (1, 1, 1, 1)
    assert report.questions == sum(len(s.qa) for s in Oracle(20).scenes)
    assert set(report.vqa_by_type) == {"count", "colour", "shape", "yes/no"}


def test_wrong_captions_answers_and_matches_are_counted_wrong():
    oracle = Oracle(20, wrong=True)  # every scene described as the next one
    report = evaluate_vlm(oracle, n=20, gallery=20)
    same = sum(s.caption == oracle.scenes[(i + 1) % 20].caption for i, s in enumerate(oracle.scenes))
    assert report.caption_exact_match == same / 20 < 1
    assert report.vqa_accuracy < 1
    assert report.retrieval_r1_itc == 1  # ITC features still right ...
    assert report.retrieval_r1 < 1  # ... but ITM re-ranking follows the wrong scene


def test_retrieval_counts_an_identical_caption_as_a_hit_and_nothing_else():
    """ITC features that carry no caption information (one-hot per scene, orthogonal to every text): the top
    caption is then the first of the gallery, a hit exactly for the scenes whose caption is that one."""
    oracle = Oracle(20, itc_right=False)
    report = evaluate_vlm(oracle, n=20, gallery=20)
    first = oracle.scenes[0].caption
    assert report.retrieval_r1_itc == sum(s.caption == first for s in oracle.scenes) / 20


@pytest.mark.parametrize(("n", "gallery", "message"), [(0, 1, "n is 0"), (5, 6, "gallery is 6, expected 1 to n")])
def test_bad_sizes_are_one_line(n, gallery, message):
    with pytest.raises(InputError, match=message):
        evaluate_vlm(Oracle(1), n=n, gallery=gallery)


def test_the_eval_command_scores_an_efficientvlm(tmp_path):
    """An untrained demo-task model (the demo scenes' vocabulary, answers and text length) through the CLI."""
    cfg = PRESETS["efficientvlm-demo-tiny"]()
    torch.manual_seed(0)
    weights = tmp_path / "tiny.safetensors"
    save_weights(EfficientVLM(cfg), weights, vlm_metadata(cfg, None))
    result = CliRunner().invoke(app, ["eval", "--model", str(weights), "--n", "2"])
    assert result.exit_code == 0, result.output
    for row in ("caption exact match", "VQA accuracy", "image->text R@1 (2 scenes)", "ITC alone"):
        assert row in result.output
