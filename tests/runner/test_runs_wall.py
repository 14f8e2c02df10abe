"""``validate --upstream runs`` (wall clock): the verdict rule on synthetic evidence (pure, no
clock), the paired report on model runs, and one quick wall-clock deployment bounded by the
floor measured in this session."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
from scipy import stats

from runner.cli.commands import main
from runner.experiments import runs_wall as w
from runner.experiments.floor import pick_time_scale
from runner.world.runs_port import run_runs_real
from sim.runs import RunsResult, simulate_runs
from sim.runs_config import RunsConfig
from sim.scenario import load_scenario
from tests.runner.conftest import wall_bound_s

SPREAD = [0.0, 0.01, -0.01, 0.0, 0.01, -0.01]  # mean 0, sum of squares 4e-4, n = 6


def _half(n: int, sum_sq: float) -> float:
    """The 90% t half-width (TOST at 5%) of a sample with this sum of squared deviations."""
    return float(stats.t.ppf(0.95, n - 1) * math.sqrt(sum_sq / (n - 1)) / math.sqrt(n))


# -- the verdict rule (pure) ---------------------------------------------------------------
def test_an_interval_inside_the_margin_passes() -> None:
    c = w.verdict(SPREAD, 0.02)
    h = _half(6, 4e-4)  # 2.015 x 0.00894 / 2.449 = 0.00736 < 0.02
    assert c.verdict == w.PASS and c.n == 6
    assert c.point == pytest.approx(0.0, abs=1e-12)
    assert c.ci == pytest.approx((-h, h))


def test_an_interval_crossing_the_margin_fails() -> None:
    c = w.verdict([x + 0.015 for x in SPREAD], 0.02)  # 0.015 +- 0.00736 reaches 0.0224
    assert c.verdict == w.FAIL and "crosses" in c.why
    assert c.ci[0] < 0.02 < c.ci[1]


def test_an_interval_beyond_the_margin_fails() -> None:
    c = w.verdict([-0.05] * 6, 0.02)  # no spread: the interval is the point
    assert c.verdict == w.FAIL and "beyond" in c.why
    assert c.ci == pytest.approx((-0.05, -0.05))


def test_too_few_replications_are_inconclusive_never_a_pass() -> None:
    assert w.verdict([0.0] * 4, 0.02).verdict == w.INCONCLUSIVE  # perfect, but 4 < 5
    nan = math.nan
    c = w.verdict([nan, nan, 0.0, 0.0, 0.0, 0.0, nan], 0.02)  # undefined ones dropped
    assert (c.verdict, c.n) == (w.INCONCLUSIVE, 4)
    assert w.verdict([], 0.02).verdict == w.INCONCLUSIVE


def test_an_interval_wider_than_the_band_is_inconclusive() -> None:
    # +-0.1 alternating: half-width 2.015 x 0.1095 / 2.449 = 0.090 >= 0.02, whatever the mean
    c = w.verdict([0.1, -0.1] * 3, 0.02)
    assert c.verdict == w.INCONCLUSIVE and c.ci[1] - c.ci[0] >= 2 * 0.02


# -- the paired report on model runs (no clock) ------------------------------------------------
CELL = w.RunsWallCell("t", "default", 8, 4, 3, 4, 240.0, max_concurrent=2, per_owner=1, owners=2)


def _models(reps: int) -> list[RunsResult]:
    sc, cfg = CELL.build()
    return [simulate_runs(sc, dataclasses.replace(cfg, run_id=r), 0) for r in range(reps)]


def _slower(res: RunsResult, f: float) -> RunsResult:
    recs = [
        dataclasses.replace(r, first_scene_s=r.first_scene_s * f, end_s=r.end_s * f)
        for r in res.records
    ]
    return dataclasses.replace(res, records=recs)


def test_the_model_against_itself_passes_every_metric() -> None:
    ms = _models(5)
    rep = w.cell_report(ms, ms)
    assert rep["verdict"] == w.PASS
    assert all(c["point"] == 0.0 and c["ci"] == [0.0, 0.0] for c in rep["checks"].values())


def test_every_run_three_percent_late_fails_the_per_run_end_time() -> None:
    ms = _models(5)
    rep = w.cell_report([_slower(m, 1.03) for m in ms], ms)
    ch = rep["checks"]
    assert ch["run_end"]["point"] == pytest.approx(0.03)  # beyond +-2%
    assert ch["run_end"]["verdict"] == w.FAIL and ch["requests"]["verdict"] == w.PASS
    assert rep["verdict"] == w.FAIL


def test_three_replications_are_inconclusive_even_when_identical() -> None:
    ms = _models(3)
    assert w.cell_report(ms, ms)["verdict"] == w.INCONCLUSIVE


def test_the_scale_keeps_the_floor_of_a_runs_requests_under_the_target() -> None:
    ms = _models(2)
    started = [r for m in ms for r in m.records if not r.refused]
    req = sum(r.requests for r in started) / len(started)
    dur = sum(r.end_s for r in started) / len(started)
    scale, share = w.choose_scale(ms, 0.003, target=0.01, min_scale=0.0)
    assert share == pytest.approx(0.003 * req / (scale * dur)) and share <= 0.01
    assert scale == pick_time_scale(0.003, math.ceil(req), dur, target=0.01)


# -- one wall-clock deployment ------------------------------------------------------------------
@pytest.mark.wallclock
def test_a_wall_deployment_is_bounded_by_the_floor_and_one_is_inconclusive(
    wall_floor_s: float,
) -> None:
    """No key limit (no race): a run can only end late, never early, and by at most 3 floors
    per request in model time; one replication is too few for any verdict but inconclusive."""
    sc = load_scenario("default", upstream="runs")
    cfg = RunsConfig(3, runs=2, arrival_per_hour=240.0, keep_log=False)
    model = simulate_runs(sc, cfg, 0)
    scale, _ = w.choose_scale([model], wall_floor_s, target=0.05, min_scale=sc.time_scale)
    real = run_runs_real(sc, cfg, 0, clock="wall", time_scale=scale).result
    for a, b in zip(real.records, model.records, strict=True):
        assert (a.state, a.requests, a.http_429) == (b.state, b.requests, b.http_429)
        bound = wall_bound_s(wall_floor_s, b.requests + 1, scale)
        assert b.end_s - 1e-5 <= a.end_s <= b.end_s + bound
        assert b.first_scene_s - 1e-5 <= a.first_scene_s <= b.first_scene_s + bound
    assert w.cell_report([real], [model])["verdict"] == w.INCONCLUSIVE


# -- the command's user errors (before anything runs) --------------------------------------------
def test_validate_upstream_runs_wall_refuses_other_profiles_and_unknown_cells(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert main(["validate", "--upstream", "runs,pr788"]) == 2
    assert "name it alone" in capsys.readouterr().err
    assert main(["validate", "--upstream", "runs", "--scenario", "tts-heavy"]) == 2
    assert "no wall-clock cell" in capsys.readouterr().err
    (tmp_path / "f").write_text("")
    assert main(["validate", "--upstream", "runs", "--quick", "--out", str(tmp_path / "f")]) == 2
    assert "is a file" in capsys.readouterr().err


def test_the_results_folder_holds_the_json_and_a_table_per_cell(tmp_path: Path) -> None:
    ms = _models(3)
    cell = {"cell": "t", "time_scale": 0.1, "overhead_share": 0.01, "wall_s": 1.0}
    report = {"overhead_floor_s": 0.003, "reps": 3, "alpha": w.ALPHA, "verdict": w.INCONCLUSIVE,
              "cells": [cell | w.cell_report(ms, ms)]}  # fmt: skip
    d = w.write_results(report, tmp_path / "out", tmp_path)
    assert json.loads((d / "validate.json").read_text())["cells"][0]["verdict"] == w.INCONCLUSIVE
    md = (d / "VALIDATE.md").read_text()
    assert "## t" in md and md.count("| run_end |") == 1 and "3 replications < 5" in md
    assert "n/a … n/a" in md and "nan" not in md
    assert w.verdict_lines(report)[0].startswith("INCONCLUSIVE")
