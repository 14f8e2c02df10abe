"""What learners feel, in a results folder: per-cell summaries, the QoE rule, figures, report.

The metrics come from :mod:`sim.qoe` (one function for every world); this module only
aggregates them. Per cell: mean startup delay, mean stall time, stalls per run, the stall
ratio (total stall / total playback over the runs) and the mean time to the last scene,
each with a 95% interval (bootstrap over runs, seeded; for the stall ratio, of the ratio
of sums). :func:`recommend_qoe` applies :class:`sim.qoe.QoERule` per scenario, adaptive
policy and quota profile (pipelined, model); :func:`qoe_lines` are the lines of the QoE
figure (:func:`runner.figures.qoe_figure`); :func:`qoe_section` is the REPORT.md section.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from sim.qoe import Candidate, QoERule, choose_concurrency
from sim.schema import RunResult

from .labels import fmt, quota_key, quota_label

__all__ = [
    "QOE_RULE",
    "qoe_cell_columns",
    "qoe_lines",
    "qoe_section",
    "qoe_summary",
    "recommend_qoe",
]

QOE_RULE = QoERule()
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


def _boot(
    x: np.ndarray[Any, Any], y: np.ndarray[Any, Any] | None, seed: int
) -> tuple[float, float]:
    """95% percentile interval of mean(x) (or sum(x)/sum(y)) over resampled runs."""
    n = len(x)
    if n < 2:
        return (math.nan, math.nan)
    idx = np.random.default_rng(seed).integers(0, n, size=(_N_BOOT, n))
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


def _cand(row: pd.Series) -> Candidate:
    return Candidate(
        concurrency=int(row["concurrency"]),
        p_any_failed=float(row["p_any_failed"]),
        startup_s=float(row["startup_mean_s"]),
        stall_s=float(row["stall_mean_s"]),
        last_scene_s=float(row["last_scene_mean_s"]),
    )


def _iv(row: pd.Series, mean: str, lo: str, hi: str) -> dict[str, float]:
    return {"mean": float(row[mean]), "lo": float(row[lo]), "hi": float(row[hi])}


def _evidence(row: pd.Series) -> dict[str, Any]:
    sp = float(row.get("speedup", math.nan))
    return {
        "concurrency": int(row["concurrency"]),
        "startup_s": _iv(row, "startup_mean_s", "startup_lo_s", "startup_hi_s"),
        "stall_s": _iv(row, "stall_mean_s", "stall_lo_s", "stall_hi_s"),
        "stall_ratio": _iv(row, "stall_ratio", "stall_ratio_lo", "stall_ratio_hi"),
        "last_scene_s": _iv(row, "last_scene_mean_s", "last_scene_lo_s", "last_scene_hi_s"),
        "p_any_failed": _iv(row, "p_any_failed", "p_any_failed_lo", "p_any_failed_hi"),
        "speedup": {
            "mean": sp,
            "lo": float(row.get("speedup_lo", math.nan)),
            "hi": float(row.get("speedup_hi", math.nan)),
        },
    }


def recommend_qoe(cells: pd.DataFrame, rule: QoERule = QOE_RULE) -> dict[str, Any]:
    """:class:`sim.qoe.QoERule` per scenario, adaptive policy and quota profile (pipelined
    on the model, one tenant): the chosen *c* with its evidence, and per policy the *c*
    admissible on every quota profile of the scenario with the least summed stall."""
    out: dict[str, Any] = {"rule": rule.to_dict(), "mode": "pipelined", "scenarios": {}}
    if "stall_mean_s" not in cells.columns:
        return out
    sim = cells[(cells["backend"] == "sim") & (cells["tenants"] == 1)]
    for name, g in sim.groupby("scenario"):
        serial = g[g["mode"] == "serial"].set_index("quota")
        per_pol: dict[str, Any] = {}
        for pol, gp in g[g["mode"] == "pipelined"].groupby("adaptive"):
            by_quota: dict[int, Any] = {}
            admissible_all: set[int] | None = None
            for q, gq in sorted(gp.groupby("quota"), key=lambda t: quota_key(t[0])):
                if q not in serial.index:
                    continue
                srow = serial.loc[q]
                ch = choose_concurrency(rule, _cand(srow), [_cand(r) for _, r in gq.iterrows()])
                at_c = gq.set_index("concurrency")
                pick = srow if ch.concurrency == 1 else at_c.loc[ch.concurrency]
                ev = _evidence(pd.Series({**pick.to_dict(), "concurrency": ch.concurrency}))
                by_quota[int(q)] = {
                    **ev,
                    "admissible": list(ch.admissible),
                    "rejected": {str(k): v for k, v in sorted(ch.why_not.items())},
                    "serial": _evidence(pd.Series({**srow.to_dict(), "concurrency": 1})),
                }
                adm = set(ch.admissible)
                admissible_all = adm if admissible_all is None else admissible_all & adm
            default = _default_c(gp, serial, admissible_all or {1}, rule)
            per_pol[str(pol)] = {"by_quota": by_quota, "default": default}
        out["scenarios"][str(name)] = per_pol
    return out


def _default_c(gp: pd.DataFrame, serial: pd.DataFrame, adm: set[int], rule: QoERule) -> int:
    """Among the *c* admissible on every quota profile: the least stall summed over the
    profiles, then the earliest summed last scene, then the smallest *c*."""

    def total(c: int, col: str) -> float:
        src = serial if c == 1 else gp[gp["concurrency"] == c].set_index("quota")
        return float(src[col].sum())

    return min(
        adm,
        key=lambda c: (
            round(total(c, "stall_mean_s") / rule.stall_resolution_s),
            total(c, "last_scene_mean_s"),
            c,
        ),
    )


def qoe_lines(g: pd.DataFrame, budget: float) -> list[tuple[str, int, pd.DataFrame]]:
    """(policy, quota, rows by c with serial at c = 1 and a ``fails`` flag) per line."""
    serial = g[g["mode"] == "serial"].set_index("quota")
    out = []
    pip = g[g["mode"] == "pipelined"]
    for (pol, q), gl in pip.groupby(["adaptive", "quota"]):
        gl = gl.sort_values("concurrency")
        if q in serial.index:
            gl = pd.concat([serial.loc[[q]].reset_index().assign(concurrency=1), gl])
            base = float(serial.loc[q, "p_any_failed"])
            gl = gl.assign(fails=gl["p_any_failed"].astype(float) > base + budget)
        else:
            gl = gl.assign(fails=False)
        out.append((str(pol), int(q), gl))
    return out


def _f(x: float, nd: int = 1) -> str:
    return fmt(x, nd)


def qoe_section(rec: dict[str, Any]) -> str:
    """The REPORT.md section: the rule with its tolerances, then per scenario and policy the
    *c* a deployer should set per quota profile, with its evidence."""
    lines = ["## What learners feel (startup delay, stalls)", ""]
    lines.append(f"**The QoE rule** (pipelined, model): {rec['rule']['text']}.")
    lines.append("")
    for name, per_pol in rec["scenarios"].items():
        for pol, d in per_pol.items():
            lines.append(
                f"### {name}, adaptive `{pol}`: default *c* = {d['default']} "
                "(admissible on every quota profile)"
            )
            lines.append("")
            lines.append(
                "| key quota | set c | startup (s) | stall (s) | stall ratio | last scene (s) "
                "| P(any failed) | speedup | serial: startup / stall / P(fail) |"
            )
            lines.append("|---|---|---|---|---|---|---|---|---|")
            for q, e in d["by_quota"].items():
                s = e["serial"]

                def iv(v: dict[str, float], k: float = 1.0, nd: int = 1) -> str:
                    return f"{_f(k * v['mean'], nd)} ({_f(k * v['lo'], nd)}–{_f(k * v['hi'], nd)})"

                lines.append(
                    f"| {quota_label(int(q))} | {e['concurrency']} | {iv(e['startup_s'])} | "
                    f"{iv(e['stall_s'])} | {iv(e['stall_ratio'], 100)}% | "
                    f"{iv(e['last_scene_s'])} | "
                    f"{iv(e['p_any_failed'], 100)}% | {iv(e['speedup'], 1, 2)}× | "
                    f"{_f(s['startup_s']['mean'])} / {_f(s['stall_s']['mean'])} / "
                    f"{_f(100 * s['p_any_failed']['mean'])}% |"
                )
            lines.append("")
    links = ", ".join(f"[{n}-qoe.png](figures/{n}-qoe.png)" for n in rec["scenarios"])
    lines.append(
        f"Figures ({links}; also under Figures): stall ratio and startup delay vs *c* per "
        "quota, and makespan vs stall. The learner model is in `sim/qoe.py`."
    )
    return "\n".join(lines) + "\n"
