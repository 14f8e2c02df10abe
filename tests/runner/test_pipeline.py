"""The real pipeline against the fake provider: closed forms, pairing, quotas, semantics."""

import asyncio

import pytest

from runner import ServerThread, create_app, run
from sim import Quota, RetryPolicy, RunConfig, load_scenario, simulate
from sim import analytic as an
from tests.conftest import assert_same_run, const_scenario, log_key
from tests.runner.conftest import wall_bound_s

MODES = ("serial", "hybrid", "pipelined")


def _closed_form(mode, n, c, C, S):
    if mode == "serial":
        return an.serial_makespan(n, C, S)
    if mode == "hybrid":
        return an.hybrid_makespan(n, c, C, S)
    return an.pipelined_makespan(n, c, C, S)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("n", "c", "k"), [(1, 3, 2), (4, 1, 2), (5, 2, 0), (6, 3, 3), (7, 10, 1)])
def test_virtual_clock_matches_closed_forms_exactly(mode, n, c, k):
    C, A, T = 21.0, 4.5, 1.25
    sc = const_scenario(n, C, A, T, clips=k)
    r = run(sc, RunConfig.of(mode, c, tts_concurrency=1, records=True), clock="virtual")[0]
    S = an.scene_tail(A, T, k)
    assert r.makespan_s == pytest.approx(_closed_form(mode, n, c, C, S), abs=1e-6)
    assert r.status == "completed" and r.scene_order == tuple(range(n))


@pytest.mark.wallclock
@pytest.mark.parametrize("mode", MODES)
def test_wall_clock_is_exact_plus_at_most_the_floor(mode, wall_floor_s):
    # a request never ends before its latency; each adds at most (a few times) the floor
    C, A, T, n, c, k = 60.0, 30.0, 20.0, 2, 2, 1
    sc = const_scenario(n, C, A, T, clips=k)
    r = run(
        sc, RunConfig.of(mode, c, tts_concurrency=1, records=True), clock="wall", time_scale=0.01
    )[0]
    expected = _closed_form(mode, n, c, C, an.scene_tail(A, T, k))
    bound = wall_bound_s(wall_floor_s, r.requests, 0.01)
    assert expected <= r.makespan_s <= expected + bound, (r.makespan_s, expected, bound)


@pytest.mark.wallclock
def test_same_seed_gives_same_latencies_in_every_mode_from_the_server_log():
    sc = load_scenario("default").replace(quota_llm=Quota(), quota_tts=Quota())
    lat = {}
    for mode in MODES:
        r = run(sc, RunConfig.of(mode, 3, records=True), seed=11, clock="wall", time_scale=0.002)[0]
        lat[mode] = {log_key(q): round((q.t_end_s - q.t_start_s) * 1e6) for q in r.requests_log}
    common = set(lat["serial"]) & set(lat["hybrid"]) & set(lat["pipelined"])
    assert len(common) >= 40
    for key in common:
        assert lat["serial"][key] == lat["hybrid"][key] == lat["pipelined"][key]
    # and another seed differs
    other = run(sc, RunConfig.of("serial", 1, records=True), seed=12, clock="virtual")[0]
    assert {log_key(q): round((q.t_end_s - q.t_start_s) * 1e6) for q in other.requests_log} != lat[
        "serial"
    ]


def _max_inflight(log, steps):
    reqs = [q for q in log if q.step in steps and q.status != 429]
    best = 0
    for q in reqs:
        t = q.t_start_s
        best = max(best, sum(1 for x in reqs if x.t_start_s <= t < x.t_end_s))
    return best


@pytest.mark.wallclock
@pytest.mark.parametrize(
    ("mode", "q", "c", "expect_429"),
    [
        ("hybrid", 2, 3, True),
        ("hybrid", 3, 3, False),
        ("pipelined", 2, 3, True),
        ("pipelined", 4, 3, False),
    ],
)
def test_quota_below_concurrency_gives_429s_and_retries(mode, q, c, expect_429):
    sc = const_scenario(6, 20.0, 5.0, 2.0, clips=2).with_quota(llm_inflight=q, tts_inflight=c)
    # 1 model s = 20 ms: the route's 1-s retries and the 20-s calls keep their order on a
    # loaded 2-core machine (at 5 ms a second's retry took up to 5 model s there)
    r = run(sc, RunConfig.of(mode, c, records=True), clock="wall", time_scale=0.02)[0]
    log429 = [x for x in r.requests_log if x.status == 429]
    assert bool(log429) == expect_429
    assert (r.retries > 0) == expect_429 and r.http_429 == len(log429)
    retried = [x for x in r.requests_log if x.attempt > 0]
    assert bool(retried) == expect_429
    assert r.status == "completed"


@pytest.mark.wallclock
@pytest.mark.parametrize("mode", ["hybrid", "pipelined"])
@pytest.mark.parametrize("c", [2, 3, 5])
def test_concurrency_never_exceeds_the_cap_in_the_server_log(mode, c):
    sc = const_scenario(8, 20.0, 3.0, 1.0, clips=4).replace(
        content=load_scenario("default").content
    )
    r = run(sc, RunConfig.of(mode, c, records=True), seed=2, clock="wall", time_scale=0.002)[0]
    assert _max_inflight(r.requests_log, {"content"}) == c
    assert _max_inflight(r.requests_log, {"tts"}) <= c
    assert _max_inflight(r.requests_log, {"content", "actions"}) <= c + 1


def test_tts_concurrency_defaults_to_concurrency_and_can_be_set():
    sc = const_scenario(2, 5.0, 1.0, 1.0, clips=6)
    assert (
        run(sc, RunConfig.of("pipelined", 4, records=True), clock="virtual")[0].tts_concurrency == 4
    )
    one = run(sc, RunConfig.of("pipelined", 4, tts_concurrency=1, records=True), clock="virtual")[0]
    assert one.tts_concurrency == 1
    assert _max_inflight(one.requests_log, {"tts"}) == 1
    assert run(sc, RunConfig.of("serial", 4, records=True), clock="virtual")[0].tts_concurrency == 1


def _with_server(sc, fn, **server_kw):
    app = create_app(sc, 0, time_scale=0.005, **server_kw)
    with ServerThread(app) as srv:
        return fn(app.state.fake, srv.base_url)


@pytest.mark.wallclock
def test_previous_speeches_thread_from_scene_to_scene():
    sc = const_scenario(4, 10.0, 2.0, 1.0, clips=2)

    def go(fake, url):
        r = run(
            sc,
            RunConfig.of("pipelined", 3, records=True),
            clock="wall",
            base_url=url,
            time_scale=0.005,
        )[0]
        return r, dict(fake.actions_inputs)

    r, inputs = _with_server(sc, go)
    assert r.scene_order == (0, 1, 2, 3)
    assert inputs[(0, 0)] == []
    for i in range(1, 4):
        assert len(inputs[(0, i)]) == 2
        assert all(s.startswith(f"[o{i - 1} s") for s in inputs[(0, i)])


def _forced(sc, mode, fail, c=3, **kw):
    def go(fake, url):
        fake.provider.force_status.update(fail)
        cfg = RunConfig.of(mode, c, records=True, **kw)
        return run(sc, cfg, clock="wall", base_url=url, time_scale=0.005)[0]

    return _with_server(sc, go)


@pytest.mark.wallclock
def test_content_failure_pauses_serial_and_is_skipped_in_parallel_modes():
    sc = const_scenario(4, 10.0, 2.0, 1.0, clips=1, retry_llm=RetryPolicy(max_retries=0))
    s = _forced(sc, "serial", {(0, 1): 500})
    assert (s.status, s.scene_order, s.failed_orders) == ("paused", (0,), (1,))
    for mode in ("hybrid", "pipelined"):
        p = _forced(sc, mode, {(0, 1): 500})
        assert (p.status, p.scene_order, p.failed_orders) == ("completed", (0, 2, 3), (1,))


@pytest.mark.wallclock
@pytest.mark.parametrize("mode", MODES)
def test_actions_failure_pauses_in_every_mode(mode):
    sc = const_scenario(
        4, 10.0, 2.0, 1.0, clips=1, retry_llm=RetryPolicy(max_retries=1, initial_delay_s=0.5)
    )
    r = _forced(sc, mode, {(1, 2): 503})
    assert (r.status, r.scene_order, r.failed_orders) == ("paused", (0, 1), (2,))
    assert r.http_5xx == 2 and r.retries == 1  # the route's retry was spent first


@pytest.mark.wallclock
@pytest.mark.parametrize("mode", MODES)
def test_tts_failure_pauses_and_tries_every_clip_without_retry(mode):
    sc = const_scenario(3, 10.0, 2.0, 1.0, clips=3)
    r = _forced(sc, mode, {(2, 1, 0): 500}, tts_concurrency=1)
    assert (r.status, r.scene_order, r.failed_orders) == ("paused", (0,), (1,))
    clips = [q for q in r.requests_log if q.step == "tts" and q.order == 1]
    assert sorted(q.clip for q in clips) == [0, 1, 2]  # every clip was tried, none retried
    assert r.retries == 0


def _first_end_after(log, t_s):
    """The earliest end of a request in flight at ``t_s`` (arrived before it, ending after)."""
    return min(q.t_end_s for q in log if q.t_arrival_s < t_s < q.t_end_s)


@pytest.mark.wallclock
@pytest.mark.parametrize("clock", ["virtual", "wall"])
def test_stop_aborts_in_flight_requests_and_pauses(clock):
    # long actions calls: a stop at 47 model s lands inside scene 2's actions (virtual clock)
    sc = const_scenario(6, 20.0, 10.0, 2.0, clips=2)
    cfg = RunConfig.of("pipelined", 3, records=True)
    stop_s, scale = 47.0, (1.0 if clock == "virtual" else 0.05)
    full = run(sc, cfg, clock="virtual")[0]
    first_end_s = _first_end_after(full.requests_log, stop_s)
    assert first_end_s - stop_s >= 5.0  # the wall-clock run has >= 5 model s (250 ms) of slack

    async def stop_soon(pipe):
        await asyncio.sleep(stop_s * scale)
        pipe.stop()

    r = run(sc, cfg, clock=clock, time_scale=scale if clock == "wall" else None, hook=stop_soon)[0]
    assert r.status == "paused"
    assert r.scene_order == tuple(o for o, t in enumerate(full.scene_ready_s) if t < stop_s)
    assert r.failed_orders == ()  # an abort is not a failure
    assert stop_s <= r.makespan_s < first_end_s  # returned at once, not after an in-flight call


@pytest.mark.wallclock
def test_concurrency_is_read_from_the_server_when_not_given(wall_floor_s):
    sc = const_scenario(4, 20.0, 5.0, 2.0, clips=1)

    def go(fake, url):
        return run(
            sc,
            RunConfig.of("pipelined", None, records=True),
            clock="wall",
            base_url=url,
            time_scale=0.005,
        )[0]

    r = _with_server(sc, go, parallel_scene_concurrency="15")
    assert r.concurrency == 10  # clamped like upstream
    r = _with_server(sc, go, parallel_scene_concurrency="nonsense")
    assert r.concurrency == 0
    exact = an.serial_makespan(4, 20.0, an.scene_tail(5.0, 2.0, 1))  # 108 s
    assert exact <= r.makespan_s <= exact + wall_bound_s(wall_floor_s, r.requests, 0.005)


@pytest.mark.parametrize("name", ["default", "low-quota", "burst-429"])
@pytest.mark.parametrize("mode", MODES)
def test_virtual_real_pipeline_equals_the_model_run_for_run(name, mode):
    sc = load_scenario(name)
    for rid in range(3):
        for c in (1, 3):
            real = run(
                sc, RunConfig.of(mode, c, records=True), seed=4, run_id=rid, clock="virtual"
            )[0]
            model = simulate(sc, RunConfig.of(mode, c, records=True), seed=4, run_id=rid)[0]
            assert_same_run(real, model)
            assert sorted(real.requests_log, key=log_key) == sorted(model.requests_log, key=log_key)
