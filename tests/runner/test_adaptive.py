"""The adaptive limiter and shared keys: same semantics in the real pipeline and the model."""

import numpy as np
import pytest

from runner import run
from runner.experiments.sweep import apply_quota
from sim import RunConfig, load_scenario, simulate
from tests.conftest import assert_same_run, log_key, swept


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
            for rid in range(2):
                real = run(
                    sc,
                    RunConfig.of(mode, c, adaptive=adaptive, records=True),
                    seed=4,
                    run_id=rid,
                    clock="virtual",
                )[0]
                model = simulate(
                    sc, RunConfig.of(mode, c, adaptive=adaptive, records=True), seed=4, run_id=rid
                )[0]
                assert_same_run(real, model)
                assert sorted(real.requests_log, key=log_key) == sorted(
                    model.requests_log, key=log_key
                )
                seen_429 += real.http_429
    assert seen_429 > 0  # the limiter was exercised


def test_halving_cuts_429s_where_the_key_is_tight():
    sc = apply_quota(load_scenario("default"), 2)
    off = simulate(sc, RunConfig.of("pipelined", 5), reps=100, seed=1, engine="simpy")
    halve = simulate(
        sc, RunConfig.of("pipelined", 5, adaptive="halve"), reps=100, seed=1, engine="simpy"
    )
    assert np.mean([r.http_429 for r in halve]) < 0.5 * np.mean([r.http_429 for r in off])


def test_adaptive_changes_nothing_on_a_key_that_never_answers_429():
    sc = apply_quota(load_scenario("default"), 0)
    for adaptive in ("halve", "aimd"):
        a = simulate(sc, RunConfig.of("pipelined", 3), reps=30, seed=2, engine="simpy")
        b = simulate(
            sc, RunConfig.of("pipelined", 3, adaptive=adaptive), reps=30, seed=2, engine="simpy"
        )
        for x, y in zip(a, b, strict=True):
            assert_same_run(x, y)


def test_tenants_on_one_key_with_staggered_arrivals():
    sc = apply_quota(load_scenario("default"), 4)
    together = simulate(sc, RunConfig.of("pipelined", 3, tenants=3), seed=1)
    staggered = simulate(sc, RunConfig.of("pipelined", 3, tenants=3, stagger_s=600.0), seed=1)
    assert [r.tenant for r in together] == [0, 1, 2]
    # far apart the tenants do not meet: each is its classroom alone on the key (classroom
    # id j = run 0 x 3 tenants + j, the same draws as a lone run with run id j)
    assert sum(r.http_429 for r in together) > sum(r.http_429 for r in staggered)
    for j, r in enumerate(staggered):
        assert (
            r.makespan_s
            == simulate(sc, RunConfig.of("pipelined", 3), seed=1, run_id=j)[0].makespan_s
        )
    with pytest.raises(ValueError, match="stagger_s"):
        simulate(sc, RunConfig.of("pipelined", 3, stagger_s=-1.0))[0]


@pytest.mark.parametrize(
    ("tenants", "stagger_s", "dist", "adaptive"),
    [
        (3, 0.0, "constant", "off"),
        (3, 20.0, "constant", "aimd"),
        (5, 7.5, "constant", "halve"),
        (4, 15.0, "exponential", "gate"),
    ],
)
def test_shared_key_tenants_agree_exactly_between_the_real_pipeline_and_the_model(
    tenants, stagger_s, dist, adaptive
):

    sc = apply_quota(load_scenario("default"), 4)
    real = run(
        sc,
        RunConfig.of(
            "pipelined",
            3,
            tenants=tenants,
            adaptive=adaptive,
            stagger_s=stagger_s,
            stagger_dist=dist,
            records=True,
        ),
        seed=3,
        run_id=2,
    )
    model = simulate(
        sc,
        RunConfig.of(
            "pipelined",
            3,
            tenants=tenants,
            adaptive=adaptive,
            stagger_s=stagger_s,
            stagger_dist=dist,
            records=True,
        ),
        seed=3,
        run_id=2,
    )
    assert [r.tenant for r in real] == list(range(tenants))
    for a, b in zip(real, model, strict=True):
        assert_same_run(a, b)
        assert sorted(a.requests_log, key=log_key) == sorted(b.requests_log, key=log_key)
    assert sum(r.http_429 for r in real) > 0


def test_the_gate_policy_meets_the_bar_other_policies_miss():
    """On a 1-in-flight key, gate at c = 3 fails no more scenes than serial (within the
    1-point budget); on a 5-in-flight key it keeps at least 90% of fixed c = 3's speedup.
    halve and aimd fail a scene in every run on the 1-in-flight key."""
    base = load_scenario("default")
    one, five = apply_quota(base, 1), apply_quota(base, 5)

    def p_fail(rs):
        return float(np.mean([r.scenes_failed > 0 for r in rs]))

    def mean(rs):
        return float(np.mean([r.makespan_s for r in rs]))

    serial1 = simulate(one, RunConfig.of("serial", 1), reps=300, seed=5, engine="simpy")
    gate1 = simulate(
        one, RunConfig.of("pipelined", 3, adaptive="gate"), reps=300, seed=5, engine="simpy"
    )
    assert p_fail(gate1) <= p_fail(serial1) + 0.01
    for policy in ("halve", "aimd"):
        assert (
            p_fail(
                simulate(
                    one,
                    RunConfig.of("pipelined", 3, adaptive=policy),
                    reps=100,
                    seed=5,
                    engine="simpy",
                )
            )
            == 1.0
        )
    serial5 = simulate(five, RunConfig.of("serial", 1), reps=300, seed=5, engine="simpy")
    fixed5 = simulate(five, RunConfig.of("pipelined", 3), reps=300, seed=5, engine="simpy")
    gate5 = simulate(
        five, RunConfig.of("pipelined", 3, adaptive="gate"), reps=300, seed=5, engine="simpy"
    )
    kept = (mean(serial5) / mean(gate5)) / (mean(serial5) / mean(fixed5))
    assert kept >= 0.9


def test_gate_runs_agree_exactly_between_the_real_pipeline_and_the_model():
    from runner.experiments.validate import validate_exact

    rep = validate_exact(
        [load_scenario("default")],
        quotas=[1, 3],
        concurrencies=[3],
        modes=["serial", "pipelined"],
        runs=1,
        adaptives=["halve", "aimd", "gate"],
        tenants=[1, 3],
        stagger_s=5.0,
    )
    assert rep.ok, rep.divergences
    assert rep.cells == 2 * 2 * (1 + 3) and rep.http_429 > 100


@pytest.mark.heavy
def test_a_sweep_with_adaptive_and_tenant_dimensions(tmp_path):
    import json

    from runner.experiments import sweep as sw

    spec = sw.default_spec(
        quick=True,
        scenarios=["default"],
        backends=["sim", "real"],
        sim_reps=40,
        real_reps=1,
        quotas=[1, 5],
        concurrencies=[1, 3],
        adaptives=["off", "gate"],
        tenants=[1, 3],
    )
    d = swept(spec, out=tmp_path / "r", workers=1, progress=False)
    report = (d / "REPORT.md").read_text()
    assert "## Adaptive concurrency" in report and "`gate` on `default`" in report
    for f in ("default-adaptive.png", "default-tenants-q1.png", "default-tenants-q5.png"):
        assert (d / "figures" / f).is_file()
    rec = json.loads((d / "recommendation.json").read_text())
    rows = {r["concurrency"]: r for r in rec["adaptive"]["policies"]["gate"]["default"]}
    assert rows[3]["dominates_off"] is True
    cells = sw.grid_cells(spec)
    assert any(c.cell_id.endswith("__a-gate__k3") for c in cells)


def test_exponential_arrivals_are_keyed_by_seed_and_run():
    from sim.draws import tenant_offsets_us

    a = tenant_offsets_us(1, 2, 50, 10.0, "exponential")
    assert a == tenant_offsets_us(1, 2, 50, 10.0, "exponential")
    assert a != tenant_offsets_us(1, 3, 50, 10.0, "exponential")
    gaps = np.diff(a) / 1e6
    assert a[0] == 0 and (gaps > 0).all() and 5.0 < gaps.mean() < 15.0
    assert tenant_offsets_us(1, 2, 3, 10.0) == [0, 10_000_000, 20_000_000]
    with pytest.raises(ValueError, match="stagger_dist: must be one of constant, exponential"):
        tenant_offsets_us(1, 2, 3, 10.0, "poisson")


@pytest.mark.heavy
@pytest.mark.multicore
def test_the_report_states_the_adaptive_default(tmp_path):
    import json

    from runner.experiments import sweep as sw

    spec = sw.default_spec(
        quick=True,
        scenarios=["default"],
        backends=["sim"],
        sim_reps=400,
        quotas=[1, 3, 0],
        concurrencies=[1, 2, 3],
        adaptives=["off", "halve", "gate"],
    )
    d = swept(spec, out=tmp_path / "r", workers=2, progress=False)
    rec = json.loads((d / "recommendation.json").read_text())
    assert rec["adaptive"]["defaults"]["halve"] is None
    assert rec["adaptive"]["defaults"]["gate"] in (2, 3)
    report = (d / "REPORT.md").read_text()
    assert "**With an adaptive limiter**: `gate` on at c = **" in report
