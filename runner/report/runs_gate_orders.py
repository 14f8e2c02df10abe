"""The key-wide gate's waiting orders compared, in a runs sweep that ran several
(``scenebench sweep --upstream runs --adaptive gate --gate-order need,need-arrival,tiers,fifo``).

Per scenario, key and load: each order's pair by the findings' rule
(:func:`runner.report.runs_recommendation.pick_profile`), every order held to one floor (the
least P(bad run) of any order's pair), with its p50 / p95 time to first scene, mean stall per
run, P(bad run) and mean wait per started run (time to first scene + stall); then the orders the
same rule picks among those picks (near-best p95 to first scene, then near-best stall). The
folder's saved runs only (``docs/runs.md``, "The key-wide gate across runs", quotes the table).
"""

from __future__ import annotations

import math

import pandas as pd

from .labels import quota_key
from .runs_recommendation import (
    RUNS_RULE,
    RunsCellStats,
    floor_of,
    narrow,
    pick_profile,
    runs_rule_cells,
)

__all__ = ["best_orders", "gate_order_lines", "order_picks"]

_PROFILE = ["scenario", "quota", "preset", "load_per_h"]


def order_picks(cells: pd.DataFrame, orders: list[str]) -> dict[str, RunsCellStats | None]:
    """One profile's gate cells: each order's pick, held to one floor (None: no pair of that
    order is admissible)."""
    floor = floor_of(runs_rule_cells(cells))
    out: dict[str, RunsCellStats | None] = {}
    for order in orders:
        pk = pick_profile(runs_rule_cells(cells[cells["gate_order"] == order]), floor=floor)
        out[order] = pk.pick if pk is not None and pk.admissible else None
    return out


def best_orders(picks: dict[str, RunsCellStats | None]) -> list[str]:
    """The rule once more over the orders' picks: the near-best p95 to first scene, then the
    near-best mean stall (:data:`RUNS_RULE`'s tolerances)."""
    ok = [(o, x) for o, x in picks.items() if x is not None]
    near = narrow(ok, lambda ox: ox[1].ttfs_p95_s, RUNS_RULE.within_best)
    calm = narrow(
        near, lambda ox: ox[1].stall_mean_s, RUNS_RULE.within_best, RUNS_RULE.stall_slack_s
    )
    return [o for o, _ in calm]


def _wait_s(runs: pd.DataFrame, order: str, x: RunsCellStats) -> float:
    """Mean time to first scene + stall over the started runs of one order's pick."""
    r = runs[(runs["gate_order"] == order) & (runs["concurrency"] == x.concurrency)]
    r = r[r["max_concurrent"] == x.max_concurrent]
    w = (r["ttfs_s"] + r["stall_s"])[~r["refused"].astype(bool)]
    return float(w.mean()) if len(w) else math.nan


def _key(scenario: str, quota: int, preset: str, load: float, many: bool) -> str:
    key = preset or ("unlimited" if quota == 0 else f"{quota} in flight")
    return (f"{scenario}, " if many else "") + f"{key}, {load:g}/h"


def gate_order_lines(runs: pd.DataFrame, cells: pd.DataFrame) -> list[str]:
    """The comparison section (markdown lines); none unless the gate cells ran several
    orders. ``runs``: the folder's runs; ``cells``: its cell table."""
    if "gate_order" not in cells:
        return []
    gate = cells[cells["adaptive"] == "gate"].fillna({"preset": ""})
    orders = [o for o in ("need", "need-arrival", "tiers", "fifo") if o in set(gate["gate_order"])]
    if len(orders) < 2:
        return []
    rg = runs[runs["adaptive"] == "gate"].fillna({"preset": ""})
    many = gate["scenario"].nunique() > 1
    out = [
        "## The gate's waiting orders compared",
        "",
        "Each order's pair (*c*, *m*) by the rule, every order held to the least P(bad run) "
        "of any order's pair: p50 / p95 time to first scene, mean stall per run, P(bad run), "
        "mean wait per started run (first scene + stall); last, the orders the rule picks "
        "among those picks.",
        "",
        "| key, load | " + " | ".join(orders) + " | the rule picks |",
        "|---" * (2 + len(orders)) + "|",
    ]
    groups = sorted(
        gate.groupby(_PROFILE, sort=True),
        key=lambda kv: (kv[0][0], kv[0][2], quota_key(kv[0][1]), kv[0][3]),
    )  # as the report's tables: in-flight keys ascending, unlimited, then presets
    for prof, g in groups:
        sc, q, preset, load = str(prof[0]), int(prof[1]), str(prof[2]), float(prof[3])
        picks = order_picks(g, orders)
        mine = rg[(rg["scenario"] == sc) & (rg["quota"] == q) & (rg["preset"] == preset)]
        mine = mine[mine["load_per_h"] == load]
        row = [f"| {_key(sc, q, preset, load, many)}"]
        for order, x in picks.items():
            row.append(
                "–"
                if x is None
                else f"({x.concurrency}, {x.max_concurrent}): {x.ttfs_p50_s:.0f} / "
                f"{x.ttfs_p95_s:.0f} s, {x.stall_mean_s:.1f} s, {100 * x.p_bad:.1f}%, "
                f"{_wait_s(mine, order, x):.0f} s"
            )
        row.append(", ".join(best_orders(picks)) or "–")
        out.append(" | ".join(row) + " |")
    return [*out, ""]
