"""The cell table of a results folder: one row per cell with summaries and the paired speedup.

A *cell* is one (backend, scenario, quota, mode, concurrency, adaptive policy, tenants)
combination of a sweep. Its **speedup** = mean serial makespan / mean cell makespan over
the runs that completed with every scene in both (same seed and run id: paired), with a
95% percentile bootstrap interval over the pairs (:func:`runner.store.counts.paired_speedup`).
The learner's metrics per cell come from :func:`runner.store.qoe_cells.qoe_cell_columns`.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from .counts import fails_too_often, p_any_failed, paired_speedup
from .qoe_cells import qoe_cell_columns

__all__ = ["CELL_KEYS", "cell_table", "wilson"]

CELL_KEYS = ["backend", "scenario", "quota", "mode", "concurrency", "adaptive", "tenants"]


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a proportion ``k / n`` (NaN when ``n`` is 0)."""
    if n == 0:
        return (math.nan, math.nan)
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return (max(0.0, c - h), min(1.0, c + h))


def _summary(g: pd.DataFrame) -> dict[str, Any]:
    """Makespan, time to first scene, 429s, retries and failures of one cell's runs."""
    n = len(g)
    k_fail = int(g["any_failed"].sum())  # = p_any_failed(g) * n
    lo_f, hi_f = wilson(k_fail, n)
    ttfs = g["ttfs_s"].dropna()
    return {
        "runs": n,
        "makespan_mean_s": g["makespan_s"].mean(),
        "makespan_p50_s": g["makespan_s"].quantile(0.5),
        "makespan_p95_s": g["makespan_s"].quantile(0.95),
        "ttfs_mean_s": ttfs.mean() if len(ttfs) else math.nan,
        "ttfs_p95_s": ttfs.quantile(0.95) if len(ttfs) else math.nan,
        "http_429_mean": g["http_429"].mean(),
        "retries_mean": g["retries"].mean(),
        "p_any_failed": k_fail / n,
        "p_any_failed_lo": lo_f,
        "p_any_failed_hi": hi_f,
        "p_paused": float((g["status"] == "paused").mean()),
    }


def _versus_serial(g: pd.DataFrame, serial: pd.DataFrame, p_failed: float) -> dict[str, Any]:
    """The paired speedup over serial's runs, serial's P(any failed scene) and the shared
    rule: a speedup over the runs that completed is shown plainly only where runs do not
    fail more often than serial's + the budget."""
    p_serial = p_any_failed(serial)
    return {
        **paired_speedup(g, serial),
        "p_any_failed_serial": p_serial,
        "fails_too_often": fails_too_often(p_failed, p_serial),
    }


def cell_table(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per cell with summaries and the paired speedup over serial."""
    runs = runs.copy()
    if "adaptive" not in runs.columns:  # folders written before the adaptive dimension
        runs["adaptive"] = "off"
    if "tenants" not in runs.columns:
        runs["tenants"] = 1
    runs["any_failed"] = runs["scenes_failed"] > 0
    base = (
        runs[runs["mode"] == "serial"]
        .set_index(["backend", "scenario", "quota", "tenants", "classroom"])
        .sort_index()
    )
    rows = []
    for key, g in runs.groupby(CELL_KEYS, sort=True):
        b, s, q, _m, _c, _a, k = key
        row: dict[str, Any] = dict(zip(CELL_KEYS, key, strict=True))
        row.update(_summary(g))
        try:
            bg = base.loc[(b, s, q, k)]
        except KeyError:
            bg = None
        if bg is not None:
            row.update(_versus_serial(g, bg.reset_index(), row["p_any_failed"]))
        rows.append(row)
    table = pd.DataFrame(rows)
    qoe = qoe_cell_columns(
        runs, CELL_KEYS
    )  # the learner's metrics per cell (runner.store.qoe_cells)
    return table.merge(qoe, on=CELL_KEYS, how="left") if len(qoe) else table
