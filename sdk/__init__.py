"""MiniVLM SDK: an exact PyTorch reference of MiniVLM, its phone builds, and the checks that they agree."""

from minivlm.errors import ArtifactError, ConfigError, ConversionError, InputError, MiniVLMError, NoDetectionsWarning, ParityError, WeightsError

__version__ = "0.1.0"


def load(model: str = "minivlm-demo", *, random_init: bool = False, seed: int | None = None):
    """The eager reference pipeline (see `minivlm.loading.load`)."""
    from minivlm.loading import load as _load

    return _load(model, random_init=random_init, seed=seed)


def load_artifact(path):
    """A build folder from `minivlm-convert`, run by its real runtime (see `minivlm.runtime.load_artifact`)."""
    from minivlm.runtime import load_artifact as _load_artifact

    return _load_artifact(path)


def convert(model: str = "minivlm-demo", target: str = "executorch", **options):
    """Build a model for a phone target (see `minivlm.conversion.convert`)."""
    from minivlm.conversion import convert as _convert

    return _convert(model, target, **options)


__all__ = [
    "ArtifactError",
    "ConfigError",
    "ConversionError",
    "InputError",
    "MiniVLMError",
    "NoDetectionsWarning",
    "ParityError",
    "WeightsError",
    "__version__",
    "convert",
    "load",
    "load_artifact",
]
