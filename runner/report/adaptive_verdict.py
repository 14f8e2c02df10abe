"""Does an adaptive limiter beat the serial default? (pipelined, one tenant, model)

For each adaptive policy in the cells, at each *c*: it *dominates off* when on every quota
profile P(any failed scene) is at most serial's + the failure budget and it is no slower
than serial (2% slack); *kept* is its speedup over fixed *c*'s where fixed *c* is
admissible. Per policy, the adaptive default is the smallest *c* ≥ 2 that dominates off in
every scenario with a geometric-mean speedup within ``within_best`` of the best such *c*.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from ..store.counts import fails_too_often
from .recommendation import RULE

__all__ = ["adaptive_verdict"]

_SLOWER_SLACK = 0.98  # no slower than serial, within 2%


def _per_quota(q: Any, gc: pd.DataFrame, fixed: pd.DataFrame, ser: pd.DataFrame) -> dict[str, Any]:
    """The policy at one *c* and quota profile, beside serial and fixed *c*."""
    pf = float(gc.loc[q, "p_any_failed"])
    sf = float(ser.loc[q, "p_any_failed"]) if q in ser.index else math.nan
    sp = float(gc.loc[q, "speedup"])
    fixed_ok = q in fixed.index and not fails_too_often(float(fixed.loc[q, "p_any_failed"]), sf)
    fsp = float(fixed.loc[q, "speedup"]) if q in fixed.index else math.nan
    kept = sp / fsp if fixed_ok and fsp > 0 and not math.isnan(sp) else math.nan
    return {
        "p_any_failed": pf,
        "p_any_failed_serial": sf,
        "speedup": sp,
        "fixed_speedup": fsp,
        "fixed_admissible": bool(fixed_ok),
        "kept": kept,
    }


def _row(c: Any, gc: pd.DataFrame, fixed: pd.DataFrame, ser: pd.DataFrame) -> dict[str, Any]:
    """The policy at one *c* over every quota profile."""
    per_q = {int(q): _per_quota(q, gc, fixed, ser) for q in gc.index}
    dominates = all(
        not fails_too_often(v["p_any_failed"], v["p_any_failed_serial"])
        and not math.isnan(v["speedup"])
        and v["speedup"] >= _SLOWER_SLACK
        for v in per_q.values()
    )
    kept_all = [v["kept"] for v in per_q.values() if not math.isnan(v["kept"])]
    sps = [v["speedup"] for v in per_q.values()]
    geo = float(np.exp(np.mean(np.log(sps)))) if sps and all(x > 0 for x in sps) else math.nan
    return {
        "concurrency": int(c),
        "dominates_off": bool(dominates),
        "speedup_geomean": geo,
        "min_kept": min(kept_all) if kept_all else math.nan,
        "per_quota": per_q,
    }


def _rows(pol: str, g: pd.DataFrame, ser: pd.DataFrame) -> list[dict[str, Any]]:
    """One scenario's rows for a policy, by *c*."""
    rows = []
    for c, gc in g[g["adaptive"] == pol].groupby("concurrency"):
        fixed = g[(g["adaptive"] == "off") & (g["concurrency"] == c)].set_index("quota")
        rows.append(_row(c, gc.set_index("quota"), fixed, ser))
    return rows


def _good_everywhere(c: int, per_sc: dict[str, list[dict[str, Any]]]) -> bool:
    """*c* dominates off in every scenario, within ``within_best`` of the best such *c*."""
    for rows in per_sc.values():
        dom = [r for r in rows if r["dominates_off"] and r["concurrency"] >= 2]
        best = max((r["speedup_geomean"] for r in dom), default=math.nan)
        r = {r["concurrency"]: r for r in rows}.get(c)
        if (
            r is None
            or not r["dominates_off"]
            or not (r["speedup_geomean"] >= (1 - RULE.within_best) * best)
        ):
            return False
    return True


def _default(per_sc: dict[str, list[dict[str, Any]]]) -> int | None:
    """The smallest *c* ≥ 2 good in every scenario (None when there is none)."""
    cs = sorted({r["concurrency"] for rows in per_sc.values() for r in rows})
    return next((c for c in cs if c >= 2 and _good_everywhere(c, per_sc)), None)


def adaptive_verdict(cells: pd.DataFrame) -> dict[str, Any]:
    """For each adaptive policy in the cells (pipelined, one tenant, model): at each *c*, does
    it dominate "off" (the serial default) on every quota — P(any failed scene) at most
    serial's + the failure budget, and no slower than serial (2% slack) — and how much of
    fixed *c*'s speedup does it keep where fixed *c* is admissible?"""
    sim = cells[(cells["backend"] == "sim") & (cells["tenants"] == 1)]
    pip = sim[sim["mode"] == "pipelined"]
    serial = sim[sim["mode"] == "serial"]
    out: dict[str, Any] = {"policies": {}}
    for pol in sorted(set(pip["adaptive"]) - {"off"}):
        for name, g in pip.groupby("scenario"):
            ser = serial[serial["scenario"] == name].set_index("quota")
            out["policies"].setdefault(pol, {})[str(name)] = _rows(pol, g, ser)
    for pol, per_sc in out["policies"].items():
        out.setdefault("defaults", {})[pol] = _default(per_sc)
    return out
