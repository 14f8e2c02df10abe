"""The report's view of upstream profiles: which profile each scenario follows, the overall
recommendation for the profile users run today, and how the answer changes between
profiles when a sweep ran several (``scenebench sweep --upstream pr660,pr788``).

A sweep over several profiles names its scenarios ``<scenario>@<profile>``; the base
name groups them here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import pandas as pd

from sim.scenario import Scenario
from sim.upstream import DEFAULT_PROFILE, PROFILES

__all__ = ["base_name", "overall_for_today", "render_profile_section"]

_QUOTAS_SHOWN = (2, 3, 5)


def base_name(scenario: str) -> str:
    """``default@pr660`` → ``default``."""
    return scenario.split("@", 1)[0]


def overall_for_today(
    recommended: Mapping[str, int], scenarios: Mapping[str, Scenario]
) -> dict[str, Any]:
    """From each scenario's recommended *c*: the smallest recommendation per profile, and
    the headline: the default profile's when the sweep ran it, else the newest it ran."""
    by: dict[str, int] = {}
    for name, c in recommended.items():
        sc = scenarios.get(name)
        prof = sc.upstream if sc is not None else DEFAULT_PROFILE
        by[prof] = min(by.get(prof, c), c)
    order = list(PROFILES)
    ran = sorted(by, key=lambda p: order.index(p) if p in order else -1)
    head = DEFAULT_PROFILE if DEFAULT_PROFILE in by else (ran[-1] if ran else DEFAULT_PROFILE)
    return {"upstream": head, "recommended": by.get(head, 1), "by_upstream": by}


def _pct(x: float) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}%"


def _p_fail(cells: pd.DataFrame, scenario: str, quota: int, mode: str, c: int) -> float:
    g = cells[
        (cells["backend"] == "sim")
        & (cells["scenario"] == scenario)
        & (cells["quota"] == quota)
        & (cells["mode"] == mode)
        & (cells["concurrency"] == c)
        & (cells["adaptive"] == "off")
        & (cells["tenants"] == 1)
    ]
    return float(g["p_any_failed"].iloc[0]) if len(g) else math.nan


def _row(cells: pd.DataFrame, name: str, prof: str, v: dict[str, Any]) -> str:
    byq = v.get("by_quota", {})
    picks = ", ".join(f"{q}: c={byq[q]['concurrency']}" for q in _QUOTAS_SHOWN if q in byq)
    fails = " / ".join(
        f"{_pct(_p_fail(cells, name, q, 'serial', 1))} → "
        f"{_pct(_p_fail(cells, name, q, 'pipelined', 3))}"
        for q in _QUOTAS_SHOWN
    )
    unl = byq.get(0)
    best = (
        f"c = {unl['concurrency']}: {unl['speedup']:.2f}×"
        if unl is not None and not math.isnan(unl.get("speedup", math.nan))
        else "–"
    )
    return f"| `{prof}` | **{v['recommended']}** | {best} | {picks or '–'} | {fails} |"


def render_profile_section(
    cells: pd.DataFrame, rec: dict[str, Any], scenarios: dict[str, Scenario]
) -> list[str]:
    """REPORT.md lines comparing profiles (empty when the sweep ran only one)."""
    profs = {sc.upstream for sc in scenarios.values()}
    if len(profs) < 2:
        return []
    order = list(PROFILES)
    lines = ["## How the answer changes between upstream profiles", ""]
    lines += [
        "Each scenario ran under each profile with the same seed and run ids. Columns: the "
        "recommended default *c*; the *c* to set on an unlimited key and its paired speedup; the "
        "recommendation per known in-flight limit; P(any failed scene), serial → pipelined "
        f"*c* = 3, on keys allowing {' / '.join(map(str, _QUOTAS_SHOWN))} requests in flight.",
        "",
    ]
    groups: dict[str, list[str]] = {}
    for name in rec["scenarios"]:
        groups.setdefault(base_name(name), []).append(name)
    for base, names in groups.items():
        lines += [f"### `{base}`", ""]
        lines += [
            "| profile | default *c* | unlimited key | *c* per in-flight limit "
            "| P(any failed) serial → c = 3 |",
            "|---|---|---|---|---|",
        ]
        names.sort(key=lambda n: order.index(scenarios[n].upstream))
        for name in names:
            lines.append(_row(cells, name, scenarios[name].upstream, rec["scenarios"][name]))
        lines.append("")
    return lines
