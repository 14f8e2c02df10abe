"""The adaptive limiter and shared keys: same semantics in the real pipeline and the model."""

import numpy as np
import pytest

from runner import run_classroom
from runner.sweep import apply_quota
from sim import load_scenario, simulate, simulate_many
from tests.conftest import assert_same_run, log_key


@pytest.mark.parametrize("adaptive", ["halve", "aimd"])
@pytest.mark.parametrize(
    ("name", "quota"), [("default", 2), ("default", 3), ("burst-429", None), ("tts-heavy", 3)]
)
def test_adaptive_runs_agree_exactly_between_the_real_pipeline_and_the_model(adaptive, name, quota):
    base = load_scenario(name)
    sc = base if quota is None else apply_quota(base, quota)
    seen_429 = 0
    for mode in ("hybrid", "pipelined"):
        for c in (3, 5):
            for run in range(2):
                real = run_classroom(
                    sc, mode, c, seed=4, run_id=run, clock="virtual", adaptive=adaptive
                )
                model = simulate(sc, mode, c, seed=4, run_id=run, records=True, adaptive=adaptive)
                assert_same_run(real, model)
                assert sorted(real.requests_log, key=log_key) == sorted(
                    model.requests_log, key=log_key
                )
                seen_429 += real.http_429
    assert seen_429 > 0  # the limiter was exercised


def test_halving_cuts_429s_where_the_key_is_tight():
    sc = apply_quota(load_scenario("default"), 2)
    off = simulate_many(sc, "pipelined", 5, 100, seed=1)
    halve = simulate_many(sc, "pipelined", 5, 100, seed=1, adaptive="halve")
    assert np.mean([r.http_429 for r in halve]) < 0.5 * np.mean([r.http_429 for r in off])


def test_adaptive_changes_nothing_on_a_key_that_never_answers_429():
    sc = apply_quota(load_scenario("default"), 0)
    for adaptive in ("halve", "aimd"):
        a = simulate_many(sc, "pipelined", 3, 30, seed=2)
        b = simulate_many(sc, "pipelined", 3, 30, seed=2, adaptive=adaptive)
        for x, y in zip(a, b, strict=True):
            assert_same_run(x, y)


def test_tenants_on_one_key_with_staggered_arrivals():
    sc = apply_quota(load_scenario("default"), 4)
    together = simulate(sc, "pipelined", 3, tenants=3, seed=1)
    staggered = simulate(sc, "pipelined", 3, tenants=3, seed=1, stagger_s=600.0)
    assert [r.tenant for r in together] == [0, 1, 2]
    # far apart the tenants do not meet: each is its classroom alone on the key (classroom
    # id j = run 0 x 3 tenants + j, the same draws as a lone run with run id j)
    assert sum(r.http_429 for r in together) > sum(r.http_429 for r in staggered)
    for j, r in enumerate(staggered):
        assert r.makespan_s == simulate(sc, "pipelined", 3, seed=1, run_id=j).makespan_s
    with pytest.raises(ValueError, match="stagger_s"):
        simulate(sc, "pipelined", 3, stagger_s=-1.0)


@pytest.mark.parametrize(
    ("tenants", "stagger_s", "adaptive"), [(3, 0.0, "off"), (3, 20.0, "aimd"), (5, 7.5, "halve")]
)
def test_shared_key_tenants_agree_exactly_between_the_real_pipeline_and_the_model(
    tenants, stagger_s, adaptive
):
    from runner import run_tenants

    sc = apply_quota(load_scenario("default"), 4)
    real = run_tenants(
        sc, "pipelined", 3, tenants, seed=3, run_id=2, stagger_s=stagger_s, adaptive=adaptive
    )
    model = simulate(
        sc,
        "pipelined",
        3,
        seed=3,
        run_id=2,
        tenants=tenants,
        stagger_s=stagger_s,
        records=True,
        adaptive=adaptive,
    )
    assert [r.tenant for r in real] == list(range(tenants))
    for a, b in zip(real, model, strict=True):
        assert_same_run(a, b)
        assert sorted(a.requests_log, key=log_key) == sorted(b.requests_log, key=log_key)
    assert sum(r.http_429 for r in real) > 0
