"""The server path in the model: closed forms under constant latencies, the two retry layers,
keyed arrivals, the key-wide gate, and the capacity closed forms."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim import Constant, Exponential, Quota, RunConfig, load_scenario, profile, simulate
from sim import analytic as an
from sim.capacity import (
    job_alone_s,
    job_work_s,
    key_load,
    mg1_wait_quantile_s,
    mg1_wait_s,
    saturation_per_hour,
    second_moment,
)
from sim.jobs import (
    JOB_RETRY,
    MODEL_RETRY,
    ServerProfile,
    arrivals_us,
    server_scenario,
    simulate_jobs,
    simulate_keygate_tenants,
)
from tests.conftest import const_scenario

PR788 = dataclasses.replace(profile("pr788"), jitter_u=0.0)
PR660 = dataclasses.replace(profile("pr660"), jitter_u=0.0)  # before #788: route-side retries


def job_sc(n=4, content=20.0, actions=5.0, tts=2.0, clips=3, client=PR788, **kw):
    return server_scenario(const_scenario(n, content, actions, tts, clips, client=client, **kw))


def test_server_profile_composes_the_two_layers():
    sc = job_sc()
    assert isinstance(sc.client, ServerProfile)
    assert not sc.client.foreground_first_scene
    # since #788 the job calls the model with maxRetries: 0; before it, the AI SDK's budget
    assert (
        sc.client.route_policy(0, False).max_retries
        == 0
        == sc.client.route_policy(1, False).max_retries
    )
    old = job_sc(client=PR660).client
    assert old.route_policy(0, False) == MODEL_RETRY == old.route_policy(1, False)
    assert sc.client.client_policy(0, False) == JOB_RETRY
    assert MODEL_RETRY.max_retries == 2 and MODEL_RETRY.initial_delay_s == 2.0
    assert JOB_RETRY.max_retries == 5 and JOB_RETRY.max_delay_s == 16.0
    assert sc.client.route_policy(2, False).max_retries == 0


@pytest.mark.parametrize("mode,c", [("serial", 1), ("pipelined", 2), ("pipelined", 3)])
@pytest.mark.parametrize("media_c", [1, 2, 5])
def test_one_job_alone_equals_the_closed_form(mode, c, media_c):
    n, C, A, T, k = 5, 20.0, 5.0, 2.0, 3
    sc = job_sc(n, C, A, T, k)
    run = simulate_jobs(sc, mode, c, arrivals_s=[7.0], media_concurrency=media_c)
    (r,) = run.records
    loop = an.serial_makespan(n, C, A) if c <= 1 else an.pipelined_makespan(n, c, C, A)
    expected = loop + math.ceil(n * k / media_c) * T
    assert r.latency_s == pytest.approx(expected, abs=1e-9)
    assert r.latency_s == pytest.approx(job_alone_s(n, c, C, A, n * k, T, media_c, mode))
    assert r.arrival_s == 7.0 and r.scenes_ok == n and r.clips == n * k and not r.failed
    assert r.requests == 2 * n + n * k


@pytest.mark.parametrize("retry_after", [None, 1.0])
def test_the_budgets_multiply(retry_after):
    """Every attempt answered 429 at once: the AI SDK inside a request tries 3 times (waits
    2, 4 s; or Retry-After 1 s, 1 s), withGenerationRetry 6 times (waits 1, 2, 4, 8, 16 s,
    jitter fixed at 0): 18 attempts per outline, then the scene is skipped."""
    n = 3
    q = Quota(p_429=1.0, retry_after_s=retry_after)
    sc = job_sc(n, quota_llm=q, client=PR660)  # before #788: the AI SDK retries inside
    (r,) = simulate_jobs(sc, "serial", 1, arrivals_s=[0.0]).records
    inner = 2.0 + 4.0 if retry_after is None else 1.0 + 1.0
    per_outline = 6 * inner + (1 + 2 + 4 + 8 + 16)
    assert r.latency_s == pytest.approx(n * per_outline, abs=1e-9)
    assert r.requests == r.http_429 == 18 * n
    assert r.scenes_failed == n and r.scenes_ok == 0 and r.clips == 0 and r.failed


@pytest.mark.parametrize("retry_after", [None, 1.0])
def test_since_788_the_job_makes_six_attempts_per_step(retry_after):
    """#788's job calls the model with maxRetries: 0: every attempt answered 429 at once gives
    withGenerationRetry's 6 attempts per outline (waits 1, 2, 4, 8, 16 s, jitter fixed at 0,
    Retry-After ignored), then the scene is skipped."""
    n = 3
    sc = job_sc(n, quota_llm=Quota(p_429=1.0, retry_after_s=retry_after))
    (r,) = simulate_jobs(sc, "serial", 1, arrivals_s=[0.0]).records
    assert r.latency_s == pytest.approx(n * (1 + 2 + 4 + 8 + 16), abs=1e-9)
    assert r.requests == r.http_429 == 6 * n
    assert r.scenes_failed == n and r.scenes_ok == 0 and r.failed


def test_both_budgets_are_configurable():
    n = 2
    sc = server_scenario(
        const_scenario(n, client=PR788, quota_llm=Quota(p_429=1.0, retry_after_s=None)),
        model_retry=dataclasses.replace(MODEL_RETRY, max_retries=0),
        job_retry=dataclasses.replace(JOB_RETRY, max_retries=2),
    )
    (r,) = simulate_jobs(sc, "serial", 1, arrivals_s=[0.0]).records
    assert r.requests == 3 * n
    assert r.latency_s == pytest.approx(n * (1 + 2), abs=1e-9)


def test_arrivals_are_keyed_and_poisson():
    a = arrivals_us(5, 0, 4000, 30.0)
    assert a == arrivals_us(5, 0, 4000, 30.0)
    assert a != arrivals_us(5, 1, 4000, 30.0)
    assert a[0] == 0 and all(isinstance(t, int) for t in a)
    gaps = np.diff(a) / 1e6
    mean = 3600.0 / 30.0
    # the mean of n exponential gaps has standard deviation mean / sqrt(n): 5 sigma
    assert abs(gaps.mean() - mean) < 5 * mean / math.sqrt(len(gaps))
    assert arrivals_us(0, 0, 1, None, [3.0, 1.5]) == [1_500_000, 3_000_000]


def test_bad_arguments_name_themselves():
    sc = job_sc()
    with pytest.raises(ValueError, match=r"^arrival_per_hour:"):
        simulate_jobs(sc, "serial", 1, jobs=3)
    with pytest.raises(ValueError, match=r"^jobs:"):
        simulate_jobs(sc, "serial", 1, jobs=0, arrival_per_hour=3)
    with pytest.raises(ValueError, match=r"^mode:"):
        simulate_jobs(sc, "nope", 1, jobs=1, arrival_per_hour=3)
    with pytest.raises(ValueError, match=r"^media_concurrency:"):
        simulate_jobs(sc, "serial", 1, jobs=1, arrival_per_hour=3, media_concurrency=0)
    with pytest.raises(ValueError, match=r"^arrivals:"):
        simulate_jobs(sc, "serial", 1, arrivals_s=[-1.0])
    with pytest.raises(ValueError, match=r"^tenants:"):
        simulate_keygate_tenants(sc, "serial", 1, 0)
    with pytest.raises(ValueError, match=r"^mode:"):
        simulate_keygate_tenants(sc, "turbo", 1, 2)


def test_key_gate_is_fifo_by_job_arrival():
    """One slot; jobs arrive at 0, 1, 2 s. A freed slot goes to the earliest job waiting, so
    jobs 0 and 1 alternate and job 2 waits until both are done with the key."""
    n, C, A = 2, 10.0, 5.0
    sc = job_sc(n, C, A, 1.0, 0, quota_llm=Quota(max_inflight=1))
    run = simulate_jobs(sc, "serial", 1, arrivals_s=[0.0, 1.0, 2.0], key_gate=True)
    starts = [(e[0], e[1], e[2], e[7] / 1e6) for e in sorted(run.log, key=lambda e: e[7])]
    assert starts[:6] == [
        (0, 0, 0, 0.0),
        (1, 0, 0, 10.0),
        (0, 1, 0, 20.0),
        (1, 1, 0, 25.0),
        (0, 0, 1, 30.0),
        (1, 0, 1, 40.0),
    ]
    job2 = [s for s in starts if s[0] == 2]
    assert job2[0][3] == 2 * n * (C + A)  # after all of jobs 0 and 1's LLM work
    assert all(e[9] == 200 for e in run.log)  # never a 429


def test_key_gate_never_oversubscribes_the_key():
    n, C, A, T, k = 3, 10.0, 5.0, 1.0, 2
    sc = job_sc(n, C, A, T, k, quota_llm=Quota(max_inflight=2))
    run = simulate_jobs(sc, "pipelined", 3, arrivals_s=[0.0] * 4, key_gate=True)
    llm = [e for e in run.log if e[1] != 2]
    assert all(e[10] < 2 for e in llm) and all(e[9] == 200 for e in llm)
    # 4 jobs' LLM work on 2 slots takes at least work / slots
    assert max(e[8] for e in llm) / 1e6 >= 4 * n * (C + A) / 2
    assert run.summary()["key"]["llm"]["mean_in_flight"] > 0


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    k=st.integers(1, 4),
    c=st.integers(1, 6),
    mode=st.sampled_from(["serial", "pipelined", "hybrid"]),
    jobs=st.integers(1, 6),
)
def test_key_gate_holds_any_key_to_its_limit(seed, k, c, mode, jobs):
    """Whatever the jobs, arrivals and c: with the key-wide gate no attempt meets a full key
    (no in-flight 429), every key keeps at most its limit in flight, every job ends."""
    sc = load_scenario("burst-429").with_quota(llm_inflight=k, tts_inflight=k)
    run = simulate_jobs(sc, mode, c, jobs=jobs, arrival_per_hour=120.0, seed=seed, key_gate=True)
    assert all(e[11] != "inflight" and e[10] < k for e in run.log)
    assert len(run.records) == jobs
    for r in run.records:
        assert r.latency_s > 0 and r.scenes_ok + r.scenes_failed == sc.outlines


def test_without_the_gate_jobs_collide_and_fail():
    sc = server_scenario(load_scenario("server-key5"))
    off = simulate_jobs(sc, "pipelined", 3, jobs=60, arrival_per_hour=30, seed=2).summary()
    on = simulate_jobs(
        sc, "pipelined", 3, jobs=60, arrival_per_hour=30, seed=2, key_gate=True
    ).summary()
    assert off["http_429"] > 0 and on["http_429"] == 0
    assert on["failed_jobs"] < off["failed_jobs"]
    assert set(on["job_latency_s"]) >= {"p50", "p95", "p99"}


def test_keygate_tenants_fail_no_more_than_serial_plus_one_point():
    """Done when: 3 classrooms on a 3-in-flight key at c = 2..5, key-wide gate."""
    sc = load_scenario("default").with_quota(llm_inflight=3, tts_inflight=3)
    reps = 60
    serial = simulate(sc, RunConfig.of("serial", 1, tenants=3), reps=reps, seed=11, engine="simpy")
    p_serial = np.mean([r.scenes_failed > 0 for r in serial])
    for c in (2, 3, 4, 5):
        rs = [
            x
            for r in range(reps)
            for x in simulate_keygate_tenants(sc, "pipelined", c, 3, seed=11, run_id=r)
        ]
        assert np.mean([r.scenes_failed > 0 for r in rs]) <= p_serial + 0.01
        assert sum(r.http_429 for r in rs) == 0


# -- capacity closed forms -------------------------------------------------------------------


def test_work_and_saturation():
    sc = job_sc(4, 20.0, 5.0, 2.0, 3)
    w_llm, w_tts = job_work_s(sc)
    assert (w_llm, w_tts) == (4 * 25.0, 4 * 3 * 2.0)
    assert saturation_per_hour(w_llm, w_tts, 4, 5) == pytest.approx(5 / 100 * 3600)
    assert saturation_per_hour(w_llm, w_tts, 4, 5, 1) == pytest.approx(1 / 24 * 3600)
    assert saturation_per_hour(w_llm, w_tts, 4, 0, 0, rpm=60) == pytest.approx(60 * 60 / 8)
    assert saturation_per_hour(w_llm, w_tts, 4, 0) == math.inf


def test_mg1_closed_forms():
    # M/D/1: E[S^2] = S^2, so Wq = rho S / (2 (1 - rho))
    lam, s = 0.5, 1.0
    assert mg1_wait_s(lam, s, s * s) == pytest.approx(0.5 * 1.0 / (2 * 0.5))
    assert mg1_wait_s(1.0, 1.0, 1.0) == math.inf
    assert mg1_wait_quantile_s(0.04, 1.0, 1.0, 0.95) == 0.0  # rho <= 5 %: no wait at p95
    wq = mg1_wait_s(0.8, 1.0, 1.0)
    assert mg1_wait_quantile_s(0.8, 1.0, 1.0, 0.95) == pytest.approx(wq / 0.8 * math.log(16))


def test_second_moment():
    assert second_moment(Constant(3.0)) == pytest.approx(9.0)
    # exponential: E[X^2] = 2 mu^2; the midpoint grid misses a little of the far tail
    assert second_moment(Exponential(2.0)) == pytest.approx(8.0, rel=2e-3)


def test_key_load_of_constant_latencies():
    sc = job_sc(4, 20.0, 5.0, 2.0, 3)
    load = key_load(sc, 5, 0)
    assert load.service_mean_s == pytest.approx(100.0 / 5)
    assert load.service_second == pytest.approx((100.0 / 5) ** 2)
    assert load.utilisation(load.saturation_per_hour / 2) == pytest.approx(0.5)


def test_measured_saturation_matches_the_closed_form():
    """Constant latencies, key-wide gate, 40 jobs at once: the key carries at most its
    closed-form capacity, and (a work-conserving list schedule of chains, Graham's bound)
    ends within ``(1 - 1/K)·L`` of ``W/K``, ``L`` one job's chain of calls."""
    n, C, A = 2, 20.0, 10.0
    sc = job_sc(n, C, A, 0.5, 1, quota_llm=Quota(max_inflight=2))
    sat = key_load(sc, 2, 0).saturation_per_hour
    assert sat == pytest.approx(2 / (n * (C + A)) * 3600)
    over = simulate_jobs(sc, "serial", 1, arrivals_s=[0.0] * 40, key_gate=True)
    last_llm = max(e[8] for e in over.log if e[1] != 2) / 1e6
    work, chain = 40 * n * (C + A), n * (C + A)
    assert work / 2 <= last_llm <= work / 2 + (1 - 1 / 2) * chain
    assert 40 / last_llm * 3600 <= sat


@pytest.mark.parametrize(
    "name",
    [
        "sim.jobs",
        "sim.keygate",
        "sim.capacity",
        "runner.world.job_port",
        "runner.experiments.server_capacity",
        "runner.cli.server_jobs",
    ],
)
def test_public_names_exist(name):
    import importlib

    mod = importlib.import_module(name)
    assert all(hasattr(mod, attr) for attr in mod.__all__)
