"""A results folder on disk: its metadata, its saved runs, and atomic writes.

The sweep writes folders, the report and the findings read them; both import this module
(and not each other).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from sim.schema import SCHEMA_VERSION, schema_upgrade_reason

from .stamps import dumps

__all__ = [
    "RESULTS_KIND",
    "ResultsError",
    "load_runs",
    "read_metadata",
    "write_atomic",
    "write_json_atomic",
]

RESULTS_KIND = "scenebench-sweep"


class ResultsError(Exception):
    """A results folder that cannot be used (foreign, corrupted, or of another grid)."""


def write_atomic(path: Path, write: Callable[[Path], object]) -> None:
    """Write through a temporary file in the same folder, then rename over ``path``."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_json_atomic(path: Path, data: Any) -> None:
    """Strict JSON (``null`` for NaN/Infinity), written through a temporary file."""
    text = dumps(data, indent=2)
    write_atomic(path, lambda p: p.write_text(text))


def read_metadata(d: Path) -> dict[str, Any]:
    """The folder's metadata, or :class:`ResultsError` saying why it cannot be used."""
    p = d / "metadata.json"
    if not d.is_dir():
        raise ResultsError(f"results folder {str(d)!r} does not exist")
    if not p.is_file():
        raise ResultsError(f"{str(d)!r} is not a scenebench results folder (no metadata.json)")
    try:
        meta = json.loads(p.read_text())
    except (OSError, ValueError) as e:
        raise ResultsError(f"{str(p)!r} is corrupted ({e}); start a new sweep") from None
    if not isinstance(meta, dict) or meta.get("kind") != RESULTS_KIND:
        raise ResultsError(
            f"{str(d)!r} is not a scenebench sweep folder (kind "
            f"{meta.get('kind') if isinstance(meta, dict) else None!r})"
        )
    if meta.get("schema_version") != SCHEMA_VERSION:
        old = meta.get("schema_version")
        why = schema_upgrade_reason(old)
        raise ResultsError(
            f"{str(d)!r} has schema version {old!r}; this scenebench reads {SCHEMA_VERSION}{why}"
        )
    return meta


def load_runs(d: Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    meta = read_metadata(d)
    p = d / "runs.parquet"
    if not p.is_file():
        raise ResultsError(
            f"{str(d)!r} has no runs.parquet (an unfinished sweep? scenebench sweep --resume {d})"
        )
    return pd.read_parquet(p), meta
