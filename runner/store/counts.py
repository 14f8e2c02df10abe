"""The one definition of *a run that counts* and of *a speedup that can be shown plainly*.

Used by the cell table, the recommendation, the report, the figures, the regression
gate and the explore notebook, so they cannot disagree:

* a **run counts** when it completed with every scene generated (status
  ``completed`` and no failed scene). A run can complete with failed scenes: in the
  parallel modes a failed content call marks only its outline failed;
* the **paired speedup** of a cell = mean serial makespan / mean cell makespan over
  the pairs (same run id) in which *both* runs count, with a 95% percentile
  bootstrap interval over those pairs (2,000 resamples, seeded);
* a cell **fails too often** when its P(any failed scene) is above serial's plus
  :data:`FAILURE_BUDGET_PP` percentage points. Its speedup is then conditional on
  the minority of runs that completed and is never shown as a plain number: tables
  mark it, figures draw it hollow with P(failed) beside it, the recommendation never
  picks it, and the gate does not gate it (its P(failed) is gated instead).
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "FAILURE_BUDGET_PP",
    "bootstrap_ratio",
    "counts_mask",
    "fails_too_often",
    "p_any_failed",
    "paired_speedup",
]

FAILURE_BUDGET_PP = 1.0


def counts_mask(runs: pd.DataFrame) -> pd.Series:
    """True for the runs that count: completed with every scene generated."""
    return (runs["status"] == "completed") & (runs["scenes_failed"] == 0)


def p_any_failed(runs: pd.DataFrame) -> float:
    """P(any failed scene): the share of runs with at least one failed scene."""
    return float((runs["scenes_failed"] > 0).mean()) if len(runs) else math.nan


def fails_too_often(
    p_failed: float, p_failed_serial: float, budget_pp: float = FAILURE_BUDGET_PP
) -> bool:
    """P(any failed scene) above serial's + ``budget_pp`` points (undefined counts as too
    often: a speedup without a serial baseline to compare failures with is not plain)."""
    if p_failed is None or p_failed_serial is None:
        return True
    p, s = float(p_failed), float(p_failed_serial)
    if math.isnan(p) or math.isnan(s):
        return True
    return p > s + budget_pp / 100 + 1e-12


@lru_cache(maxsize=4)
def _resamples(seed: int, n_boot: int, n: int) -> np.ndarray[Any, Any]:
    """The resampled pair indices of a seed and a size (read-only): the same draws every
    time, so cells of one size share them instead of drawing them again."""
    idx = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    idx.flags.writeable = False
    return idx


def bootstrap_ratio(
    num: np.ndarray[Any, Any], den: np.ndarray[Any, Any], *, seed: int = 0, n_boot: int = 2000
) -> tuple[float, float]:
    """95% percentile interval of mean(num)/mean(den) over resampled pairs."""
    n = len(num)
    if n < 2:
        return (math.nan, math.nan)
    idx = _resamples(seed, n_boot, n)
    ratios = num[idx].mean(axis=1) / den[idx].mean(axis=1)
    lo, hi = np.percentile(ratios, [2.5, 97.5])
    return float(lo), float(hi)


def paired_speedup(cell_runs: pd.DataFrame, serial_runs: pd.DataFrame) -> dict[str, Any]:
    """The paired speedup of ``cell_runs`` over ``serial_runs`` (both with ``classroom``,
    ``makespan_s``, ``status``, ``scenes_failed``): ``speedup``, ``speedup_lo``,
    ``speedup_hi`` (NaN when no pair counts) and ``pairs`` (pairs in which both count)."""
    a = pd.DataFrame(
        {
            "makespan_s": cell_runs["makespan_s"].to_numpy(),
            "_ok": counts_mask(cell_runs).to_numpy(),
        },
        index=cell_runs["classroom"].to_numpy(),
    )
    b = pd.DataFrame(
        {
            "makespan_s_serial": serial_runs["makespan_s"].to_numpy(),
            "_ok_serial": counts_mask(serial_runs).to_numpy(),
        },
        index=serial_runs["classroom"].to_numpy(),
    )
    paired = a.join(b, how="inner")
    ok = paired[paired["_ok"] & paired["_ok_serial"]]
    num = ok["makespan_s_serial"].to_numpy(dtype=float)
    den = ok["makespan_s"].to_numpy(dtype=float)
    out: dict[str, Any] = {"pairs": len(ok)}
    if len(ok):
        out["speedup"] = float(num.mean() / den.mean())
        out["speedup_lo"], out["speedup_hi"] = bootstrap_ratio(num, den)
    else:
        out["speedup"] = out["speedup_lo"] = out["speedup_hi"] = math.nan
    return out
