"""MiniVLM SDK: an exact PyTorch reference of MiniVLM, its phone builds, and the checks that they agree."""

from minivlm.errors import ArtifactError, ConfigError, ConversionError, InputError, MiniVLMError, ParityError, WeightsError

__version__ = "0.1.0"

__all__ = [
    "ArtifactError",
    "ConfigError",
    "ConversionError",
    "InputError",
    "MiniVLMError",
    "ParityError",
    "WeightsError",
    "__version__",
]
