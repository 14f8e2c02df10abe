"""The cell table of a runs sweep: what learners feel per run, summarised per deployment cell.

A *runs cell* is one (backend, scenario, key, load, ``OPENMAIC_GENERATION_RUN_MAX_CONCURRENT``
*m*, ``PARALLEL_SCENE_CONCURRENCY`` *c*, policy) combination. Its rows (one per requested run,
:data:`RUN_COLUMNS`) come from ``replicates`` simulated deployments, each a seeded stream of
arrivals over the same horizon; every cell of one (scenario, key, load) uses the same seeds,
so cells are **paired** deployment for deployment.

Per cell (:func:`runs_cell_table`): P(bad run) (refused, paused or with a failed scene, per
requested run), the share of starts refused (429 ``ACTIVE_RUN_LIMIT``),
P(run paused) and P(any failed scene) among the runs that started (Wilson intervals), the
time from request to first scene (p50/p95/p99, over the runs that showed one; outline, agent
profiles and the wait for a run slot included), the wait for a run slot, the mean stall per
run and the sustained completed runs per hour (completed runs over the deployments' spans).
Against the profile's baseline pair (upstream's defaults, *c* = 1 and *m* = 4, policy
``off``): the paired differences of p95
time to first scene, of mean stall and of P(run paused), with 95% percentile intervals from a
bootstrap over the deployments (the same resampled deployments in both cells; seeded).
Quantiles are the inverse of the empirical CDF (``inverted_cdf``), in the point estimate and
in the bootstrap alike.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from .cells import wilson

__all__ = [
    "BASELINE",
    "RUNS_CELL_KEYS",
    "RUNS_SWEEP",
    "RUN_COLUMNS",
    "is_runs_spec",
    "paired_deltas",
    "runs_cell_table",
    "weighted_quantile",
]

RUNS_CELL_KEYS = [
    "backend",
    "scenario",
    "quota",
    "preset",
    "load_per_h",
    "max_concurrent",
    "concurrency",
    "adaptive",
    "gate_order",  # with the gate: its waiting order (sim.run_gate.GateOrder); else tiers
]
# one row per requested run (refused starts included)
RUN_COLUMNS = [
    *RUNS_CELL_KEYS,
    "replicate",  # the deployment (seed) the run belongs to: the unit of pairing
    "run",
    "refused",  # the start was refused (429 ACTIVE_RUN_LIMIT)
    "paused",  # the run ended paused
    "scenes_failed",
    "wait_s",  # request to claimed by a worker (NaN if refused)
    "ttfs_s",  # request to the first scene written (NaN if none)
    "stall_s",  # the learner's stalls while playing (NaN if never started)
    "completed",
    "span_h",  # the deployment's span: first arrival to last end
]
BASELINE = (1, 4)  # (c, m): upstream's defaults
RUNS_SWEEP = "runs"  # ``metadata.json`` spec ``sweep`` of a runs sweep
_N_BOOT = 1000
_PROFILE = ["backend", "scenario", "quota", "preset", "load_per_h"]


def is_runs_spec(spec: dict[str, Any]) -> bool:
    """Is this folder spec (``metadata.json`` ``spec``) a runs sweep's?"""
    return spec.get("sweep") == RUNS_SWEEP


def weighted_quantile(
    values: np.ndarray[Any, Any], weights: np.ndarray[Any, Any], q: float
) -> np.ndarray[Any, Any]:
    """The ``inverted_cdf`` quantile of ``values`` under each row of ``weights``
    (shape (B, n)): the least value whose cumulative weight reaches ``q`` of the total."""
    order = np.argsort(values, kind="stable")
    v = values[order]
    cw = np.cumsum(weights[:, order], axis=1)
    total = cw[:, -1:]
    idx = (cw < q * total - 1e-9).sum(axis=1)
    out: np.ndarray[Any, Any] = v[np.minimum(idx, len(v) - 1)].astype(float)
    out[total[:, 0] <= 0] = math.nan
    return out


def _q(x: pd.Series, q: float) -> float:
    x = x.dropna()
    return (
        float(np.quantile(x.to_numpy(dtype=float), q, method="inverted_cdf"))
        if len(x)
        else math.nan
    )


def _summary(g: pd.DataFrame) -> dict[str, Any]:
    n = len(g)
    reps = int(g["replicate"].nunique())
    started = g[~g["refused"].astype(bool)]
    s = len(started)
    k_ref = int(g["refused"].astype(bool).sum())
    k_pau = int(started["paused"].astype(bool).sum())
    k_fail = int((started["scenes_failed"] > 0).sum())
    k_bad = k_ref + int((started["paused"].astype(bool) | (started["scenes_failed"] > 0)).sum())
    span = float(g.groupby("replicate")["span_h"].first().sum()) if n else math.nan
    out: dict[str, Any] = {
        "runs": n,
        "started": s,
        "replicates": reps,
        "p_refused": k_ref / n if n else math.nan,
        "p_paused": k_pau / s if s else math.nan,
        "p_any_failed": k_fail / s if s else math.nan,
        "p_bad": k_bad / n if n else math.nan,
        "ttfs_p50_s": _q(started["ttfs_s"], 0.5),
        "ttfs_p95_s": _q(started["ttfs_s"], 0.95),
        "ttfs_p99_s": _q(started["ttfs_s"], 0.99),
        "wait_mean_s": float(started["wait_s"].mean()) if s else math.nan,
        "wait_p95_s": _q(started["wait_s"], 0.95),
        "stall_mean_s": float(started["stall_s"].mean()) if s else math.nan,
        "runs_per_h": float(started["completed"].astype(bool).sum()) / span
        if span > 0
        else math.nan,
    }
    for name, k, m in (("p_refused", k_ref, n), ("p_paused", k_pau, s)):
        out[f"{name}_lo"], out[f"{name}_hi"] = wilson(k, m)
    return out


def _per_replicate(g: pd.DataFrame, reps: np.ndarray[Any, Any]) -> dict[str, Any]:
    """The started runs of a cell as arrays with each run's replicate position in ``reps``."""
    st = g[~g["refused"].astype(bool)]
    pos = np.searchsorted(reps, st["replicate"].to_numpy())
    return {
        "pos": pos,
        "ttfs": st["ttfs_s"].to_numpy(dtype=float),
        "stall": st["stall_s"].to_numpy(dtype=float),
        "paused": st["paused"].to_numpy(dtype=float),
    }


def _boot_stats(a: dict[str, Any], w: np.ndarray[Any, Any]) -> dict[str, np.ndarray[Any, Any]]:
    """p95 time to first scene, mean stall and P(paused) under each resample's weights
    (``w``: (B, replicates) counts)."""
    wr = w[:, a["pos"]]
    ok = ~np.isnan(a["ttfs"])
    stall_ok = ~np.isnan(a["stall"])
    with np.errstate(invalid="ignore", divide="ignore"):
        return {
            "ttfs_p95": weighted_quantile(a["ttfs"][ok], wr[:, ok], 0.95)
            if ok.any()
            else np.full(len(w), math.nan),
            "stall": (wr[:, stall_ok] * a["stall"][stall_ok]).sum(axis=1)
            / wr[:, stall_ok].sum(axis=1),
            "paused": (wr * a["paused"]).sum(axis=1) / wr.sum(axis=1),
        }


def paired_deltas(
    cell: pd.DataFrame, base: pd.DataFrame, *, seed: int = 0, n_boot: int = _N_BOOT
) -> dict[str, float]:
    """Cell − baseline for p95 time to first scene, mean stall and P(paused): the point
    estimate (all deployments) and a 95% percentile interval (deployments resampled with
    replacement, the same ones in both cells)."""
    reps = np.union1d(cell["replicate"].unique(), base["replicate"].unique())
    a, b = _per_replicate(cell, reps), _per_replicate(base, reps)
    ones = np.ones((1, len(reps)))
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(reps), size=(n_boot, len(reps)))
    w = np.zeros((n_boot, len(reps)))
    np.add.at(w, (np.repeat(np.arange(n_boot), len(reps)), draws.ravel()), 1.0)
    pa, pb = _boot_stats(a, ones), _boot_stats(b, ones)
    ba, bb = _boot_stats(a, w), _boot_stats(b, w)
    out: dict[str, float] = {}
    for k, name in (
        ("ttfs_p95", "ttfs_p95_delta_s"),
        ("stall", "stall_delta_s"),
        ("paused", "p_paused_delta"),
    ):
        d = ba[k] - bb[k]
        d = d[~np.isnan(d)]
        out[name] = float(pa[k][0] - pb[k][0])
        lo, hi = np.percentile(d, [2.5, 97.5]) if len(d) >= 2 else (math.nan, math.nan)
        stem = name.removesuffix("_s")
        suffix = "_s" if name.endswith("_s") else ""
        out[f"{stem}_lo{suffix}"], out[f"{stem}_hi{suffix}"] = float(lo), float(hi)
    return out


def runs_cell_table(runs: pd.DataFrame, baseline: tuple[int, int] = BASELINE) -> pd.DataFrame:
    """One row per runs cell: the learner's figures and the paired differences against the
    baseline pair of its profile (policy ``off``)."""
    runs = runs.copy()
    runs["preset"] = runs["preset"].fillna("") if "preset" in runs.columns else ""
    # folders from before the gate's orders were an axis: every cell's order is the default
    order = runs["gate_order"].astype(object) if "gate_order" in runs else None
    runs["gate_order"] = "tiers" if order is None else order.where(order.notna(), "tiers")
    c0, m0 = baseline
    is_base = (
        (runs["concurrency"] == c0) & (runs["max_concurrent"] == m0) & (runs["adaptive"] == "off")
    )
    bases = {k: g for k, g in runs[is_base].groupby(_PROFILE, sort=True)}
    rows = []
    for key, g in runs.groupby(RUNS_CELL_KEYS, sort=True):
        row: dict[str, Any] = dict(zip(RUNS_CELL_KEYS, key, strict=True))
        row.update(_summary(g))
        b = bases.get(tuple(row[k] for k in _PROFILE))
        if b is not None:
            row.update(paired_deltas(g, b))
        rows.append(row)
    return pd.DataFrame(rows)
