"""The providers' own APIs on the fake provider (issue 21), on the wire: shapes, keyed draws,
timing under the virtual clock, one quota per key across old routes and new endpoints."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import math
import wave
from typing import Any

import httpx
import pytest

from runner.world.error_shapes import rfc3339
from runner.world.fake_provider import create_app
from runner.world.provider_api import CALL_HEADER, SAMPLE_RATE, parse_call, stream_times_us
from runner.world.run import _in_virtual_world
from sim import Quota
from sim.draws import Draws
from sim.scenario import load_scenario
from tests.conftest import const_scenario

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}]}
SPEECH = {"model": "tts-1", "voice": "alloy", "input": "Hello class."}


def _run(app: Any, calls: list[tuple[str, dict[str, Any], dict[str, str]]]) -> list[Any]:
    """Post ``calls`` one after another on the virtual clock; each answer with its virtual
    start and end seconds."""

    async def body(c: httpx.AsyncClient) -> list[Any]:
        loop = asyncio.get_running_loop()
        out = []
        for path, js, headers in calls:
            t0 = loop.time()
            r = await c.post(path, json=js, headers=headers)
            out.append((r, t0, loop.time()))
        return out

    result: list[Any] = _in_virtual_world(app, body)
    return result


def _bearer(key: str, call: str | None = None) -> dict[str, str]:
    h = {"authorization": f"Bearer {key}"}
    if call is not None:
        h[CALL_HEADER] = call
    return h


def test_call_header_parses_and_rejects_malformed():
    assert parse_call("content/5/2/0/1") == ("content", 5, 2, 0, 1)
    assert parse_call("tts/5/2/3") == ("tts", 5, 2, 3, None)
    for bad in (None, "", "nope/1/2/3", "content/1/2", "content/a/2/0", "tts/1/2/3/4/5"):
        assert parse_call(bad) is None


def test_chat_and_speech_take_the_models_keyed_latency_and_audio_duration():
    sc = load_scenario("default")
    app = create_app(sc, 7, virtual=True)
    (chat, c0, c1), (sp, s0, s1) = _run(
        app,
        [
            ("/v1/chat/completions", CHAT, _bearer("k", "content/5/2/0/1")),
            ("/v1/audio/speech", SPEECH, _bearer("k", "tts/5/2/1/0")),
        ],
    )
    d = Draws(sc, 7, 5, 6)
    assert chat.status_code == 200 and sp.status_code == 200
    assert round((c1 - c0) * 1e6) == d.latency_us(0, 1)[0, 2]
    assert round((s1 - s0) * 1e6) == d.latency_us(2, 0)[0, d.column(2, 2, 1)]
    body = chat.json()
    assert body["object"] == "chat.completion" and body["model"] == "gpt-4o-mini"
    assert body["choices"][0]["message"]["role"] == "assistant"
    assert body["choices"][0]["finish_reason"] == "stop"
    u = body["usage"]
    assert u["total_tokens"] == u["prompt_tokens"] + u["completion_tokens"]
    assert sp.headers["content-type"] == "audio/wav"
    with wave.open(io.BytesIO(sp.content)) as w:
        fmt = (w.getframerate(), w.getnchannels(), w.getsampwidth())
        frames = w.getnframes()
    audio_us = int(d.audio_us()[0, d.column(2, 2, 1)])
    assert fmt == (SAMPLE_RATE, 1, 2)
    assert frames == round(audio_us * SAMPLE_RATE / 1e6)  # whole frames
    rows = app.state.fake.log_rows(5)
    assert [r[:5] for r in rows] == [(5, 0, 2, 0, 1), (5, 2, 2, 1, 0)]


def test_usage_is_the_drawn_tokens_the_buckets_charge():
    sc = load_scenario("output-tpm")
    app = create_app(sc, 3, virtual=True)
    [(r, _, _)] = _run(app, [("/v1/chat/completions", CHAT, _bearer("k", "content/1/0/0/0"))])
    d = Draws(sc, 3, 1, 2)
    u = r.json()["usage"]
    assert (u["prompt_tokens"], u["completion_tokens"]) == (
        int(d.tokens_in(0)[0, 0]),
        int(d.tokens_out(0, 0)[0, 0]),
    )


def _sse_events(raw: str) -> list[tuple[str | None, str]]:
    out = []
    for frame in raw.split("\n\n"):
        if not frame.strip():
            continue
        event = None
        data = ""
        for line in frame.split("\n"):
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                data = line[6:]
        out.append((event, data))
    return out


def _asgi_stream(app: Any, path: str, js: dict[str, Any], headers: dict[str, str]) -> Any:
    """Call the app directly on the virtual clock (httpx's ASGI transport buffers a whole
    answer): every body part with the virtual time it was sent."""

    async def main() -> list[tuple[float, bytes]]:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        raw = json.dumps(js).encode()
        heads = [(k.encode(), v.encode()) for k, v in headers.items()]
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "headers": [(b"content-type", b"application/json"), *heads],
            "client": ("127.0.0.1", 1),
            "server": ("127.0.0.1", 80),
        }
        sent: list[tuple[float, bytes]] = []
        done = asyncio.Event()
        first = [True]

        async def receive() -> dict[str, Any]:
            if first[0]:
                first[0] = False
                return {"type": "http.request", "body": raw, "more_body": False}
            await done.wait()
            return {"type": "http.disconnect"}

        async def send(msg: dict[str, Any]) -> None:
            if msg["type"] == "http.response.body":
                sent.append((loop.time() - t0, msg.get("body", b"")))
                if not msg.get("more_body", False):
                    done.set()

        await app(scope, receive, send)
        return sent

    import looptime

    loop = looptime.new_event_loop(start=0.0, resolution=1e-6, noop_cycles=0)
    try:
        return loop.run_until_complete(main())
    finally:
        loop.close()


def test_openai_stream_paces_chunks_and_ends_at_the_drawn_latency():
    app = create_app(const_scenario(content=2.0), 0, virtual=True)
    js = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
    parts = _asgi_stream(app, "/v1/chat/completions", js, _bearer("k"))
    frames = _sse_events(b"".join(b for _, b in parts).decode())
    assert all(ev is None for ev, _ in frames) and frames[-1][1] == "[DONE]"
    chunks = [json.loads(d) for _, d in frames[:-1]]
    content = [ch for ch in chunks if ch["choices"] and ch["choices"][0]["delta"].get("content")]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] > 0
    assert all(ch["usage"] is None for ch in chunks[:-1])
    # no output_tps: the first token at L/4 = 0.5 s, the last at L = 2 s, evenly between
    expect = [t / 1e6 for t in stream_times_us(2_000_000, len(content), 500_000)]
    got = [t for t, b in parts if b"content" in b and b'"choices":[]' not in b]
    assert got[: len(expect)] == pytest.approx(expect, abs=1e-6)
    assert expect[0] == 0.5 and expect[-1] == 2.0


def test_anthropic_stream_events_in_order_with_the_drawn_ttft():
    """With output_tps the first token comes at the drawn time to first token."""
    sc = load_scenario("output-tpm")
    app = create_app(sc, 3, virtual=True)
    js = {**CHAT, "max_tokens": 100, "stream": True}
    parts = _asgi_stream(
        app, "/v1/messages", js, {"x-api-key": "k", CALL_HEADER: "content/1/0/0/0"}
    )
    frames = _sse_events(b"".join(b for _, b in parts).decode())
    names = [ev for ev, _ in frames]
    assert names[:2] == ["message_start", "content_block_start"]
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert set(names[2:-3]) == {"content_block_delta"}
    d = Draws(sc, 3, 1, 2)
    out = int(d.tokens_out(0, 0)[0, 0])
    lat = int(d.latency_us(0, 0)[0, 0])
    spec = sc.step_tokens(0)
    ttft = lat - round(out * (1_000_000 / spec.output_tps))
    assert parts[0][0] == pytest.approx(ttft / 1e6, abs=1e-6)
    assert parts[-1][0] == pytest.approx(lat / 1e6, abs=1e-6)
    usage = json.loads(frames[-2][1])["usage"]
    assert usage == {"output_tokens": out}


def test_stream_times_split_the_latency_at_the_drawn_ttft():
    assert stream_times_us(1_000, 5, 200) == [200, 400, 600, 800, 1_000]
    assert stream_times_us(1_000, 1, 200) == [1_000]
    assert stream_times_us(1_000, 3, 5_000) == [1_000, 1_000, 1_000]


def test_one_key_one_quota_across_an_old_route_and_a_new_endpoint():
    """LLM key ``k`` with 1 in flight: the old scene-content route holds it for 20 s, so a chat
    completion on the same key at t = 0 is refused; on another key it is not."""
    sc = const_scenario(content=20.0, quota_llm=Quota(max_inflight=1))
    app = create_app(sc, 0, virtual=True)
    outline = {"id": "o0", "type": "slide", "title": "t", "order": 0}
    old = {"outline": outline, "allOutlines": [outline], "stageId": "sb-1"}

    async def body(c: httpx.AsyncClient) -> list[int]:
        first = asyncio.ensure_future(
            c.post("/api/generate/scene-content", json=old, headers={"x-api-key": "k"})
        )
        await asyncio.sleep(1.0)
        same = await c.post("/v1/chat/completions", json=CHAT, headers=_bearer("k"))
        other = await c.post("/v1/chat/completions", json=CHAT, headers=_bearer("k2"))
        return [(await first).status_code, same.status_code, other.status_code]

    assert _in_virtual_world(app, body) == [200, 429, 200]
    reasons = [r[11] for r in app.state.fake.log_rows()]
    assert reasons == ["ok", "inflight", "ok"]


def _refusal(shape: str, path: str = "/v1/chat/completions", **quota: Any) -> httpx.Response:
    """The answer to a second call on a key that allows 1 request per minute."""
    q = Quota(rpm=1, shape=shape, **quota)
    sc = const_scenario(content=0.0, tts=0.0, quota_llm=q, quota_tts=q)
    app = create_app(sc, 0, virtual=True)
    js = SPEECH if path.endswith("speech") or path.endswith("t2a_v2") else CHAT
    if path.endswith("t2a_v2"):
        js = {"model": "speech-02", "text": "hi"}
    heads = {"x-api-key": "k", **_bearer("k")}
    [_, (r, _, _)] = _run(app, [(path, js, heads), (path, js, heads)])
    return r


def test_openai_429_shape():
    r = _refusal("openai", retry_after_s=1.5)
    assert r.status_code == 429
    assert r.headers["retry-after-ms"] == "1500" and r.headers["retry-after"] == "2"
    assert r.headers["x-ratelimit-limit-requests"] == "1"
    assert r.headers["x-ratelimit-remaining-requests"] == "0"
    assert r.headers["x-ratelimit-reset-requests"] == "1m0s"  # a full token takes 60 s
    err = r.json()["error"]
    assert err["code"] == "rate_limit_exceeded" and err["type"] == "requests"
    assert set(err) == {"message", "type", "param", "code"}


def test_azure_429_shape_resets_in_whole_seconds():
    r = _refusal("azure", retry_after_s=1.5)
    assert r.status_code == 429 and r.headers["retry-after-ms"] == "1500"
    assert r.headers["x-ratelimit-reset-requests"] == "60"
    assert r.json()["error"]["code"] == "429" and "retry after 2 seconds" in r.text


def test_anthropic_429_shape():
    r = _refusal("anthropic", "/v1/messages", retry_after_s=3.0)
    assert r.status_code == 429 and r.headers["retry-after"] == "3"
    assert "retry-after-ms" not in r.headers
    assert r.headers["anthropic-ratelimit-requests-limit"] == "1"
    assert r.headers["anthropic-ratelimit-requests-remaining"] == "0"
    # decided at model time 0; the bucket is full again 60 s later
    assert r.headers["anthropic-ratelimit-requests-reset"] == rfc3339(60_000_000)
    assert rfc3339(60_000_000) == "2026-01-01T00:01:00Z"
    body = r.json()
    assert body["type"] == "error" and body["error"]["type"] == "rate_limit_error"
    assert body["request_id"] == r.headers["request-id"]


def test_anthropic_529_overloaded_shape_from_an_outage():
    q = Quota(shape="anthropic", outages=((0.0, 10.0, 529),), retry_after_s=None)
    app = create_app(const_scenario(content=0.0, quota_llm=q), 0, virtual=True)
    [(r, t0, t1)] = _run(app, [("/v1/messages", CHAT, {"x-api-key": "k"})])
    assert r.status_code == 529 and t1 == t0  # answered at once
    assert r.json()["error"] == {"type": "overloaded_error", "message": "Overloaded"}
    assert "retry-after" not in r.headers


def test_gemini_429_carries_the_delay_only_in_the_body():
    r = _refusal("gemini", retry_after_s=13.0)
    assert r.status_code == 429 and "retry-after" not in r.headers
    err = r.json()["error"]
    assert err["code"] == 429 and err["status"] == "RESOURCE_EXHAUSTED"
    info = [d for d in err["details"] if d["@type"].endswith("google.rpc.RetryInfo")]
    assert info == [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "13s"}]
    assert "Please retry in 13s." in err["message"]


def test_kimi_429_carries_the_delay_only_in_the_message():
    r = _refusal("kimi", retry_after_s=4.0)
    assert r.status_code == 429 and "retry-after" not in r.headers
    err = r.json()["error"]
    assert err["type"] == "rate_limit_reached_error"
    assert err["message"].endswith("please try again after 4 seconds")


def test_minimax_rate_limit_is_http_200_with_code_1002():
    r = _refusal("minimax", "/v1/t2a_v2")
    assert r.status_code == 200
    assert r.json() == {"base_resp": {"status_code": 1002, "status_msg": "rate limit"}}


def test_minimax_success_carries_hex_audio():
    app = create_app(const_scenario(tts=0.0), 0, virtual=True)
    [(r, _, _)] = _run(app, [("/v1/t2a_v2", {"text": "hi"}, _bearer("k", "tts/1/0/0/0"))])
    body = r.json()
    assert body["base_resp"]["status_code"] == 0 and body["extra_info"]["audio_format"] == "wav"
    assert bytes.fromhex(body["data"]["audio"])[:4] == b"RIFF"


def test_openai_speech_pcm_is_raw_samples():
    app = create_app(const_scenario(tts=0.0), 0, virtual=True)
    js = {**SPEECH, "response_format": "pcm"}
    [(r, _, _)] = _run(app, [("/v1/audio/speech", js, _bearer("k", "tts/1/0/0/0"))])
    d = Draws(app.state.fake.scenario, 0, 1, 2)
    assert r.headers["content-type"] == "audio/pcm"
    assert len(r.content) == 2 * round(int(d.audio_us()[0, 0]) * SAMPLE_RATE / 1e6)


def test_bad_bodies_get_the_providers_400():
    app = create_app(const_scenario(), 0, virtual=True)

    async def body(c: httpx.AsyncClient) -> list[httpx.Response]:
        heads = {"content-type": "application/json", **_bearer("k")}
        a = await c.post("/v1/chat/completions", content=b"{nope", headers=heads)
        b = await c.post("/v1/messages", content=b"[1]", headers=heads)
        s = await c.post("/v1/audio/speech", json={"model": "tts-1"}, headers=heads)
        return [a, b, s]

    a, b, s = _in_virtual_world(app, body)
    assert a.status_code == 400 and a.json()["error"]["type"] == "invalid_request_error"
    assert b.status_code == 400 and b.json()["type"] == "error"
    assert s.status_code == 400 and s.json()["error"]["param"] == "input"


def test_daily_quota_resets_at_the_given_hour():
    """2 requests per day, the day starting at 01:00: at 00:30 two pass and the third waits
    until 01:00 (30 min); after 01:00 the count starts again."""
    q = Quota(rpd=2, day_reset_hour=1.0, retry_after_s=1.0)
    app = create_app(const_scenario(content=0.0, quota_llm=q), 0, virtual=True)

    async def body(c: httpx.AsyncClient) -> list[httpx.Response]:
        await asyncio.sleep(1800.0)  # 00:30
        out = [await c.post("/v1/chat/completions", json=CHAT, headers=_bearer("k"))]
        out += [await c.post("/v1/chat/completions", json=CHAT, headers=_bearer("k"))]
        out += [await c.post("/v1/chat/completions", json=CHAT, headers=_bearer("k"))]
        await asyncio.sleep(1800.0)  # 01:00
        out += [await c.post("/v1/chat/completions", json=CHAT, headers=_bearer("k"))]
        return out

    rs = _in_virtual_world(app, body)
    assert [r.status_code for r in rs] == [200, 200, 429, 200]
    assert rs[2].headers["retry-after-ms"] == str(1800 * 1000)
    assert "requests per day" in rs[2].json()["error"]["message"]


def test_first_n_calls_get_429_then_the_key_serves():
    q = Quota(first_429=2)
    app = create_app(const_scenario(content=0.0, quota_llm=q), 0, virtual=True)
    rs = _run(app, [("/v1/chat/completions", CHAT, _bearer("k"))] * 3)
    assert [r.status_code for r, _, _ in rs] == [429, 429, 200]
    assert [r[11] for r in app.state.fake.log_rows()] == ["scripted", "scripted", "ok"]


def test_rpm_window_of_10_s_allows_ceil_rpm_over_6_per_window():
    q = Quota(rpm=600, rpm_window_s=10, retry_after_s=1.0)
    app = create_app(const_scenario(content=0.0, quota_llm=q), 0, virtual=True)
    allowed = math.ceil(600 * 10 / 60)
    rs = _run(app, [("/v1/chat/completions", CHAT, _bearer("k"))] * (allowed + 1))
    assert [r.status_code for r, _, _ in rs].count(200) == allowed
    assert rs[-1][0].status_code == 429 and rs[-1][0].headers["retry-after-ms"] == "10000"


def test_disconnect_frees_the_slot_only_when_the_scenario_says_so():
    """Key with 1 in flight, a 20-s call aborted by its client at 5 s: a second call at 6 s
    is refused unless ``disconnect_frees``."""

    def second_status(frees: bool) -> int:
        q = Quota(max_inflight=1, disconnect_frees=frees)
        app = create_app(const_scenario(content=20.0, quota_llm=q), 0, virtual=True)

        async def body(c: httpx.AsyncClient) -> int:
            call = c.post("/v1/chat/completions", json=CHAT, headers=_bearer("k"))
            with pytest.raises(TimeoutError):  # in-process: the request task is cancelled
                await asyncio.wait_for(call, 5.0)
            await asyncio.sleep(1.0)
            r = await c.post("/v1/chat/completions", json=CHAT, headers=_bearer("k"))
            return r.status_code

        status: int = _in_virtual_world(app, body)
        return status

    assert second_status(False) == 429
    assert second_status(True) == 200


def test_quota_fields_stay_out_of_the_mapping_when_unset():
    sc = load_scenario("default")
    assert "shape" not in sc.to_mapping()["quota"]["llm"]
    q = dataclasses.replace(sc.quota_llm, outages=((1.0, 2.0, 503),), shape="gemini")
    m = sc.replace(quota_llm=q).to_mapping()["quota"]["llm"]
    assert m["outages"] == [[1.0, 2.0, 503]] and m["shape"] == "gemini"


def test_tts_presets_limit_the_tts_key_and_shapes_are_taken_only_when_asked():
    from sim.presets import apply_preset

    base = load_scenario("default")
    sc = apply_preset(base, "minimax-tts-free", shape=True)
    assert (sc.quota_tts.rpm, sc.quota_tts.shape) == (10, "minimax")
    assert sc.quota_llm == base.quota_llm and sc.tokens == base.tokens
    assert apply_preset(base, "minimax-tts-free").quota_tts.shape == ""
    assert apply_preset(base, "openai-tier1").quota_llm.shape == ""  # sweeps as before
    assert apply_preset(base, "openai-tier1", shape=True).quota_llm.shape == "openai"
    f0 = apply_preset(base, "azure-speech-f0").quota_tts
    assert (f0.rpm, f0.rpm_window_s) == (20, 60)
    assert apply_preset(base, "elevenlabs-free").quota_tts.max_inflight == 2


def test_azure_speech_f0_answers_the_21st_request_in_a_minute_429():
    from sim.presets import apply_preset

    sc = apply_preset(const_scenario(tts=0.0), "azure-speech-f0")
    app = create_app(sc, 0, virtual=True)
    rs = _run(app, [("/v1/audio/speech", SPEECH, _bearer("k"))] * 21)
    assert [r.status_code for r, _, _ in rs] == [200] * 20 + [429]
    assert app.state.fake.log_rows()[-1][11] == "rpw"


def test_successes_carry_the_keys_rate_headers():
    """OpenAI sends x-ratelimit-* on every answer: after the first of 60 RPM, 59 remain and
    the bucket is full again in 1 s (one token at 1 per second)."""
    app = create_app(const_scenario(content=0.0, quota_llm=Quota(rpm=60)), 0, virtual=True)
    [(r, _, _)] = _run(app, [("/v1/chat/completions", CHAT, _bearer("k"))])
    assert r.status_code == 200
    assert r.headers["x-ratelimit-limit-requests"] == "60"
    assert r.headers["x-ratelimit-remaining-requests"] == "59"
    assert r.headers["x-ratelimit-reset-requests"] == "1s"


def test_anthropic_output_token_refusal_names_the_output_bucket():
    sc = load_scenario("output-tpm")
    q = dataclasses.replace(sc.quota_llm, shape="anthropic")
    app = create_app(sc.replace(quota_llm=q), 0, virtual=True)
    js = {**CHAT, "max_tokens": 100}

    async def body(c: httpx.AsyncClient) -> list[httpx.Response]:
        # two content calls at t = 0: each is counted at max_tokens = 4096 of 8,000
        heads = [{"x-api-key": "k", CALL_HEADER: f"content/1/{o}/0/0"} for o in (0, 1)]
        return list(
            await asyncio.gather(*(c.post("/v1/messages", json=js, headers=h) for h in heads))
        )

    rs = _in_virtual_world(app, body)
    assert sorted(r.status_code for r in rs) == [200, 429]
    h = next(r for r in rs if r.status_code == 429).headers
    assert "anthropic-ratelimit-output-tokens-limit" in h
    assert int(h["anthropic-ratelimit-output-tokens-limit"]) == q.otpm


def test_without_the_header_a_repeated_prompt_is_the_next_attempt_of_one_call():
    """Keyed by the prompt's hash: the same prompt again is attempt 1 of that call, so its
    usage is attempt 1's drawn output."""
    from runner.world.wire import hash_id

    sc = load_scenario("output-tpm")
    app = create_app(sc, 3, virtual=True)
    rs = _run(app, [("/v1/chat/completions", CHAT, _bearer("k"))] * 2)
    cid = hash_id("hello")
    d = Draws(sc, 3, cid, cid + 1)
    got = [r.json()["usage"]["completion_tokens"] for r, _, _ in rs]
    assert got == [int(d.tokens_out(0, a)[0, 0]) for a in (0, 1)]
    assert [row[4] for row in app.state.fake.log_rows()] == [0, 1]
