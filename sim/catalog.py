"""What ships with scenebench, found without importing the model (for a light ``--help``)."""

from __future__ import annotations

from importlib import resources

__all__ = ["builtin_names"]


def builtin_names() -> list[str]:
    """Names of the scenarios shipped in ``sim/scenarios``."""
    files = resources.files("sim").joinpath("scenarios").iterdir()
    return sorted(p.name[:-5] for p in files if p.name.endswith(".toml"))
