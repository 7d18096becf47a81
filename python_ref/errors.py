"""The SDK's exception hierarchy. It lives in python_ref so that every layer (sdk -> converters -> python_ref)
can raise it without importing upward; `minivlm.errors` re-exports it."""


class MiniVLMError(Exception):
    """Base class of every error the SDK raises on purpose."""


class ConfigError(MiniVLMError, ValueError):
    """An unknown preset, or a configuration whose parts contradict each other."""


class InputError(MiniVLMError, ValueError):
    """Bad input at a public boundary: wrong rank, dtype, size, text length or token id."""


class WeightsError(MiniVLMError, ValueError):
    """A checkpoint that does not match the model: unused or missing keys, or a shape mismatch."""


class ConversionError(MiniVLMError, RuntimeError):
    """A build for a target could not be produced."""


class ArtifactError(MiniVLMError, RuntimeError):
    """A build folder that is missing, tampered with, truncated or needs another platform."""


class ParityError(MiniVLMError, AssertionError):
    """A build that does not compute what the reference computes, within the named tolerance."""
