"""What every output names: the scenario, the upstream profile it models, and this scenebench.

Also strict JSON: every JSON file and every ``--json`` output goes through :func:`dumps`,
which writes ``null`` for an undefined number (NaN, ±Infinity) and refuses anything else
that is not JSON, so ``JSON.parse`` and ``json.loads(..., parse_constant=...)`` accept it.
"""

from __future__ import annotations

import functools
import json
import math
import subprocess
from collections.abc import Iterable
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

from sim.upstream import DEFAULT_PROFILE

__all__ = [
    "DEFAULT_UPSTREAM",
    "dumps",
    "git_commit",
    "provenance",
    "provenance_line",
    "scenebench_version",
    "strict",
    "upstream_of",
]

# The upstream OpenMAIC behaviour scenebench models when a scenario does not say.
DEFAULT_UPSTREAM = DEFAULT_PROFILE  # what a result that names no profile modelled


def upstream_of(scenario: Any) -> str:
    """The upstream profile a scenario (or a result) models, e.g. ``"pr788"``.

    The one place that knows where the profile name lives: ``scenario.client.upstream``
    on a :class:`sim.scenario.Scenario`, ``upstream`` on a result or a scenario mapping.
    """
    if isinstance(scenario, dict):
        client = scenario.get("client")
        if isinstance(client, dict) and isinstance(client.get("upstream"), str):
            return str(client["upstream"])
        up = scenario.get("upstream")
        return up if isinstance(up, str) else DEFAULT_UPSTREAM
    up = getattr(getattr(scenario, "client", None), "upstream", None)
    if isinstance(up, str):
        return up
    up = getattr(scenario, "upstream", None)
    return up if isinstance(up, str) else DEFAULT_UPSTREAM


@functools.cache
def scenebench_version() -> str:
    try:
        return importlib_metadata.version("scenebench")
    except importlib_metadata.PackageNotFoundError:  # pragma: no cover - run from a checkout
        return "unknown"


@functools.cache
def git_commit() -> str:
    """The commit of the scenebench checkout (with ``-dirty`` for local changes), or
    ``unknown`` outside a git checkout."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=here
        )
        commit = out.stdout.strip()
        if out.returncode != 0 or not commit:
            return "unknown"
        st = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=here,
        )
        return commit + ("-dirty" if st.returncode == 0 and st.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def provenance(scenarios: Any | Iterable[Any]) -> dict[str, Any]:
    """``{"scenario", "upstream", "scenebench_version", "scenebench_commit"}`` for one
    scenario (a name is kept in ``scenario``) or, for several, lists/joined names."""
    many = isinstance(scenarios, list | tuple)
    items: list[Any] = list(scenarios) if many else [scenarios]
    names = [s.get("name", "custom") if isinstance(s, dict) else s.name for s in items]
    ups = sorted({upstream_of(s) for s in items}) or [DEFAULT_UPSTREAM]
    return {
        "scenario": names if many else names[0],
        "upstream": ups[0] if len(ups) == 1 else ups,
        "scenebench_version": scenebench_version(),
        "scenebench_commit": git_commit(),
    }


def provenance_line(p: dict[str, Any]) -> str:
    """One human line: ``scenario default · models upstream pr660 · scenebench 0.1.0 (abc123)``."""
    sc = p["scenario"]
    up = p["upstream"]
    commit, sep, flag = str(p["scenebench_commit"]).partition("-")
    return (
        f"scenario {', '.join(sc) if isinstance(sc, list) else sc} · models upstream "
        f"{', '.join(up) if isinstance(up, list) else up} · scenebench "
        f"{p['scenebench_version']} ({commit[:12]}{sep}{flag})"
    )


def strict(x: Any) -> Any:
    """``x`` with NaN/±Infinity replaced by ``None`` and numpy scalars and arrays, tuples and
    sets turned into JSON types (recursively)."""
    if isinstance(x, dict):
        return {str(k): strict(v) for k, v in x.items()}
    if isinstance(x, list | tuple | set | frozenset):
        return [strict(v) for v in x]
    if isinstance(x, bool) or x is None or isinstance(x, str):
        return x
    if isinstance(x, int):
        return int(x)
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if hasattr(x, "tolist"):  # numpy scalars and arrays
        return strict(x.tolist())
    if isinstance(x, Path):
        return str(x)
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


def dumps(x: Any, **kw: Any) -> str:
    """Strict JSON text of ``x`` (see :func:`strict`)."""
    return json.dumps(strict(x), allow_nan=False, **kw)
