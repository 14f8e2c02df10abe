"""A runs sweep end to end (folder, cells, report, recommendation) on a toy deployment whose
answer is derived here; the model of runs itself is tested where it lives."""

from __future__ import annotations

import json
import math
from typing import Any

import pandas as pd
import pytest

from runner.experiments import runs_sweep
from runner.experiments.runs_sweep import RunsSweepSpec, runs_grid
from runner.experiments.sweep import run_sweep
from runner.report.sections import recommendation_of, render_results
from sim import load_scenario

GAP_S = 600.0  # a run arrives every 10 minutes
SERVICE_S = 1200.0  # a run holds its worker 1200 / c seconds
STARTUP_S = 60.0  # outline and scene 0 once claimed


def toy(sc: Any, p: dict[str, Any], seed: int) -> list[dict[str, Any]]:
    """FIFO on ``m`` workers, deterministic arrivals and service; a key allowing q > 0 in
    flight pauses every run at c >= q; stall per run 100 / c seconds."""
    q, c, m = sc.quota_llm.max_inflight, p["concurrency"], p["max_concurrent"]
    free = [0.0] * m
    rows = []
    for i in range(p["runs"]):
        t = i * GAP_S
        k = min(range(m), key=lambda j: free[j])
        start = max(t, free[k])
        free[k] = start + SERVICE_S / c
        paused = 0 < q <= c
        rows.append(
            {"refused": False, "paused": paused, "scenes_failed": 0, "wait_s": start - t,
             "ttfs_s": start - t + STARTUP_S, "stall_s": 100.0 / c, "completed": not paused,
             "span_h": 1.0}
        )  # fmt: skip
    return rows


def _spec() -> RunsSweepSpec:
    return RunsSweepSpec(
        scenarios=(load_scenario("default").to_mapping(),),
        quotas=(2, 0),
        loads_per_h=(6.0,),
        max_concurrents=(1,),  # 4 (upstream's) is added
        concurrencies=(2, 3),  # 1 (upstream's) is added
        replicates=3,
        runs=4,
        owners=0,
    )


def test_upstreams_defaults_are_always_in_the_grid():
    cells = runs_grid(_spec())
    assert {(x.concurrency, x.max_concurrent) for x in cells} == {
        (c, m) for c in (1, 2, 3) for m in (1, 4)
    }
    assert len(cells) == 2 * 6 and len({x.cell_id for x in cells}) == len(cells)


def test_a_runs_sweep_gives_the_two_knob_answer(tmp_path, monkeypatch):
    monkeypatch.setattr(runs_sweep, "simulate_deployment", toy)
    d = run_sweep(_spec(), out=tmp_path / "r", workers=1, progress=False)
    assert len(list((d / "cells").glob("*.parquet"))) == 12
    rec = render_results(d)
    assert json.loads((d / "recommendation.json").read_text()) == json.loads(json.dumps(rec))
    assert recommendation_of(d) == rec
    assert (d / "REPORT.md").read_text().count("max concurrent runs") >= 1
    assert (d / "figures" / "runs-default-off.png").is_file()
    picks = {e["quota"]: e for e in rec["scenarios"]["default"]["off"]["by_profile"]}
    # unlimited key: every pair with no wait has p95 60 s (m = 4; or c >= 2 with m = 1, since
    # service 1200 / c <= the 600 s gap); the calmest of them is c = 3 (stall 33 s vs 50 s);
    # the smallest m: (3, 1)
    assert (picks[0]["concurrency"], picks[0]["max_concurrent"]) == (3, 1)
    assert picks[0]["pick"]["ttfs_p95_s"] == STARTUP_S
    assert picks[0]["sentence"] == "an unlimited key at 6 runs/hour: c = 3, max concurrent runs = 1"
    # 2-in-flight key: c >= 2 pauses every run; c = 1 with m = 1 queues (run 3 waits 1800 s)
    assert (picks[2]["concurrency"], picks[2]["max_concurrent"]) == (1, 4)
    # paired against (1, 4) on the same deployments: (3, 1) on the unlimited key has the same
    # p95 and 100/3 - 100 s of stall, every deployment alike (no spread)
    p = picks[0]["pick"]
    assert p["ttfs_p95_delta_s"] == 0.0
    assert p["stall_delta_s"] == pytest.approx(100 / 3 - 100)
    assert p["stall_delta_lo_s"] == pytest.approx(100 / 3 - 100)
    # the default must hold on both keys: only c = 1 does; (1, 4) beats (1, 1)'s queue
    dflt = rec["scenarios"]["default"]["off"]["default"]
    assert (dflt["concurrency"], dflt["max_concurrent"]) == (1, 4)
    assert (rec["recommended"], rec["recommended_max_concurrent"]) == (1, 4)
    assert dflt["ttfs_p95_geomean_s"] == pytest.approx(STARTUP_S)
    assert not math.isnan(picks[2]["pick"]["stall_mean_s"])


def test_an_interrupted_runs_sweep_resumes_to_the_same_runs(tmp_path, monkeypatch):
    monkeypatch.setattr(runs_sweep, "simulate_deployment", toy)
    d = run_sweep(_spec(), out=tmp_path / "r", workers=1, progress=False)
    whole = pd.read_parquet(d / "runs.parquet").drop(columns="cell_cpu_s")
    for f in sorted((d / "cells").glob("*.parquet"))[::2]:
        f.unlink()  # half the cells lost
    (d / "runs.parquet").unlink()
    run_sweep(_spec(), resume=d, workers=1, progress=False)  # the folder's own spec is used
    again = pd.read_parquet(d / "runs.parquet").drop(columns="cell_cpu_s")
    pd.testing.assert_frame_equal(whole, again)
