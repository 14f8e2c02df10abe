"""The fast path under every upstream profile it supports equals the SimPy model run for run."""

import dataclasses

import numpy as np
import pandas as pd
import pytest

from sim import Quota, RunConfig, load_scenario, runs_frame, simulate
from sim.fast import delay_us, quota_free, simulate_fast
from sim.rules import RetryPolicy
from sim.upstream import AI_SDK_RETRY, CLIENT_RETRY, FOREGROUND_RETRY, NO_RETRY, ErrorShape
from tests.conftest import assert_same_run

CS = (0, 1, 2, 3, 10)
REPS = 20
FIXED_U = 0.73
# Retry-After honoured and a jitter: with Retry-After 1 s and a cap of 0.5 s the first
# retry falls through to the jittered exponential delay (1 s is not below 1 s), the later
# ones take the Retry-After (below 2 s, 4 s, ...)
RA_JITTER = RetryPolicy(
    max_retries=3, initial_delay_s=1.0, retry_after_cap_s=0.5, max_delay_s=3.0, jitter=0.5
)


def _llm_quota(p_fail: float) -> Quota:
    return Quota(
        p_429=p_fail,
        p_5xx=p_fail / 2,
        retry_after_s=1.0,
        p_reset=0.03,
        p_truncate=0.03,
        p_stall=0.02,
        stall_s=400.0,
    )


def _scenario(case: str, fg: bool, jitter_u: float | None):
    """A default classroom whose calls fail often enough that retries, failed scenes, failed
    first scenes and failed contents in the parallel modes all occur."""
    name, _, shape = case.partition("-")
    sc = load_scenario("default", upstream="pr788" if name == "custom" else name)
    changes: dict[str, object] = {"foreground_first_scene": fg, "jitter_u": jitter_u}
    if shape:
        changes["provider_errors"] = ErrorShape(shape)
    if name == "custom":
        changes.update(retry_llm=RA_JITTER, foreground_retry_llm=RA_JITTER)
    sc = sc.with_client(**changes)
    retries_tts = sc.client.retry_tts.max_retries > 0
    return sc.replace(
        # a budget of 5 retries needs a high failure rate to fail a content now and then
        quota_llm=_llm_quota({"pr788": 0.45, "pr1039": 0.45, "custom": 0.3}.get(name, 0.12)),
        # the routes before #788 do not retry clips: keep their failures rare
        quota_tts=Quota(p_429=0.08, p_5xx=0.05, retry_after_s=0.5, p_reset=0.02)
        if retries_tts
        else Quota(p_429=0.003, p_5xx=0.002, retry_after_s=0.5),
        request_timeout_s=300.0,
    )


# pr1039: client retries with every clip at c, the first scene's too (pr696 lies between)
CASES = ("pr788", "pr788-direct", "pr1039", "pr660-direct", "v0.2.1-direct", "custom-direct")


def _continued_after_failure(r) -> bool:
    """A scene added after a failed one: the loop skipped a failed content (parallel modes)."""
    return bool(r.scene_order) and any(f < max(r.scene_order) for f in r.failed_orders)


# a fixed jitter only matters where a policy has a jitter (pr788's, the custom one)
_JITTERED = [(case, None) for case in CASES] + [("pr788", FIXED_U), ("custom-direct", FIXED_U)]


@pytest.mark.parametrize("mode", ["serial", "hybrid", "pipelined"])
@pytest.mark.parametrize("fg", [True, False], ids=["fg", "nofg"])
@pytest.mark.parametrize(
    ("case", "jitter_u"),
    _JITTERED,
    ids=[f"{c}-{'drawn' if u is None else 'fixed'}" for c, u in _JITTERED],
)
def test_fast_equals_simpy_for_each_profile(case, jitter_u, fg, mode):
    sc = _scenario(case, fg, jitter_u)
    assert quota_free(sc)
    seen = []
    for c in CS:
        a = simulate(sc, RunConfig.of(mode, c), reps=REPS, seed=11, run_id=5, engine="simpy")
        b = simulate_fast(sc, RunConfig.of(mode, c), REPS, seed=11, first_run=5).results()
        assert len(a) == len(b) == REPS
        for x, y in zip(a, b, strict=True):
            assert_same_run(x, y, ignore=())
        seen.extend((c, r) for r in a)
    runs = [r for _, r in seen]
    # the cases the comparison must cover, so that it can fail
    assert sum(r.retries for r in runs) > 0
    assert sum(r.timeouts for r in runs) > 0
    assert any(r.status == "paused" for r in runs)
    assert any(r.status == "completed" for r in runs)
    assert any(r.status == "first_scene_failed" for r in runs) == fg
    if mode != "serial":
        assert any(_continued_after_failure(r) for c, r in seen if c > 1)
    if not sc.client.content_failure_pauses and mode != "serial":
        assert any(r.status == "completed" and r.scenes_failed for c, r in seen if c > 1)


def test_the_profiles_differ():
    """The cases above run different rules: the same draws give different runs."""
    runs = {
        case: simulate_fast(
            _scenario(case, True, None), RunConfig.of("pipelined", 3), 50, seed=2
        ).frame()
        for case in CASES
    }
    distinct = {tuple(df[["makespan_s", "status", "retries"]].itertuples()) for df in runs.values()}
    # pr788 ignores Retry-After: its direct shape runs as its route shape does
    assert len(distinct) == len(CASES) - 1


@pytest.mark.parametrize(
    ("case", "fg", "mode", "c"),
    [("pr788", True, "pipelined", 3), ("v0.2.1-direct", False, "hybrid", 2)],
)
def test_frame_equals_runs_frame(case, fg, mode, c):
    sc = _scenario(case, fg, None)
    fast = simulate_fast(sc, RunConfig.of(mode, c), 60, seed=3).frame()
    model = runs_frame(simulate(sc, RunConfig.of(mode, c), reps=60, seed=3, engine="simpy"))
    assert set(fast.columns) <= set(model.columns)
    assert "upstream" in fast.columns and (fast["upstream"] == sc.upstream).all()
    pd.testing.assert_frame_equal(fast, model[list(fast.columns)])


_POLICIES = [
    CLIENT_RETRY,
    FOREGROUND_RETRY,
    AI_SDK_RETRY,
    NO_RETRY,
    RA_JITTER,
    dataclasses.replace(CLIENT_RETRY, jitter=1.0, max_delay_s=0.0),
    RetryPolicy(initial_delay_s=0.3, backoff_factor=1.7, max_delay_s=2.5, jitter=0.37),
    RetryPolicy(initial_delay_s=0.0011, backoff_factor=3.0, retry_after_cap_s=0.0, jitter=0.9),
]


@pytest.mark.parametrize("policy", _POLICIES)
def test_vectorised_delay_equals_the_scalar_rule(policy):
    rng = np.random.default_rng(0)
    u = np.concatenate(
        [rng.random(2000), [0.0, 0.5, 1.0 - 2**-53, 1.0, -0.25, 1.5, 0.1, 0.2, 0.3, 0.7, 0.9]]
    )
    for k in range(8):
        for ra in (None, 0, 500_000, 1_000_000, 3_000_000, 90_000_000):
            got = delay_us(policy, k, ra, u)
            assert got.dtype == np.int64
            want = [policy.delay_us(k, ra, float(x)) for x in u]
            assert got.tolist() == want, (k, ra)


def test_route_retries_fall_back_to_simpy():
    for name in ("v0.2.1", "pr660"):
        sc = load_scenario("default", upstream=name)  # route shape, AI SDK retries in the route
        assert sc.client.route_policy(0, False).max_retries > 0
        assert not quota_free(sc)
        with pytest.raises(ValueError, match="route"):
            simulate_fast(sc, RunConfig.of("pipelined", 3), 10)
        assert quota_free(sc.with_client(provider_errors=ErrorShape.DIRECT))
    for name in ("pr788", "pr696", "pr1039"):  # the status shape: no retries in the route
        assert quota_free(load_scenario("default", upstream=name))


def test_the_jitter_draw_matters():
    """A fixed jitter and the keyed draws give different delays (the jitter path is used)."""
    drawn = simulate_fast(
        _scenario("pr788", True, None), RunConfig.of("pipelined", 3), 50, seed=2
    ).frame()
    fixed = simulate_fast(
        _scenario("pr788", True, FIXED_U), RunConfig.of("pipelined", 3), 50, seed=2
    ).frame()
    assert (drawn["retries"] == fixed["retries"]).all()
    assert (drawn["makespan_s"] != fixed["makespan_s"]).any()


@pytest.mark.parametrize("outlines", [1, 2, 3])
@pytest.mark.parametrize("fg", [True, False], ids=["fg", "nofg"])
@pytest.mark.parametrize("tts_c", [None, 1, 4])
def test_few_outlines_and_a_given_tts_concurrency(outlines, fg, tts_c):
    """One or no pending outline (the serial loop, or none after the foreground scene)."""
    sc = _scenario("pr788", fg, None).replace(outlines=outlines)
    for mode in ("serial", "pipelined"):
        a = simulate(
            sc, RunConfig.of(mode, 3, tts_concurrency=tts_c), reps=20, seed=4, engine="simpy"
        )
        b = simulate_fast(sc, RunConfig.of(mode, 3, tts_concurrency=tts_c), 20, seed=4).results()
        for x, y in zip(a, b, strict=True):
            assert_same_run(x, y, ignore=())
