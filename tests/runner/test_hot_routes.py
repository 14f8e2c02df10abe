"""The fake provider's hot routes (plain ASGI ahead of Starlette's router) answer exactly as
the Starlette routes do: the same statuses, headers, bytes and request log for the same
requests, valid or not, admitted or refused, in every error shape; and the block draws
behind them are each classroom's own."""

from __future__ import annotations

import dataclasses
import itertools
import json
from typing import Any

import httpx
import numpy as np
import pytest
from starlette.applications import Starlette
from starlette.responses import JSONResponse, Response

from runner.world import provider_api as _api
from runner.world import wire
from runner.world.fake_provider import DRAWS_BLOCK, HOT_PATHS, MAX_BODY_BYTES, create_app
from runner.world.hot_routes import FakeApp
from runner.world.provider_api import CALL_HEADER
from runner.world.run import _in_virtual_world
from runner.world.wire import COUNTS_HEADER
from sim import Quota
from sim.draws import Draws
from sim.provider import RESET, TRUNCATED
from sim.scenario import Scenario, load_scenario
from tests.conftest import const_scenario

OUTLINE = {"order": 1, "title": "Cells", "type": "slide"}
CONTENT = {"outline": OUTLINE, "allOutlines": [OUTLINE], "stageId": "sb-3"}
ACTIONS = {**CONTENT, "content": {"elements": []}, "previousSpeeches": ["a", "b"]}
TTS = {"text": "hi", "audioId": "tts_sb-3-o1-s0", "ttsProviderId": "p", "ttsVoice": "v"}
CHAT = {"model": "m", "messages": [{"role": "user", "content": "hello"}]}
KEY = {"authorization": "Bearer k", "x-api-key": "k"}
USAGE = {"include_usage": True}
SPEECH = {"model": "tts-1", "input": "Hi."}
H = CALL_HEADER

# (method, path, body: a JSON value or raw bytes, headers)
Req = tuple[str, str, Any, dict[str, str]]
REQUESTS: list[Req] = [
    ("POST", "/api/generate/tts", {**TTS, "ttsApiKey": "k"}, {}),
    ("POST", "/api/generate/tts", {**TTS, "ttsApiKey": "k"}, {}),
    ("POST", "/api/generate/tts", {**TTS, "audioId": "tts_s2_x"}, {"x-scenebench-foreground": "1"}),
    ("POST", "/api/generate/tts", {**TTS, "ttsVoice": 3}, {}),
    ("POST", "/api/generate/tts", {**TTS, "ttsApiKey": 3}, {}),
    ("POST", "/api/generate/tts", {"text": "hi"}, {}),
    ("POST", "/api/generate/scene-content", CONTENT, KEY),
    ("POST", "/api/generate/scene-content", CONTENT, KEY),
    ("POST", "/api/generate/scene-content", {**CONTENT, "outline": {"order": -1}}, {}),
    ("POST", "/api/generate/scene-content", {**CONTENT, "outline": {"order": 0, "type": "x"}}, {}),
    ("POST", "/api/generate/scene-content", {**CONTENT, "stageId": 5}, {}),
    ("POST", "/api/generate/scene-content", b'{"outline": {"order": 0, "title": NaN}, '
     b'"allOutlines": [{}], "stageId": "sb-9"}', KEY),  # JSONResponse refuses NaN: a 500
    ("POST", "/api/generate/scene-actions", ACTIONS, KEY),
    ("POST", "/api/generate/scene-actions", {**ACTIONS, "previousSpeeches": [1]}, KEY),
    ("POST", "/api/generate/scene-actions", {**ACTIONS, "content": []}, KEY),
    ("POST", "/api/generate/tts", b"{nope", {}),
    ("POST", "/api/generate/tts", b"[1]", {}),
    ("POST", "/api/generate/tts", b"", {}),
    ("POST", "/api/generate/tts", b"\xef\xbb\xbf" + json.dumps(TTS).encode(), {}),
    ("POST", "/api/generate/tts", json.dumps(TTS).encode("utf-16-le"), {}),
    ("POST", "/api/generate/tts", b'{"text": "\xff"}', {}),
    ("POST", "/api/generate/tts", b" " * (MAX_BODY_BYTES + 1), {}),
    ("POST", "/v1/chat/completions", CHAT, KEY),
    ("POST", "/v1/chat/completions", CHAT, KEY),
    ("POST", "/v1/chat/completions", {**CHAT, "max_tokens": 3}, {**KEY, H: "content/4/1/0"}),
    ("POST", "/v1/chat/completions", {**CHAT, "stream": True}, {**KEY, H: "actions/4/1/0/0"}),
    ("POST", "/v1/chat/completions", {**CHAT, "stream": True, "stream_options": USAGE}, KEY),
    ("POST", "/v1/chat/completions", b"{nope", KEY),
    ("POST", "/v1/chat/completions", b" " * (MAX_BODY_BYTES + 1), KEY),
    ("POST", "/v1/messages", {**CHAT, "system": "be brief"}, {"x-api-key": "k"}),
    ("POST", "/v1/messages", {**CHAT, "stream": True}, {"x-api-key": "k"}),
    ("POST", "/v1/messages", b"[1]", {"x-api-key": "k"}),
    ("POST", "/v1/audio/speech", {"model": "tts-1", "input": "Hello."}, KEY),
    ("POST", "/v1/audio/speech", {**SPEECH, "response_format": "pcm"}, {**KEY, H: "tts/4/1/1"}),
    ("POST", "/v1/audio/speech", {"model": "tts-1"}, KEY),
    ("POST", "/v1/t2a_v2", {"model": "speech-02", "text": "Hello."}, KEY),
    ("POST", "/v1/t2a_v2", {"model": "speech-02"}, KEY),
    ("GET", "/v1/chat/completions", None, KEY),
    ("GET", "/api/generate/tts", None, {}),
    ("POST", "/v1/chat/completions/", CHAT, KEY),
    ("POST", "/api/health", {}, {}),
]  # fmt: skip


def _scenarios() -> list[tuple[str, Scenario]]:
    out = [("plain", const_scenario(content=0.5, actions=0.2, tts=0.1))]
    for shape in ("openai", "anthropic", "gemini", "kimi", "minimax", "azure"):
        q = Quota(rpm=1, shape=shape, retry_after_s=1.5)
        out.append((shape, const_scenario(content=0.0, tts=0.0, quota_llm=q, quota_tts=q)))
    for profile in ("v0.2.1", "pr788"):  # the route error shape, then the provider's statuses
        sc = load_scenario("default", upstream=profile)
        q = dataclasses.replace(sc.quota_llm, p_429=0.5, p_5xx=0.3)
        out.append((profile, sc.replace(quota_llm=q, quota_tts=q)))
    free = Quota(max_inflight=1, disconnect_frees=True)
    out.append(("frees", const_scenario(quota_llm=free, quota_tts=free)))
    return out


def _starlette_only(app: Starlette) -> Any:
    async def asgi(scope: Any, receive: Any, send: Any) -> None:
        await Starlette.__call__(app, scope, receive, send)

    return asgi


def _answers(app: Any, reqs: list[Req]) -> list[Any]:
    """Each request's answer (status, header rows, bytes), or the error the client got; the
    provider endpoints' id counter restarted, so both apps number their answers alike."""
    _api._ids = itertools.count(1)

    async def body(c: httpx.AsyncClient) -> list[Any]:
        out: list[Any] = []
        for method, path, js, heads in reqs:
            raw = js if isinstance(js, bytes) else None if js is None else json.dumps(js).encode()
            try:
                r = await c.request(method, path, content=raw, headers=heads)
            except Exception as e:  # an injected reset: the partial answer the client saw
                out.append(type(e).__name__)
                continue
            out.append((r.status_code, r.headers.raw, r.content))
        return out

    answers: list[Any] = _in_virtual_world(app, body)
    return answers


@pytest.mark.parametrize("name,sc", _scenarios(), ids=[n for n, _ in _scenarios()])
def test_hot_routes_answer_and_log_as_the_starlette_routes(name: str, sc: Scenario) -> None:
    hot, slow = create_app(sc, 3, virtual=True), create_app(sc, 3, virtual=True)
    assert isinstance(hot, FakeApp)
    got, want = _answers(hot, REQUESTS), _answers(_starlette_only(slow), REQUESTS)
    for req, g, w in zip(REQUESTS, got, want, strict=True):
        assert g == w, req[:2]
    assert list(hot.state.fake.provider.log) == list(slow.state.fake.provider.log)
    assert hot.state.fake.actions_inputs == slow.state.fake.actions_inputs
    assert {r[1] for r in REQUESTS if r[0] == "POST"} >= HOT_PATHS


def test_success_bytes_are_what_the_starlette_responses_rendered() -> None:
    """The answers written in one go (the hot routes' success bodies and header rows) are
    JSONResponse's (OpenMAIC's routes) and ``Response(json.dumps(...))``'s (providers')."""
    sc = const_scenario(content=0.0, actions=0.0, tts=0.0)
    got = _answers(create_app(sc, 3, virtual=True), REQUESTS)
    seen = set()
    for (_, path, _, _), g in zip(REQUESTS, got, strict=True):
        if not (isinstance(g, tuple) and g[0] == 200 and g[1][1][1] == b"application/json"):
            continue
        _, rows, raw = g
        if path.startswith("/api/generate/"):
            want = JSONResponse(json.loads(raw))
            want.headers[COUNTS_HEADER] = "1,0,0,0,200"  # one attempt, a 200
        elif path in ("/v1/chat/completions", "/v1/messages"):
            want = Response(json.dumps(json.loads(raw)).encode(), media_type="application/json")
            want.headers.update({k.decode(): v.decode() for k, v in rows[2:]})
        else:
            continue
        assert (raw, rows) == (want.body, want.raw_headers), path
        seen.add(path)
    assert len(seen) == 5


@pytest.mark.parametrize("status", [TRUNCATED, RESET])
def test_injected_truncations_and_resets_match(status: int) -> None:
    sc = const_scenario(content=0.0, tts=0.0)
    apps = [create_app(sc, 0, virtual=True) for _ in range(2)]
    for app in apps:
        for step in (0, 1, 2):
            app.state.fake.provider.force_status[(step, 1)] = status
    got = _answers(apps[0], REQUESTS)
    assert got == _answers(_starlette_only(apps[1]), REQUESTS)
    assert any(g == "RemoteProtocolError" or (isinstance(g, tuple) and g[0] == 200) for g in got)


def test_repeated_headers_take_the_first_as_starlette_does() -> None:
    sc = const_scenario()
    hot, slow = create_app(sc, 0, virtual=True), create_app(sc, 0, virtual=True)
    heads = [("x-api-key", "first"), ("x-api-key", "second")]

    async def body(c: httpx.AsyncClient) -> int:
        r = await c.post("/api/generate/scene-content", json=CONTENT, headers=heads)
        return r.status_code

    assert _in_virtual_world(hot, body) == _in_virtual_world(_starlette_only(slow), body) == 200
    assert hot.state.fake.provider.log[0][5] == "first" == slow.state.fake.provider.log[0][5]


@pytest.mark.parametrize("scenario", ["default", "output-tpm"])
def test_block_draws_are_each_classrooms_own(scenario: str) -> None:
    sc = load_scenario(scenario)
    prov = create_app(sc, 5, virtual=True).state.fake.provider
    for cid in (0, 1, DRAWS_BLOCK - 1, DRAWS_BLOCK, 3 * DRAWS_BLOCK + 7, 5_000_011):
        d, row = prov.draws_for(cid)
        one = Draws(sc, 5, cid, cid + 1)
        assert d.lo <= cid < d.hi and row == cid - d.lo
        for step in (0, 1, 2):
            for attempt in (0, 2):
                assert np.array_equal(
                    d.latency_us(step, attempt)[row], one.latency_us(step, attempt)[0]
                )
                assert np.array_equal(
                    d.fault_u(step, attempt, 1)[row], one.fault_u(step, attempt, 1)[0]
                )
                assert np.array_equal(
                    d.tokens_out(step, attempt)[row], one.tokens_out(step, attempt)[0]
                )
            assert np.array_equal(d.tokens_in(step)[row], one.tokens_in(step)[0])
        assert np.array_equal(d.speeches()[row], one.speeches()[0])
        assert np.array_equal(d.audio_us()[row], one.audio_us()[0])


@pytest.mark.parametrize(
    "text,model",
    [("plain words", "m"), ('quo"te \\ back\nslash\t\x01', "gpt-4o"), ("é ü 漢字 🙂 \ud800", "ü")],
)
def test_the_chat_template_writes_what_json_dumps_wrote(text: str, model: str) -> None:
    ans = _api._Answer(text, 12, 34, "length", [], [])
    _api._openai_tail.cache_clear()
    for first_id in (7, 12_345):  # the rest encoded, then read back for another id
        _api._ids = itertools.count(first_id)
        got = _api._openai_json(ans, model)
        _api._ids = itertools.count(first_id)
        assert got == json.dumps(_api._openai_body(ans, model)).encode()
    info = _api._openai_tail.cache_info()
    assert (info.misses, info.hits) == (1, 1)  # encoded once, read back for the second id


def test_the_chat_templates_rest_is_bounded() -> None:
    _api._openai_tail.cache_clear()
    bound = _api._openai_tail.cache_info().maxsize
    assert bound is not None
    for words in range(bound + 1):
        _api._openai_json(_api._Answer(f"w{words}", 1, 2, "stop", [], []), "m")
    info = _api._openai_tail.cache_info()
    assert (info.misses, info.currsize) == (bound + 1, bound)  # one more answer, none more kept


def _audio_id_three_matches(value: str) -> tuple[int, int, int]:
    """parse_audio_id as written before its one-match path (the upstream form, the older
    form, then the action id searched in either)."""
    m = wire._UPSTREAM_AUDIO_RE.match(value)
    action = m.group(2) if m else None
    if action is None:
        own = wire._OWN_AUDIO_RE.match(value)
        action = own.group(1) if own else None
    a = wire._ACTION_RE.search(action) if action is not None else None
    if a is not None:
        return int(a.group(1)), int(a.group(2)), int(a.group(3))
    return wire.hash_id(value), int(m.group(1)) if m else 0, 0


@pytest.mark.parametrize(
    "value",
    [
        "tts_sb-3-o1-s0",
        "tts_s1_sb-3-o1-s0",
        "tts_s12_sb-1000007-o40-s19",
        "tts_sb-3-o1-s0\n",  # $ matches before a final newline, in every pattern
        "tts_s2_sb-3-o1-s0\n",
        "tts_s2_xsb-3-o1-s0",  # the action id found inside upstream's action
        "tts_s2_sb-3-o1-s0-sb-4-o2-s1",
        "tts_sb-٣-o1-s0",  # a non-ASCII decimal digit is a \\d, and int() reads it
        "tts_s_sb-3-o1-s0",
        "tts_sb-3-o1",
        "tts_s2_some-upstream-action",
        "x",
        "",
    ],
)
def test_audio_ids_read_in_one_match_as_in_three(value: str) -> None:
    assert wire.parse_audio_id(value) == _audio_id_three_matches(value)


@pytest.mark.parametrize(
    "text", ["tts_sb-3-o1-s0", 'quo"te \\ back\nslash\t\x01', "é 漢字 🙂 \ud800", ""]
)
def test_the_tts_answers_audio_id_is_written_as_jsonresponse_writes_it(text: str) -> None:
    from runner.world.fake_provider import _COMPACT, _json_str

    assert _json_str(text) == _COMPACT.encode(text)


@pytest.mark.parametrize("virtual", [False, True])
def test_a_wall_clock_answer_goes_out_after_one_turn_of_the_loop(virtual: bool) -> None:
    """On the wall clock a hot route's answer is sent after one turn of the event loop (as
    the bare app's sleep(0): a burst is computed before its answers are written); on the
    virtual clock at once (its order at equal times is the model's)."""
    import asyncio

    app = create_app(const_scenario(tts=0.0), 0, virtual=virtual)
    body = json.dumps({**TTS, "ttsApiKey": "k"}).encode()
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/api/generate/tts",
        "root_path": "",
        "headers": [(b"content-length", str(len(body)).encode())],
        "query_string": b"",
    }
    turned: list[bool] = []  # whether a callback queued before the call ran, at each send

    async def main() -> list[bool]:
        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: Any) -> None:
            turned.append(bool(ran))

        ran: list[bool] = []
        asyncio.get_running_loop().call_soon(ran.append, True)
        await app(scope, receive, send)
        return turned

    assert asyncio.run(main()) == [not virtual, not virtual]  # start and body
