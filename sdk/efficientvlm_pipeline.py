"""The public API of an EfficientVLM model (what `minivlm.load` and `minivlm.load_artifact` return for one): the
tasks of `python_ref/efficientvlm/pipeline.py` on any image a user has (a path, a PIL image or an array,
`minivlm.images.load_image`), plus the ITC features for retrieval. There is no detector: `detect` is a one-line
ConfigError, as are beam-search captions (EfficientVLM decodes greedily)."""

from __future__ import annotations

import torch

from minivlm.errors import InputError
from minivlm.images import ImageLike, load_image
from minivlm.python_ref.efficientvlm.pipeline import Pipeline, similarity
from minivlm.python_ref.pipeline import check_text
from minivlm.public_model import PublicModel


class EfficientVLMReference(PublicModel):
    """An EfficientVLM pipeline (`pipeline`: python_ref/efficientvlm/pipeline.py `Pipeline`) behind the public
    API: images may be paths, PIL images or uint8 arrays."""

    pipeline: Pipeline

    def detect(self, image: ImageLike) -> list:
        """ConfigError: an EfficientVLM model has no detector (the image is not read)."""
        return self.pipeline.detect(image)

    def caption(self, image: ImageLike, num_beams: int = 1) -> str:
        """The greedy caption of the image. InputError for `num_beams` other than 1: EfficientVLM's captioning
        here is greedy only (python_ref/efficientvlm/generate.py)."""
        if num_beams != 1 or not isinstance(num_beams, int):
            raise InputError(f"num_beams is {num_beams!r}; {self.config.name} captions greedily only (num_beams=1)")
        return self.pipeline.caption(load_image(image))

    def answer(self, image: ImageLike, question: str) -> str:
        """The answer to a question about the image (the question is checked before the image is read)."""
        question = check_text(question, "question")
        return self.pipeline.answer(load_image(image), question)

    def match(self, image: ImageLike, text: str) -> float:
        """Probability in [0, 1] that `text` describes the image (ITM)."""
        text = check_text(text, "text")
        return self.pipeline.match(load_image(image), text)

    def image_feature(self, image: ImageLike) -> torch.Tensor:
        """The image's unit ITC feature (embed_dim,), for retrieval."""
        return self.pipeline.image_feature(load_image(image))

    def text_feature(self, text: str) -> torch.Tensor:
        """The text's unit ITC feature (embed_dim,), for retrieval."""
        return self.pipeline.text_feature(text)

    def rank_texts(self, image: ImageLike, texts: list[str]) -> list[tuple[str, float]]:
        """`texts` by descending ITC similarity to the image, each with its cosine (X-VLM's retrieval ranking)."""
        if not texts:
            raise InputError("texts is empty; rank_texts needs at least one text")
        features = torch.stack([self.text_feature(t) for t in texts])
        scores = similarity(self.image_feature(image)[None], features)[0].tolist()
        return sorted(zip(texts, scores), key=lambda ts: -ts[1])  # stable: equal scores keep the given order


__all__ = ["EfficientVLMReference"]
