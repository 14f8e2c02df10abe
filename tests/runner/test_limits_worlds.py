"""Issue 12 in both worlds: token buckets, shared capacity, presets; equal event for event
under the virtual clock, and the fake provider's 429 headers."""

import asyncio
from fractions import Fraction

import pytest

from runner.experiments.validate import first_divergence, validate_exact
from runner.world.fake_provider import create_app
from runner.world.run import _in_virtual_world, run
from sim import RunConfig, simulate
from sim.draws import Draws
from sim.presets import apply_preset
from sim.scenario import load_scenario
from sim.upstream import ErrorShape


def _both(sc, mode, c, run_id=0):
    model = simulate(sc, RunConfig.of(mode, c, records=True), seed=2, run_id=run_id)[0]
    real = run(sc, RunConfig.of(mode, c, records=True), seed=2, run_id=run_id, clock="virtual")[0]
    return model, real


@pytest.mark.parametrize(
    ("name", "preset"),
    [
        ("output-tpm", None),
        ("shared-flat", None),
        ("shared-vllm", None),
        ("slow-not-429", None),
        ("default", "ollama-default"),
        ("default", "anthropic-tier1"),
    ],
)
def test_the_real_pipeline_equals_the_model_event_for_event(name, preset):
    sc = load_scenario(name)
    if preset:
        sc = apply_preset(sc, preset)
    for mode, c in (("serial", 1), ("hybrid", 4), ("pipelined", 3)):
        model, real = _both(sc, mode, c)
        assert first_divergence(real, model) is None, (name, preset, mode, c)


def test_validate_exact_covers_the_new_scenarios():
    scs = [load_scenario(n) for n in ("output-tpm", "shared-vllm", "slow-not-429")]
    rep = validate_exact(scs, quotas=[None, 2], concurrencies=(3,), runs=1, seed=4)
    assert rep.ok, rep.divergences
    assert rep.http_429 > 0 and rep.cells == 3 * 2 * 3


def _replay_otpm(sc, log, seed, cid):
    """Re-derive every LLM decision from the keyed tokens with exact fractions: 429 iff the
    output bucket (otpm/min, continuous refill, unused output given back at the end) holds
    fewer tokens than the call's max_tokens."""
    q = sc.quota_llm
    d = Draws(sc, seed, cid, cid + 1)
    rate = Fraction(q.otpm, 60_000_000)
    level, last = Fraction(q.otpm), 0
    refunds = []  # (end µs, tokens)
    for r in log:
        if r.step == "tts":
            continue
        t = round(r.t_start_s * 1e6)
        step = 0 if r.step == "content" else 1
        for end, n in sorted(e for e in refunds if e[0] <= t):
            level = min(Fraction(q.otpm), level + (end - last) * rate) + n
            level, last = min(Fraction(q.otpm), level), end
            refunds.remove((end, n))
        level, last = min(Fraction(q.otpm), level + (t - last) * rate), t
        need = sc.step_tokens(step).max_tokens
        if level < need:
            assert (r.status, r.reason) == (429, "otpm"), r
            continue
        assert r.status != 429, r
        level -= need
        used = int(d.tokens_out(step, r.attempt)[0, r.order])
        refunds.append((round(r.t_end_s * 1e6), need - used))


@pytest.mark.parametrize(("mode", "c"), [("pipelined", 3), ("hybrid", 5), ("pipelined", 10)])
def test_an_output_tpm_bucket_answers_429_exactly_when_it_cannot_cover_max_tokens(mode, c):
    sc = load_scenario("output-tpm")
    model, real = _both(sc, mode, c)
    assert first_divergence(real, model) is None
    assert model.http_429 > 0
    log = sorted(model.requests_log, key=lambda r: (r.t_start_s,))
    # decisions at one instant happen in arrival order; the log keeps the decision order
    _replay_otpm(sc, list(model.requests_log), 2, model.classroom)
    assert len(log) == len(real.requests_log)


def _post_contents(sc, orders):
    app = create_app(sc, 0, virtual=True)
    outlines = [{"order": i, "type": "slide", "title": f"s{i}"} for i in range(sc.outlines)]

    async def body(client):
        async def one(i):
            return await client.post(
                "/api/generate/scene-content",
                json={"outline": outlines[i], "allOutlines": outlines, "stageId": "sb-0"},
                headers={"x-api-key": "k"},
            )

        return await asyncio.gather(*(one(i) for i in orders))

    return _in_virtual_world(app, body)


def test_a_token_429_carries_retry_after_and_openai_style_headers():
    base = load_scenario("output-tpm").with_client(provider_errors=ErrorShape.DIRECT)
    q = base.quota_llm.__class__(rpm=60, otpm=5000, retry_after_s=1.0)
    sc = base.replace(quota_llm=q)
    ok, limited = _post_contents(sc, [0, 1])
    assert ok.status_code == 200 and limited.status_code == 429
    h = limited.headers
    # content 0 took 4096 of 5000 at t = 0: 904 left; 3192 more at 5000/60 per second
    wait_us = -(-(4096 - 904) * 60_000_000 // 5000)  # 38,304,000 µs
    assert h["retry-after-ms"] == str(-(-wait_us // 1000))
    assert h["retry-after"] == str(-(-wait_us // 1_000_000))
    assert h["x-ratelimit-limit-tokens"] == "5000"
    assert h["x-ratelimit-remaining-tokens"] == "904"
    assert h["x-ratelimit-reset-tokens"] == "49.152s"  # 4096 tokens back at 5000/min
    assert h["x-ratelimit-limit-requests"] == "60"
    assert h["x-ratelimit-remaining-requests"] == "59"  # one spent, none refilled at t = 0
    assert h["x-ratelimit-reset-requests"] == "1s"


def test_in_the_route_shape_the_route_answers_500_with_the_count_header():
    sc = load_scenario("output-tpm").with_client(provider_errors=ErrorShape.ROUTE)
    sc = sc.replace(quota_llm=sc.quota_llm.__class__(otpm=5000))
    _, limited = _post_contents(sc, [0, 1])
    assert limited.status_code == 500
    assert limited.headers["x-scenebench-counts"].split(",")[1] == "1"  # one 429 behind it
    assert "x-ratelimit-limit-tokens" not in limited.headers


def test_in_the_status_shape_the_route_passes_the_429_through_without_its_headers():
    # since #788 (the default profile): llmApiError answers the provider's 429 as 429
    # RATE_LIMITED, and forwards none of its headers
    sc = load_scenario("output-tpm")
    assert sc.client.provider_errors == ErrorShape.STATUS
    sc = sc.replace(quota_llm=sc.quota_llm.__class__(otpm=5000))
    _, limited = _post_contents(sc, [0, 1])
    assert (limited.status_code, limited.json()["errorCode"]) == (429, "RATE_LIMITED")
    assert limited.headers["x-scenebench-counts"].split(",")[1] == "1"
    assert "retry-after" not in limited.headers
    assert "x-ratelimit-limit-tokens" not in limited.headers


def test_a_full_queue_answers_its_status_and_a_held_request_answers_after_the_hold():
    base = load_scenario("default").with_client(provider_errors=ErrorShape.DIRECT)
    q = base.quota_llm.__class__(parallel=1, max_queue=1, max_hold_s=10.0, queue_status=503)
    sc = base.replace(quota_llm=q)
    first, second, third = _post_contents(sc, [0, 1, 2])
    assert first.status_code == 200
    assert second.status_code == 503  # waited 10 s for the first (~26 s), then let go
    assert third.status_code == 503  # the queue (1) was full: refused at once


def test_per_second_rpm_refuses_the_second_request_of_a_second_in_both_worlds():
    base = load_scenario("default")
    sc = base.replace(quota_llm=base.quota_llm.__class__(rpm=60, rpm_per_second=True))
    model, real = _both(sc, "pipelined", 3)
    assert first_divergence(real, model) is None
    rps = [r for r in model.requests_log if r.reason == "rps"]
    assert rps and all(r.status == 429 for r in rps)
    # at most ceil(60/60) = 1 admitted LLM request per whole second
    admitted = [int(r.t_start_s) for r in model.requests_log if r.step != "tts" and r.status != 429]
    assert len(admitted) == len(set(admitted))
