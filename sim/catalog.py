"""What ships with scenebench, found without importing the model (for a light ``--help``)."""

from __future__ import annotations

from importlib import resources

__all__ = ["builtin_names", "preset_names"]


def builtin_names() -> list[str]:
    """Names of the scenarios shipped in ``sim/scenarios``."""
    files = resources.files("sim").joinpath("scenarios").iterdir()
    return sorted(p.name[:-5] for p in files if p.name.endswith(".toml"))


def preset_names() -> list[str]:
    """Names of the provider presets shipped in ``sim/presets`` (issue 12)."""
    files = resources.files("sim").joinpath("presets").iterdir()
    return sorted(p.name[:-5] for p in files if p.name.endswith(".toml"))
