"""The wall clock at its floor: the time-scale rule, the equivalence rule of validation (on
model runs, exact), and wall-clock runs bounded by the floor measured in the same session."""

import dataclasses
import math

import pytest

from runner import run
from runner.experiments.floor import choose_time_scale, pick_time_scale
from runner.experiments.validate import (
    ALL_PAUSED,
    FAIL,
    INCONCLUSIVE,
    PASS,
    WallCell,
    _cell_report,
    equivalence,
    runs_to_decide,
    validate_wall,
)
from sim import RunConfig, simulate
from sim import analytic as an
from sim.scenario import load_scenario
from tests.conftest import const_scenario

TOLS = {"makespan_mean": 0.02, "makespan_p95": 0.05, "ttfs_mean": 0.05}


# -- the time scale ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("floor_s", "requests", "model_s", "target"),
    [(0.002, 60, 410.0, 0.01), (0.0045, 67, 185.0, 0.005), (0.0011, 13, 2000.0, 0.01)],
)
def test_the_picked_scale_is_the_smallest_that_keeps_the_floor_under_the_target(
    floor_s, requests, model_s, target
):
    s = pick_time_scale(floor_s, requests, model_s, target=target)
    share = floor_s * requests / (s * model_s)
    assert share <= target
    # two significant digits: one step down would break the target
    step = 10 ** (math.floor(math.log10(s)) - 1)
    assert floor_s * requests / ((s - step) * model_s) > target


def test_the_scale_stays_within_its_bounds():
    assert pick_time_scale(1e-6, 10, 400.0, min_scale=0.01) == 0.01
    assert pick_time_scale(0.5, 1000, 10.0, max_scale=1.0) == 1.0


def test_choose_time_scale_uses_the_virtual_run_of_the_same_command():
    sc = const_scenario(4, 20.0, 5.0, 2.0, clips=2)
    ch = choose_time_scale(sc, RunConfig.of("serial", 1), floor_s=0.002, target=0.01)
    exact = an.serial_makespan(4, 20.0, an.scene_tail(5.0, 2.0, 2))
    assert ch.model_s == pytest.approx(exact, abs=1e-6) and ch.requests == 4 * 4
    assert ch.time_scale == pick_time_scale(0.002, 16, exact, target=0.01, min_scale=0.01)
    assert ch.overhead_share <= 0.01 and "time scale" in ch.line()


# -- the equivalence rule -----------------------------------------------------------------
@pytest.mark.parametrize(
    ("ci", "verdict"),
    [
        ((-0.01, 0.015), PASS),
        ((-0.02, 0.02), PASS),
        ((0.01, 0.03), INCONCLUSIVE),  # the point is inside, the interval is not
        ((-0.05, 0.05), INCONCLUSIVE),
        ((0.021, 0.04), FAIL),
        ((-0.09, -0.03), FAIL),
        ((math.nan, math.nan), INCONCLUSIVE),  # too few runs is never a pass
    ],
)
def test_a_metric_passes_only_when_its_interval_lies_inside_the_band(ci, verdict):
    assert equivalence(ci, 0.02) == verdict


def test_runs_to_decide_shrink_the_interval_to_the_nearest_edge():
    # half-width 1.5% around +1% with a 2% band: 1% of margin needs (1.5/1)^2 x 16 = 36 runs
    assert runs_to_decide(0.01, (-0.005, 0.025), 16, 0.02) == 36
    # outside the band the same arithmetic counts the runs that would show a failure
    assert runs_to_decide(0.03, (0.015, 0.045), 16, 0.02) == 36
    assert runs_to_decide(0.01, (math.nan, math.nan), 1, 0.02) is None


def _biased(runs, factor):
    return [
        dataclasses.replace(r, makespan_s=r.makespan_s * factor, ttfs_s=r.ttfs_s * factor)
        for r in runs
    ]


def test_model_runs_against_themselves_pass_and_a_two_percent_bias_fails():
    pop = simulate(
        load_scenario("default"), RunConfig.of("pipelined", 3), reps=200, seed=3, engine="simpy"
    )
    cell = WallCell.of("default", 0, "pipelined", 3)
    same = _cell_report(cell, list(pop[:16]), pop, TOLS)
    assert same["verdict"] == PASS and same["makespan_mean_rel_err"] == 0.0
    for factor in (1.025, 0.975):
        bad = _cell_report(cell, _biased(pop[:16], factor), pop, TOLS)
        assert bad["verdict"] == FAIL
        assert bad["checks"]["makespan_mean"]["verdict"] == FAIL


def test_a_cell_whose_every_run_pauses_is_reported_apart():
    pop = simulate(
        load_scenario("default"), RunConfig.of("pipelined", 3), reps=20, seed=3, engine="simpy"
    )
    paused = [dataclasses.replace(r, status="paused") for r in pop]
    rep = _cell_report(WallCell.of("default", 0, "pipelined", 3), paused[:8], paused, TOLS)
    assert rep["verdict"] == ALL_PAUSED and not rep["ok"]


# -- on the wall clock --------------------------------------------------------------------
@pytest.mark.wallclock
@pytest.mark.parametrize("scale", [0.2, 0.24])
def test_a_long_call_is_not_cut_by_a_client_timeout_in_real_seconds(scale):
    # a 25 s content call lasts 5 (6) real seconds at time scale 0.2 (0.24): httpx's default
    # 5 s timeout would cut it (at 0.24 surely) and retry; the only timeout is the pipeline's
    # request_timeout_s, in model seconds
    sc = const_scenario(1, 25.0, 0.5, 0.5, clips=1, request_timeout_s=300.0)
    r = run(sc, RunConfig.of("serial", 1), clock="wall", time_scale=scale)[0]
    assert (r.status, r.retries, r.timeouts, r.requests) == ("completed", 0, 0, 3)
    assert r.makespan_s >= an.serial_makespan(1, 25.0, an.scene_tail(0.5, 0.5, 1))


@pytest.mark.wallclock
def test_wall_validation_is_not_fooled_by_a_provider_two_percent_slow(wall_floor_s):
    cells = [WallCell.of("default", 0, "pipelined", 3)]
    kw = {"reps": 8, "model_reps": 200, "floor_s": wall_floor_s}
    ok = validate_wall(cells, **kw)
    cell = ok["cells"][0]
    assert cell["overhead_share"] <= 0.01
    assert cell["verdict"] in (PASS, INCONCLUSIVE), cell["checks"]
    if cell["verdict"] == INCONCLUSIVE:
        assert cell["runs_needed"] is None or cell["runs_needed"] > 8
    # every run on the wall clock is at least its model run (no request ends early)
    assert all(r >= m - 1e-6 for r, m in zip(cell["pairs_real"], cell["pairs_model"], strict=True))
    slow = validate_wall(cells, latency_factor=1.02, **kw)
    assert slow["verdict"] == FAIL, slow["cells"][0]["checks"]
    assert slow["cells"][0]["checks"]["makespan_mean"]["verdict"] == FAIL
    # the same floor, the same scale: only the provider's 2% separates the two
    assert slow["cells"][0]["time_scale"] == cell["time_scale"]
