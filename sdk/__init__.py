"""MiniVLM SDK: an exact PyTorch reference of MiniVLM, its phone builds, and the checks that they agree."""

from minivlm.errors import ArtifactError, ConfigError, ConversionError, InputError, MiniVLMError, ParityError, WeightsError

__version__ = "0.1.0"


def load(model: str = "minivlm-demo", *, random_init: bool = False):
    """The eager reference pipeline (see `minivlm.loading.load`)."""
    from minivlm.loading import load as _load

    return _load(model, random_init=random_init)

__all__ = [
    "ArtifactError",
    "ConfigError",
    "ConversionError",
    "InputError",
    "MiniVLMError",
    "ParityError",
    "WeightsError",
    "__version__",
    "load",
]
