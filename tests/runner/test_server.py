"""The fake provider's HTTP contract, in-process (ASGI transport) and on a real socket."""

import asyncio

import httpx
import pytest

from runner.world.fake_provider import create_app
from sim import Quota
from tests.conftest import const_scenario

OUTLINE = {"id": "o0", "type": "slide", "title": "Intro", "order": 0}


def _post(app, path, body, headers=None):
    async def go():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            return await c.post(path, json=body, headers=headers or {})

    return asyncio.run(go())


def _app(**kw):
    return create_app(const_scenario(content=0.0, actions=0.0, tts=0.0, **kw), 3, time_scale=1.0)


def test_scene_content_contract():
    r = _post(
        _app(),
        "/api/generate/scene-content",
        {"outline": OUTLINE, "allOutlines": [OUTLINE], "stageId": "sb-4"},
    )
    assert r.status_code == 200
    body = r.json()
    assert body["success"] is True and body["effectiveOutline"] == OUTLINE
    assert isinstance(body["content"]["elements"], list)


def test_scene_actions_returns_speeches_and_reads_previous_ones():
    app = _app()
    r = _post(
        app,
        "/api/generate/scene-actions",
        {
            "outline": OUTLINE,
            "allOutlines": [OUTLINE],
            "stageId": "sb-4",
            "content": {"elements": []},
            "previousSpeeches": ["hello"],
        },
    )
    body = r.json()
    speeches = [a for a in body["scene"]["actions"] if a["type"] == "speech"]
    assert len(speeches) == 2  # the scenario's constant 2 clips
    assert body["previousSpeeches"] == [a["text"] for a in speeches]
    assert any(a["type"] != "speech" for a in body["scene"]["actions"])
    assert app.state.fake.actions_inputs[(4, 0)] == ["hello"]


def test_tts_contract():
    r = _post(
        _app(),
        "/api/generate/tts",
        {"text": "hi", "audioId": "tts_sb-4-o0-s1", "ttsProviderId": "p", "ttsVoice": "v"},
    )
    body = r.json()
    assert r.status_code == 200 and body["success"] and body["format"] == "mp3"
    assert body["audioId"] == "tts_sb-4-o0-s1" and body["base64"]


@pytest.mark.parametrize(
    ("path", "body", "missing"),
    [
        ("/api/generate/scene-content", {"allOutlines": [OUTLINE], "stageId": "s"}, "outline"),
        (
            "/api/generate/scene-content",
            {"outline": OUTLINE, "allOutlines": [], "stageId": "s"},
            "allOutlines",
        ),
        ("/api/generate/scene-content", {"outline": OUTLINE, "allOutlines": [OUTLINE]}, "stageId"),
        (
            "/api/generate/scene-actions",
            {"outline": OUTLINE, "allOutlines": [OUTLINE], "stageId": "s"},
            "content",
        ),
        ("/api/generate/tts", {"text": "x", "audioId": "a", "ttsProviderId": "p"}, "ttsVoice"),
    ],
)
def test_missing_fields_answer_400_missing_required_field(path, body, missing):
    r = _post(_app(), path, body)
    assert r.status_code == 400
    assert r.json() == {
        "success": False,
        "errorCode": "MISSING_REQUIRED_FIELD",
        "error": f"Missing required field: {missing}",
    }


def test_health_reports_parallel_scene_concurrency():
    app = create_app(const_scenario(), 0, parallel_scene_concurrency="4")

    async def go():
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://t"
        ) as c:
            return (await c.get("/api/health")).json()

    assert asyncio.run(go())["generation"]["parallelSceneConcurrency"] == "4"


def test_429_carries_retry_after_headers_and_error_body():
    app = create_app(
        # the first answer holds the key's one slot for 500 ms of real time: the second
        # request, sent in the same loop turn, meets it even on a loaded machine
        const_scenario(content=500.0, quota_llm=Quota(max_inflight=1, retry_after_s=1.5)),
        0,
        time_scale=0.001,
    )

    async def go():
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://t"
        ) as c:
            body = {"outline": OUTLINE, "allOutlines": [OUTLINE], "stageId": "sb-1"}
            return await asyncio.gather(
                c.post("/api/generate/scene-content", json=body, headers={"x-api-key": "k"}),
                c.post("/api/generate/scene-content", json=body, headers={"x-api-key": "k"}),
                c.post("/api/generate/scene-content", json=body, headers={"x-api-key": "other"}),
            )

    a, b, other = asyncio.run(go())
    assert sorted([a.status_code, b.status_code]) == [200, 429]
    limited = a if a.status_code == 429 else b
    assert limited.headers["retry-after-ms"] == "1500" and limited.headers["retry-after"] == "2"
    assert limited.json()["errorCode"] == "RATE_LIMITED"
    assert other.status_code == 200  # quotas are per key
    log = app.state.fake.log_rows()
    assert sorted(e[9] for e in log) == [200, 200, 429]


def test_real_socket_serves_the_same_contract(live_server):
    with httpx.Client(base_url=live_server.base_url) as c:
        assert c.get("/api/health").json()["status"] == "ok"
        r = c.post(
            "/api/generate/tts",
            json={"text": "x", "audioId": "tts_sb-0-o0-s0", "ttsProviderId": "p", "ttsVoice": "v"},
        )
        assert r.status_code == 200 and r.json()["success"]
        log = c.get("/api/_scenebench/log").json()["log"]
        assert len(log) == 1 and log[0][1] == 2  # one tts request logged
        assert c.get("/api/nope").status_code == 404


def test_endpoints_are_module_level_functions():
    """Every route and exception handler is a plain function of runner.world.fake_provider (its
    state comes
    from ``request.app.state``), not a closure made by create_app."""
    import runner.world.fake_provider as server

    app = create_app(const_scenario())
    fns = [r.endpoint for r in app.routes] + list(app.exception_handlers.values())
    assert len(fns) >= 9
    for fn in fns:
        assert fn.__module__ == "runner.world.fake_provider"
        assert fn.__qualname__ == fn.__name__ and fn.__closure__ is None
        assert getattr(server, fn.__name__) is fn


def test_config_object_and_keyword_overrides():
    from runner.world.fake_provider import ServerConfig

    cfg = ServerConfig(time_scale=0.5, parallel_scene_concurrency="3")
    fake = create_app(const_scenario(), 1, config=cfg, keep_log=False).state.fake
    assert (fake.time_scale, fake.parallel_scene_concurrency, fake.seed) == (0.5, "3", 1)
    assert fake.provider.keep_log is False
    assert create_app(const_scenario(), virtual=True).state.fake.virtual is True
