"""What learners feel, as data: per-run means and per-cell summaries of :mod:`sim.qoe`'s metrics.

The metrics come from :mod:`sim.qoe` (one function for every world); this module only
aggregates them. Per cell: mean startup delay, mean stall time, stalls per run, the stall
ratio (total stall / total playback over the runs) and the mean time to the last scene,
each with a 95% interval (bootstrap over runs, seeded; for the stall ratio, of the ratio
of sums).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd

from sim.schema import RunResult

__all__ = ["qoe_cell_columns", "qoe_summary"]

_N_BOOT = 1000


def qoe_summary(results: Sequence[RunResult]) -> dict[str, Any]:
    """Means and p95s of the learner's metrics over runs (``scenebench sim --json``)."""

    def stats(x: np.ndarray[Any, Any]) -> dict[str, float | None]:
        x = x[~np.isnan(x)]
        if not len(x):
            return {"mean": None, "p50": None, "p95": None}
        return {
            "mean": float(x.mean()),
            "p50": float(np.percentile(x, 50)),
            "p95": float(np.percentile(x, 95)),
        }

    col = {k: np.array([getattr(r, k) for r in results], dtype=float) for k in _COLS}
    total_play = float(np.nansum(col["playback_s"]))
    return {
        "startup_s": stats(col["startup_s"]),
        "stall_s": stats(col["stall_s"]),
        "stalls_mean": float(np.mean(col["stalls"])),
        "stall_ratio": float(np.nansum(col["stall_s"]) / total_play) if total_play else None,
        "last_scene_s": stats(col["last_scene_s"]),
    }


_COLS = ("startup_s", "stall_s", "stalls", "stall_ratio", "last_scene_s", "playback_s")


@lru_cache(maxsize=4)
def _resamples(seed: int, n: int) -> np.ndarray[Any, Any]:
    """The resampled run indices of a seed and a cell size (read-only): the same draws every
    time, so a cell's metrics drawn with one seed share them instead of drawing them again."""
    idx = np.random.default_rng(seed).integers(0, n, size=(_N_BOOT, n))
    idx.flags.writeable = False
    return idx


def _boot(
    x: np.ndarray[Any, Any], y: np.ndarray[Any, Any] | None, seed: int
) -> tuple[float, float]:
    """95% percentile interval of mean(x) (or sum(x)/sum(y)) over resampled runs."""
    n = len(x)
    if n < 2:
        return (math.nan, math.nan)
    idx = _resamples(seed, n)
    if y is None:
        v = x[idx].mean(axis=1)
    else:
        den = y[idx].sum(axis=1)
        v = np.where(den > 0, x[idx].sum(axis=1) / np.where(den > 0, den, 1), np.nan)
    lo, hi = np.nanpercentile(v, [2.5, 97.5])
    return float(lo), float(hi)


def _cell_qoe(g: pd.DataFrame) -> dict[str, float]:
    out: dict[str, float] = {}
    for k in ("startup_s", "stall_s", "last_scene_s"):
        x = g[k].dropna().to_numpy(dtype=float)
        out[f"{k[:-2]}_mean_s"] = float(x.mean()) if len(x) else math.nan
        out[f"{k[:-2]}_lo_s"], out[f"{k[:-2]}_hi_s"] = _boot(x, None, 1)
    stall = g["stall_s"].to_numpy(dtype=float)
    play = g["playback_s"].to_numpy(dtype=float)
    out["stalls_mean"] = float(g["stalls"].mean())
    out["stall_ratio"] = float(stall.sum() / play.sum()) if play.sum() > 0 else math.nan
    out["stall_ratio_lo"], out["stall_ratio_hi"] = _boot(stall, play, 2)
    return out


def qoe_cell_columns(runs: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """One row per cell (``keys``) with the learner's metrics and their intervals; empty
    when the runs have no such columns (folders of an older schema are refused anyway)."""
    if "stall_s" not in runs.columns:
        return pd.DataFrame(columns=keys)
    rows = []
    for key, g in runs.groupby(keys, sort=True):
        rows.append({**dict(zip(keys, key, strict=True)), **_cell_qoe(g)})
    return pd.DataFrame(rows)
