"""Upstream profiles in the real world: the pipeline and the fake provider (virtual clock)."""

import asyncio
import itertools
import json

import httpx
import pytest

from runner.cli.commands import main
from runner.world.fake_provider import create_app
from runner.world.run import run
from runner.world.wire import COUNTS_HEADER, audio_id, parse_audio_id
from sim import Quota, RunConfig, load_scenario, profile, simulate
from sim.upstream import ErrorShape
from tests.conftest import assert_same_run, const_scenario, log_key


def _pr788(sc, **client):
    return sc.replace(client=profile("pr788")).with_client(**client)


def _gaps(reqs):
    return [b.t_arrival_s - a.t_arrival_s for a, b in itertools.pairwise(reqs)]


@pytest.mark.parametrize("retry_after_s", [1.0, 90.0])
def test_every_llm_attempt_429_six_attempts_at_jittered_gaps_retry_after_ignored(retry_after_s):
    q = Quota(p_429=1.0, retry_after_s=retry_after_s)
    sc = _pr788(const_scenario(3, 25.0, 8.0, 2.0, quota_llm=q), foreground_first_scene=False)
    r = run(sc, RunConfig.of("pipelined", 3, records=True), clock="virtual")[0]
    first = [x for x in r.requests_log if x.step == "content" and x.order == 0]
    assert [x.attempt for x in first] == list(range(6)) and first[0].t_arrival_s == 0.0
    for n, g in enumerate(_gaps(first)):
        base = min(16.0, 2.0**n)
        assert base - 1e-6 <= g <= min(16.0, 1.2 * base) + 1e-6
    # in parallel mode every content fails and is skipped; the run ends paused (#660)
    assert r.status == "paused" and r.failed_orders == (0, 1, 2)


def test_every_tts_attempt_429_six_attempts_per_clip():
    sc = _pr788(const_scenario(2, 25.0, 8.0, 2.0, clips=3, quota_tts=Quota(p_429=1.0)))
    sc = sc.with_client(foreground_first_scene=False)
    r = run(sc, RunConfig.of("serial", 1, records=True), clock="virtual")[0]
    tts = [x for x in r.requests_log if x.step == "tts"]
    per = {k: [x.attempt for x in g] for k, g in itertools.groupby(tts, lambda x: x.clip)}
    assert per == {0: list(range(6)), 1: list(range(6)), 2: list(range(6))}
    assert r.status == "paused" and r.failed_orders == (0,)


def test_a_failed_foreground_scene_ends_the_run_before_the_loop():
    sc = _pr788(const_scenario(4, 25.0, 8.0, 2.0, quota_llm=Quota(p_429=1.0)))
    r = run(sc, RunConfig.of("pipelined", 3, records=True), clock="virtual")[0]
    content = [x for x in r.requests_log if x.step == "content"]
    assert [(x.order, x.attempt) for x in content] == [(0, 0), (0, 1), (0, 2)]
    g = _gaps(content)
    assert 1.0 <= g[0] <= 1.2 and 2.0 <= g[1] <= 2.4
    assert r.status == "first_scene_failed" and r.scenes_ok == 0
    assert_same_run(
        r, simulate(sc, RunConfig.of("pipelined", 3, records=True))[0], ignore=("world",)
    )


def test_time_to_first_scene_is_the_foreground_scene_whatever_c():
    sc = load_scenario("default", upstream="pr788")
    runs = [
        run(sc, RunConfig.of("pipelined", c, records=True), seed=2, clock="virtual")[0]
        for c in (1, 3, 10)
    ]
    assert len({r.ttfs_s for r in runs}) == 1
    first = [x for x in runs[1].requests_log if x.order == 0]
    # content, actions and the clips one after another: the scene's own latencies add up
    assert runs[1].ttfs_s == pytest.approx(sum(x.t_end_s - x.t_start_s for x in first))
    assert all(x.t_arrival_s < runs[1].ttfs_s for x in first)
    later = [x for x in runs[1].requests_log if x.order > 0]
    assert min(x.t_arrival_s for x in later) == pytest.approx(runs[1].ttfs_s)


@pytest.mark.parametrize("name", ["v0.2.1", "pr660", "pr788", "pr696", "pr1039"])
def test_every_profile_agrees_exactly_between_the_worlds_on_a_tight_key(name):
    sc = load_scenario("burst-429", upstream=name).with_quota(llm_inflight=2, tts_inflight=2)
    for rid in range(3):
        real = run(
            sc, RunConfig.of("pipelined", 3, records=True), seed=7, run_id=rid, clock="virtual"
        )[0]
        model = simulate(sc, RunConfig.of("pipelined", 3, records=True), seed=7, run_id=rid)[0]
        assert_same_run(real, model)
        assert real.upstream == name
        assert sorted(real.requests_log, key=log_key) == sorted(model.requests_log, key=log_key)


def _post(app, path, body, headers=None):
    async def go():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            return await (c.get(path) if body is None else c.post(path, json=body, headers=headers))

    return asyncio.run(go())


@pytest.mark.parametrize(("raw", "want"), [("3abc", 3), ("1e1", 1), ("inf", 0), ("15", 10)])
def test_server_providers_serves_the_knob_as_upstreams_server_parses_it(raw, want):
    app = create_app(const_scenario(), parallel_scene_concurrency=raw)
    r = _post(app, "/api/server-providers", None)
    assert r.json()["generation"]["parallelSceneConcurrency"] == want


def test_the_provider_accepts_upstreams_audio_ids():
    assert parse_audio_id(audio_id(4, "sb-7-o4-s2")) == (7, 4, 2)
    assert parse_audio_id("tts_sb-7-o4-s2") == (7, 4, 2)  # scenebench's older form
    cid, order, clip = parse_audio_id("tts_s3_some-upstream-action")
    assert (order, clip) == (3, 0) and cid == parse_audio_id("tts_s3_some-upstream-action")[0]
    app = create_app(const_scenario())
    body = {"text": "hi", "audioId": "tts_s2_sb-5-o2-s1", "ttsProviderId": "x", "ttsVoice": "v"}
    r = _post(app, "/api/generate/tts", body)
    assert r.status_code == 200 and r.json()["audioId"] == body["audioId"]
    assert app.state.fake.log_rows()[0][:4] == (5, 2, 2, 1)


def _content_body():
    outline = {"id": "o", "type": "slide", "title": "t", "order": 0}
    return {"outline": outline, "allOutlines": [outline], "stageId": "sb-0"}


def test_the_route_shape_answers_500_after_the_routes_own_retries():
    # v0.2.1's route retries a 429 like the AI SDK (2 retries honouring retry-after 1 s),
    # then answers 500 GENERATION_FAILED; the counts header says what the provider did.
    sc = load_scenario("default", upstream="v0.2.1").replace(
        quota_llm=Quota(p_429=1.0, retry_after_s=1.0)
    )
    app = create_app(sc)
    r = _post(app, "/api/generate/scene-content", _content_body())
    assert r.status_code == 500 and r.json()["errorCode"] == "GENERATION_FAILED"
    assert r.headers[COUNTS_HEADER] == "3,3,0,2,429"
    direct = sc.with_client(provider_errors=ErrorShape.DIRECT)
    r = _post(create_app(direct), "/api/generate/scene-content", _content_body())
    assert r.status_code == 429 and r.headers["retry-after"] == "1"


@pytest.mark.parametrize(
    ("quota", "path", "status", "code"),
    [
        (Quota(p_429=1.0), "/api/generate/scene-content", 429, "RATE_LIMITED"),
        (Quota(p_5xx=1.0, status_5xx=503), "/api/generate/scene-content", 503, "UPSTREAM_ERROR"),
        (Quota(p_5xx=1.0, status_5xx=401), "/api/generate/scene-content", 401, "UPSTREAM_ERROR"),
        (Quota(p_429=1.0), "/api/generate/tts", 429, "RATE_LIMITED"),
        (Quota(p_5xx=1.0, status_5xx=503), "/api/generate/tts", 500, "GENERATION_FAILED"),
    ],
)
def test_since_788_the_routes_pass_the_providers_status_through(quota, path, status, code):
    # llmApiError (#788): an LLM route answers the provider's status, without Retry-After;
    # the TTS route answers a 429 as 429 (#644) and anything else as 500
    tts = path.endswith("tts")
    sc = load_scenario("default", upstream="pr788").replace(
        **{"quota_tts" if tts else "quota_llm": quota}
    )
    body = {"text": "hi", "audioId": "tts_s0_a", "ttsProviderId": "x", "ttsVoice": "v"}
    # a 5xx answers after the call's latency (the provider did work): 1 model s = 1 ms here
    app = create_app(sc, time_scale=0.001)
    r = _post(app, path, body if tts else _content_body())
    assert (r.status_code, r.json()["errorCode"]) == (status, code)
    assert "retry-after" not in r.headers
    assert r.headers[COUNTS_HEADER].split(",")[0] == "1"  # one provider attempt: no route retry


@pytest.mark.parametrize(("retry_after_s", "times"), [(None, [0, 2, 6]), (1.0, [0, 1, 2])])
def test_route_retries_before_788_follow_the_ai_sdk(retry_after_s, times):
    q = Quota(p_429=1.0, retry_after_s=retry_after_s)
    sc = const_scenario(2, 25.0, 8.0, 2.0, quota_llm=q).replace(client=profile("pr660"))
    r = run(sc, RunConfig.of("serial", 1, records=True), clock="virtual")[0]
    att = [x.t_arrival_s for x in r.requests_log if x.step == "content"]
    assert att == times
    assert r.status == "first_scene_failed" and r.http_429 == 3 and r.retries == 2


def test_run_names_the_profile_and_takes_the_upstream_flag(capsys):
    assert main(["run", "--clock", "virtual", "--upstream", "pr660", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["upstream"] == "pr660"
    assert main(["run", "--mode", "pipelined", "--clock", "virtual", "--concurrency", "inf"]) == 0
    txt = capsys.readouterr().out
    assert "upstream pr696" in txt and "concurrency 0" in txt
