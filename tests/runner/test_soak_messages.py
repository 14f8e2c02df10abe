"""The soak's third route (Anthropic's ``POST /v1/messages``) beside the bare app, and the
messages answer written from a template as ``json.dumps`` wrote its body (speeds are never
asserted: the machine is shared)."""

from __future__ import annotations

import itertools
import json

import pytest

from runner.experiments.load import ALL_ROUTES, _round, run_load, run_soak
from runner.world import provider_api as _api


@pytest.mark.wallclock
def test_the_soak_takes_a_third_route_in_equal_chunks_beside_the_bare_app() -> None:
    # 3 routes x 2 rounds x 10 connections: 1,000 requests are 17 per connection and chunk
    # (rounded up to whole chunks): 3 x 2 x 170 = 1,020, and as many to the bare app
    soak = run_soak(1000, rounds=2, connections=10, routes=ALL_ROUTES)
    d = soak.to_dict()
    assert soak.messages is not None
    assert d["requests"] == 1020 == soak.tts.requests + soak.chat.requests + soak.messages.requests
    # the bare app given each route's own requests, as many
    assert soak.bare_chat is not None and soak.bare_messages is not None
    assert soak.messages.requests == 340 == soak.bare_messages.requests
    assert soak.bare.requests + soak.bare_chat.requests + soak.bare_messages.requests == 1020
    assert d["messages_over_bare"] == pytest.approx(d["messages_rps"] / d["bare_messages_rps"])
    assert d["messages_over_bare_tts"] == pytest.approx(d["messages_rps"] / d["bare_rps"])
    assert d["non_200"] == {
        "fake_tts": 0, "fake_chat": 0, "fake_messages": 0,
        "bare": 0, "bare_chat": 0, "bare_messages": 0,
    }  # fmt: skip
    assert d["bare_messages"]["statuses"] == {"200": 340}
    assert d["fake_messages"]["statuses"] == {"200": 340}
    # RSS at start and after each of the fake provider's 6 chunks of 170
    assert [at for at, _ in d["rss_mb"]] == [170 * k for k in range(7)]


def test_each_route_is_followed_by_its_own_requests_on_the_bare_app() -> None:
    assert _round(ALL_ROUTES) == (
        ("tts", "tts"), ("bare", "tts"),
        ("chat", "chat"), ("bare_chat", "chat"),
        ("messages", "messages"), ("bare_messages", "messages"),
    )  # fmt: skip


@pytest.mark.wallclock
def test_a_burst_in_flight_on_the_messages_endpoint_is_all_answered() -> None:
    fake, bare = run_load(connections=200, per_connection=1, latency_s=0.3, target="messages")
    assert fake.statuses == {200: 200} == bare.statuses


@pytest.mark.parametrize(
    "text,model,finish",
    [
        ("plain words", "m", "stop"),
        ('quo"te \\ back\nslash\t\x01', "claude-x", "length"),
        ("é ü 漢字 🙂 \ud800", "ü", "stop"),
    ],
)
def test_the_messages_template_writes_what_json_dumps_wrote(
    text: str, model: str, finish: str
) -> None:
    ans = _api._Answer(text, 12, 34, finish, [], [])
    _api._anthropic_tail.cache_clear()
    for first_id in (7, 12_345):  # the rest encoded, then read back for another id
        _api._ids = itertools.count(first_id)
        got = _api._anthropic_json(ans, model)
        _api._ids = itertools.count(first_id)
        assert got == json.dumps(_api._anthropic_body(ans, model)).encode()
    info = _api._anthropic_tail.cache_info()
    assert (info.misses, info.hits) == (1, 1)


def test_the_messages_templates_rest_is_bounded() -> None:
    _api._anthropic_tail.cache_clear()
    bound = _api._anthropic_tail.cache_info().maxsize
    assert bound is not None
    for words in range(bound + 1):
        _api._anthropic_json(_api._Answer(f"w{words}", 1, 2, "stop", [], []), "m")
    info = _api._anthropic_tail.cache_info()
    assert (info.misses, info.currsize) == (bound + 1, bound)
