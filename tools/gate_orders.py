"""The key-wide gate's waiting orders compared (docs/runs.md, "The key-wide gate across runs").

Runs the findings sweep's gate cells (the `default` scenario, 20 deployments of 20 runs from 5
learners, Poisson, seed 11 onwards, every *c* x *m*) on the tight keys once per order of
:data:`sim.run_gate.ORDERS`, picks each order's pair per key and load by the findings' rule
(:func:`runner.report.runs_recommendation.pick_profile`, every order held to the least
P(bad run) of any order's pair) and prints one markdown row per key and load: each order's
pick (*c*, *m*), its p50 / p95 time to first scene, mean stall per run, P(bad run) and mean
wait per started run (time to first scene + stall); then the orders the same rule picks
among those picks (near-best p95 to first scene, then near-best stall).

    python tools/gate_orders.py --quotas 1,2,3 --loads 10,30,60 --out results/gate-orders
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import multiprocessing as mp
from pathlib import Path

import pandas as pd

import sim.run_gate
from runner.experiments.runs_sweep import RunsCell, run_runs_cell
from runner.report.runs_recommendation import (
    RUNS_RULE,
    RunsCellStats,
    floor_of,
    pick_profile,
    runs_rule_cells,
)
from runner.store.runs_cells import runs_cell_table
from sim.scenario import load_scenario


def _cell(order: str, cell: RunsCell) -> pd.DataFrame:
    sim.run_gate.ORDER = order  # the order RunGates takes when a driver names none
    df = run_runs_cell(cell, load_scenario("default", upstream="runs"))
    df["order"] = order
    return df


def _cells(quotas: list[int], loads: list[float]) -> list[RunsCell]:
    return [
        RunsCell("sim", "default", q, "", load, m, c, "gate", 20, 20, 5, 11)
        for q in quotas
        for load in loads
        for m in (1, 2, 4, 8)
        for c in (1, 2, 3, 5)
    ]


def _picks(t: pd.DataFrame, orders: list[str]) -> dict[str, RunsCellStats | None]:
    """Each order's pick by the findings' rule, held to one floor: the least P(bad run) of
    any order's pair (None: no pair of that order is admissible)."""
    floor = floor_of(runs_rule_cells(t))
    out: dict[str, RunsCellStats | None] = {}
    for order in orders:
        pk = pick_profile(runs_rule_cells(t[t["order"] == order]), floor=floor)
        out[order] = pk.pick if pk is not None and pk.admissible else None
    return out


def _best(picks: dict[str, RunsCellStats | None]) -> list[str]:
    """The rule once more over the orders' picks: the near-best p95 to first scene, then
    the near-best mean stall (RUNS_RULE's tolerances)."""
    ok = {o: x for o, x in picks.items() if x is not None}
    if not ok:
        return []
    p95 = min(x.ttfs_p95_s for x in ok.values())
    near = {o: x for o, x in ok.items() if x.ttfs_p95_s <= p95 * (1 + RUNS_RULE.within_best)}
    stall = min(x.stall_mean_s for x in near.values())
    slack = max(stall * RUNS_RULE.within_best, RUNS_RULE.stall_slack_s)
    return [o for o, x in near.items() if x.stall_mean_s <= stall + slack]


def _row(q: int, load: float, table: pd.DataFrame, runs: pd.DataFrame, orders: list[str]) -> str:
    t = table[(table["quota"] == q) & (table["load_per_h"] == load)]
    picks = _picks(t, orders)
    out = [f"| {q} in flight, {load:g}/h"]
    for order, x in picks.items():
        if x is None:
            out.append("–")
            continue
        r = runs[(runs["order"] == order) & (runs["quota"] == q) & (runs["load_per_h"] == load)]
        r = r[(r["concurrency"] == x.concurrency) & (r["max_concurrent"] == x.max_concurrent)]
        wait = (r["ttfs_s"] + r["stall_s"])[~r["refused"].astype(bool)].mean()
        out.append(
            f"({x.concurrency}, {x.max_concurrent}): {x.ttfs_p50_s:.0f} / {x.ttfs_p95_s:.0f} s, "
            f"{x.stall_mean_s:.1f} s, {100 * x.p_bad:.1f}%, {wait:.0f} s"
        )
    out.append(", ".join(_best(picks)) or "–")
    return " | ".join(out) + " |"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quotas", default="1,2,3")
    ap.add_argument("--loads", default="10,30,60")
    ap.add_argument("--orders", default=",".join(sim.run_gate.ORDERS))
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("results/gate-orders"))
    a = ap.parse_args()
    quotas = [int(x) for x in a.quotas.split(",")]
    loads = [float(x) for x in a.loads.split(",")]
    orders = a.orders.split(",")
    jobs = [(o, c) for o in orders for c in _cells(quotas, loads)]
    ctx = mp.get_context("spawn")
    with cf.ProcessPoolExecutor(a.workers, mp_context=ctx) as pool:
        parts = list(pool.map(_cell, *zip(*jobs, strict=True)))
    runs = pd.concat(parts, ignore_index=True)
    a.out.mkdir(parents=True, exist_ok=True)
    runs.to_parquet(a.out / "runs.parquet")
    table = pd.concat(
        [runs_cell_table(g).assign(order=o) for o, g in runs.groupby("order")], ignore_index=True
    )
    table.to_csv(a.out / "cells.csv", index=False)
    print("| key, load | " + " | ".join(orders) + " | the rule picks |")
    print("|---" * (2 + len(orders)) + "|")
    for q in quotas:
        for load in loads:
            print(_row(q, load, table, runs, orders))


if __name__ == "__main__":
    main()
