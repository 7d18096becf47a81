"""The model families this SDK knows (`FAMILIES`), and lookups by preset, config and name: the one place that
names them, so that every layer dispatches through a `family.Family` instead of testing which family it has."""

from __future__ import annotations

from typing import Any

from .efficientvlm.family import EFFICIENTVLM
from .errors import ConfigError
from .family import Family
from .minivlm_family import MINIVLM

FAMILIES: dict[str, Family] = {f.name: f for f in (MINIVLM, EFFICIENTVLM)}
# Every preset of every family -> its family.
PRESET_FAMILIES: dict[str, Family] = {preset: f for f in FAMILIES.values() for preset in f.presets}


def known_presets() -> str:
    """Every preset name, family by family (MiniVLM's first), each family's sorted, comma-separated (for error
    messages)."""
    return ", ".join(preset for f in FAMILIES.values() for preset in sorted(f.presets))


def preset_family(preset: str) -> Family:
    """The family of a preset; ConfigError naming every known preset otherwise."""
    if preset not in PRESET_FAMILIES:
        raise ConfigError(f"unknown model preset {preset!r}; known presets: {known_presets()}")
    return PRESET_FAMILIES[preset]


def get_config(preset: str) -> Any:
    """The config of any family's preset (ConfigError as `preset_family`)."""
    return preset_family(preset).config(preset)


def family_of(cfg: Any) -> Family:
    """The family whose config class `cfg` is an instance of."""
    for f in FAMILIES.values():
        if isinstance(cfg, f.config_type):
            return f
    raise ConfigError(f"{type(cfg).__name__} is the config of no model family ({', '.join(FAMILIES)})")


def family_named(name: str) -> Family:
    """The family called `name` (as a manifest records it); ConfigError naming the families otherwise."""
    if name not in FAMILIES:
        raise ConfigError(f"unknown model family {name!r}; this SDK has {', '.join(FAMILIES)}")
    return FAMILIES[name]


__all__ = ["FAMILIES", "PRESET_FAMILIES", "family_named", "family_of", "get_config", "known_presets", "preset_family"]
