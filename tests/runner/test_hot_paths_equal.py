"""The hot paths' shortcuts answer as the general paths do: a call decided on arrival with
nothing to wait is answered without a coroutine (``FakeProvider.route_now`` for OpenMAIC's
routes, ``provider_api._decide_now`` for the provider endpoints); with both shortcuts turned
off (every call through ``route_call`` and ``_decide``) the same requests get the same
statuses, headers, bytes and request log, on keys with zero latencies (the shortcuts taken),
with latencies, with random refusals and faults and with the route's own retries."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
from typing import Any

import pytest

from runner.world import provider_api as _api
from runner.world.fake_provider import FakeProvider, create_app
from sim.provider import RESET, TRUNCATED
from sim.scenario import Scenario, load_scenario
from tests.conftest import const_scenario
from tests.runner.test_hot_routes import REQUESTS, _answers


def _scenarios() -> list[tuple[str, Scenario]]:
    zero = const_scenario(content=0.0, actions=0.0, tts=0.0)
    out = [("zero", zero), ("latency", const_scenario(content=0.5, actions=0.2, tts=0.1))]
    for profile in ("v0.2.1", "pr788"):  # the route retries (before #788), then passes statuses
        sc = load_scenario("default", upstream=profile)
        q = dataclasses.replace(sc.quota_llm, p_429=0.4, p_5xx=0.3, retry_after_s=0.0)
        out.append((profile, sc.replace(content=zero.content, actions=zero.actions, tts=zero.tts,
                                        quota_llm=q, quota_tts=q)))  # fmt: skip
    return out


def _general(monkeypatch: pytest.MonkeyPatch) -> None:
    """Both shortcuts off: every call through the general coroutines."""

    def route_now(self: FakeProvider, *args: Any) -> tuple[None, bool]:
        return None, False

    def decide_now(request: Any, fake: Any, c: Any, wait: bool, headers: Any) -> Any:
        return _api._decide(request, fake, c, wait, headers)

    monkeypatch.setattr(FakeProvider, "route_now", route_now)
    monkeypatch.setattr(_api, "_decide_now", decide_now)


def _cases() -> list[tuple[str, Scenario, int | None]]:
    out = [(name, sc, None) for name, sc in _scenarios()]
    return out + [("zero", _scenarios()[0][1], f) for f in (RESET, TRUNCATED)]  # faults forced


@pytest.mark.parametrize("name,sc,forced", _cases(), ids=[f"{n}-{f}" for n, _, f in _cases()])
def test_the_shortcuts_answer_as_the_general_paths(
    name: str, sc: Scenario, forced: int | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    def run() -> tuple[list[Any], list[Any]]:
        app = create_app(sc, 3, virtual=True)
        if forced is not None:
            for step in (0, 1, 2):
                app.state.fake.provider.force_status[(step, 1)] = forced
        got = _answers(app, REQUESTS * 2)  # (repeated: later attempts of the same calls)
        return got, list(app.state.fake.provider.log)

    fast = run()
    with monkeypatch.context() as m:
        _general(m)
        general = run()
    assert fast == general


def _sent(body: bytes, pieces: int) -> list[Any]:
    """The ASGI messages a fresh fake provider sends for a chat request whose body comes in
    ``pieces`` messages (``more_body`` on all but the last)."""
    cuts = [len(body) * k // pieces for k in range(pieces + 1)]
    received = [
        {"type": "http.request", "body": body[a:b], "more_body": b < len(body)}
        for a, b in itertools.pairwise(cuts)
    ]
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/chat/completions",
        "root_path": "",
        "headers": [(b"authorization", b"Bearer k"), (b"x-scenebench-call", b"content/5/0/0")],
        "query_string": b"",
    }
    sent: list[Any] = []

    async def receive() -> Any:
        return received.pop(0)

    async def send(message: Any) -> None:
        sent.append(message)

    _api._ids = itertools.count(1)
    asyncio.run(create_app(const_scenario(content=0.0), 0, virtual=True)(scope, receive, send))
    return sent


def test_a_body_in_several_messages_is_read_whole() -> None:
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hello"}]}).encode()
    whole = _sent(body, 1)
    assert whole[0]["status"] == 200 and b'"content": "the scene' in whole[1]["body"]
    assert _sent(body, 3) == whole
