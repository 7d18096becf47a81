"""What the public API's model objects share, whatever the family: the python_ref pipeline they wrap, where its
weights came from, its config and its vocabularies."""

from __future__ import annotations


class PublicModel:
    """A python_ref pipeline behind the public API: images may be paths, PIL images or uint8 arrays."""

    def __init__(self, pipeline, source: str, *, seed: int | None = None) -> None:
        self.pipeline = pipeline
        self.source = source  # what was loaded: a weights path, or "random init (seed N)"
        self.seed = seed  # the seed of a random init (`minivlm.loading.load`), else None

    @property
    def config(self):
        return self.pipeline.cfg

    @property
    def vocab(self):
        return self.pipeline.vocab


__all__ = ["PublicModel"]
