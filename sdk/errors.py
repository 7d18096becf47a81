"""The SDK's exceptions (defined in python_ref so every layer can raise them) and warnings."""

from minivlm.python_ref.errors import (
    ArtifactError,
    ConfigError,
    ConversionError,
    InputError,
    MiniVLMError,
    ParityError,
    WeightsError,
)


class NoDetectionsWarning(UserWarning):
    """caption, answer or match ran on an image in which the detector found nothing: the fusion model saw no
    region, so its result says nothing about the image."""


__all__ = ["ArtifactError", "ConfigError", "ConversionError", "InputError", "MiniVLMError", "NoDetectionsWarning",
           "ParityError", "WeightsError"]
