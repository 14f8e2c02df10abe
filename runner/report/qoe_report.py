"""What learners feel, in a results folder: the QoE rule, figure lines and report section.

The per-cell numbers come from :mod:`runner.store.qoe_cells`. :func:`recommend_qoe` applies
:class:`sim.qoe.QoERule` per scenario, adaptive policy and quota profile (pipelined, model);
:func:`qoe_lines` are the lines of the QoE figure (:func:`runner.report.figures.qoe_figure`);
:func:`qoe_section` is the REPORT.md section.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from sim.qoe import Candidate, QoERule, choose_concurrency

from .labels import fmt, quota_key, quota_label

__all__ = [
    "QOE_RULE",
    "qoe_lines",
    "qoe_section",
    "recommend_qoe",
]

QOE_RULE = QoERule()


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
