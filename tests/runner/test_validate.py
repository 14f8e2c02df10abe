"""Model vs real: the exact check over the grid, divergence reports, the wall-clock check."""

import dataclasses

import pytest

from runner import run
from runner.experiments.validate import first_divergence, validate_exact
from sim import RunConfig, load_scenario, simulate


@pytest.mark.heavy
def test_exact_validation_over_the_whole_grid_including_a_429_heavy_scenario():
    rep = validate_exact([load_scenario("default"), load_scenario("burst-429")], runs=1)
    assert rep.ok, rep.divergences
    assert rep.cells == 2 * 7 * (1 + 2 * 10)  # own quota + 6 profiles; serial + 2 modes x 10
    assert rep.http_429 > 1000 and rep.retries > 500
    # the limited-key engine joined the check on every cell it covers: default's quotas 1, 2,
    # 3, 5, 10 (21 mode/c cells each, one run); burst-429's RPM bucket stays with SimPy
    assert rep.fast_quota_runs == 5 * 21


def test_the_engine_check_reports_a_limited_key_divergence():
    from runner.experiments.validate import _engine_check

    sc = load_scenario("low-quota")
    cfg = RunConfig.of("pipelined", 3, records=True)
    models = simulate(sc, cfg, reps=3, seed=2, engine="simpy")
    assert _engine_check(sc, cfg, models, 2) is None
    models[1] = dataclasses.replace(models[1], retries=models[1].retries + 1)
    msg = _engine_check(sc, cfg, models, 2)
    assert msg is not None and msg.startswith("fast_quota vs simpy: classroom 1: retries")


def test_a_divergence_is_reported_with_its_first_event():
    sc = load_scenario("low-quota")
    real = run(sc, RunConfig.of("pipelined", 3, records=True), seed=1, clock="virtual")[0]
    model = simulate(sc, RunConfig.of("pipelined", 3, records=True), seed=1)[0]
    assert first_divergence(real, model) is None
    log = list(model.requests_log)
    i = len(log) // 2
    log[i] = dataclasses.replace(log[i], t_end_s=log[i].t_end_s + 0.001)
    msg = first_divergence(real, dataclasses.replace(model, requests_log=tuple(log)))
    assert msg is not None and msg.startswith("first diverging request")
    assert f"o{log[i].order}" in msg
    changed = dataclasses.replace(model, retries=model.retries + 1)
    assert "retries" in first_divergence(real, changed)
