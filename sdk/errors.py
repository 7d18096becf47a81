"""The SDK's exceptions (defined in python_ref so every layer can raise them)."""

from minivlm.python_ref.errors import (
    ArtifactError,
    ConfigError,
    ConversionError,
    InputError,
    MiniVLMError,
    ParityError,
    WeightsError,
)

__all__ = ["ArtifactError", "ConfigError", "ConversionError", "InputError", "MiniVLMError", "ParityError", "WeightsError"]
