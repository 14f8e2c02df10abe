"""Real clients nobody here wrote, against the fake provider's own-API endpoints on 127.0.0.1:
the OpenAI Python SDK (non-streamed and streamed) and the Anthropic Python SDK see the drawn
latencies, the quotas, and retry as their own documented rules say they do.

The SDKs' rules (openai-python ``_base_client.py`` / ``_constants.py``; anthropic-python the
same, docs/provider-api.md): 2 retries (3 attempts) on 408, 409, 429 and 5xx; the wait before
retry k is the server's ``retry-after-ms`` (else ``retry-after``) when it is in (0, 120] s
(openai-python >= 2.52), else ``min(0.5 * 2**(k-1), 8) * (1 - U/4)`` s with U in [0, 1).
Only lower bounds of wall-clock gaps are asserted (a busy machine adds time, never removes it);
each expected gap is chosen above the largest backoff it must be told apart from.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import pytest

from runner.world.fake_provider import ServerThread, create_app
from sim import Quota
from tests.conftest import const_scenario


def _sdk(name: str) -> Any:
    """An SDK, imported when a test first uses it (the test skipped when it is not installed):
    not at collection, where every xdist worker collects this file and importing both takes
    over a second of CPU, while only the wall-clock worker runs these tests."""
    return pytest.importorskip(name)


pytestmark = pytest.mark.wallclock
MSG = [{"role": "user", "content": "Say hello."}]
MAX_BACKOFF_1_S = 0.5  # the SDKs' largest wait before retry 1 without a header
MAX_BACKOFF_2_S = 1.0  # ... before retry 2


def _server(**kw: Any) -> ServerThread:
    """The fake provider on a free port of 127.0.0.1, model time = real time."""
    sc = const_scenario(**{"content": 0.3, "actions": 0.3, "tts": 0.2, **kw})
    return ServerThread(create_app(sc, 0, time_scale=1.0))


@pytest.fixture
def srv() -> Iterator[ServerThread]:
    with _server() as s:
        yield s


def _rows(s: ServerThread, key: str) -> list[tuple[Any, ...]]:
    fake = s.app.state.fake
    return [r for r in fake.log_rows() if r[5] == key]


def _gaps_s(rows: list[tuple[Any, ...]]) -> list[float]:
    arrivals = [r[6] for r in rows]
    return [(b - a) / 1e6 for a, b in itertools.pairwise(arrivals)]


_CLIENTS: list[Any] = []


@pytest.fixture(autouse=True)
def _closed_clients() -> Iterator[None]:
    """Every SDK client a test made is closed when the test ends, its pooled sockets with it:
    a socket left to the garbage collector is a ResourceWarning, an error in whichever test
    happens to collect it (a gc.collect() in the next test's setup once)."""
    yield
    while _CLIENTS:
        _CLIENTS.pop().close()


def _openai(s: ServerThread, key: str, **kw: Any) -> Any:
    _CLIENTS.append(_sdk("openai").OpenAI(base_url=s.base_url + "/v1", api_key=key, **kw))
    return _CLIENTS[-1]


def test_openai_sdk_non_streamed_sees_the_drawn_latency(srv: ServerThread) -> None:
    import time

    t0 = time.monotonic()
    r = _openai(srv, "k1").chat.completions.create(model="gpt-4o-mini", messages=MSG)
    took = time.monotonic() - t0
    assert r.choices[0].message.content and r.usage is not None
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    [row] = _rows(srv, "k1")
    assert row[8] - row[7] == 300_000 and row[9] == 200  # the constant 0.3 s, exactly
    assert took >= 0.3


def test_openai_sdk_streamed_sees_ttft_then_the_rest(srv: ServerThread) -> None:
    import time

    t0 = time.monotonic()
    stream = _openai(srv, "k1").chat.completions.create(
        model="gpt-4o-mini", messages=MSG, stream=True, stream_options={"include_usage": True}
    )
    first = None
    text = ""
    usage = None
    for ch in stream:
        if ch.choices and ch.choices[0].delta.content:
            first = first if first is not None else time.monotonic() - t0
            text += ch.choices[0].delta.content
        usage = ch.usage or usage
    took = time.monotonic() - t0
    assert text and usage is not None and usage.completion_tokens > 0
    assert first is not None and first >= 0.3 / 4  # no output_tps: TTFT = L/4
    assert took >= 0.3


def test_openai_sdk_honours_retry_after_ms() -> None:
    """The first two calls get 429 with retry-after-ms 1100: the SDK waits 1.1 s before each
    retry (more than any backoff it would use without the header), the third succeeds."""
    with _server(quota_llm=Quota(first_429=2, retry_after_s=1.1)) as s:
        r = _openai(s, "k").chat.completions.create(model="m", messages=MSG)
        rows = _rows(s, "k")
    assert r.choices[0].message.content
    assert [row[9] for row in rows] == [429, 429, 200]
    gaps = _gaps_s(rows)
    assert gaps[0] >= 1.1 > MAX_BACKOFF_1_S and gaps[1] >= 1.1 > MAX_BACKOFF_2_S


def test_openai_sdk_backs_off_twice_then_raises_without_a_header() -> None:
    with _server(quota_llm=Quota(first_429=5, retry_after_s=None)) as s:
        with pytest.raises(_sdk("openai").RateLimitError) as e:
            _openai(s, "k").chat.completions.create(model="m", messages=MSG)
        rows = _rows(s, "k")
    assert e.value.status_code == 429 and e.value.body["code"] == "rate_limit_exceeded"
    assert len(rows) == 3  # DEFAULT_MAX_RETRIES = 2
    g1, g2 = _gaps_s(rows)
    assert g1 >= 0.5 * 0.75 and g2 >= 1.0 * 0.75  # min(0.5 * 2**(k-1), 8) * (1 - U/4)


def test_openai_sdk_refuses_a_retry_after_over_two_minutes() -> None:
    consts = pytest.importorskip("openai._constants")
    if not hasattr(consts, "MAX_RETRY_AFTER_DELAY"):
        pytest.skip("openai-python < 2.52 backs off instead (docs/provider-api.md)")
    with _server(quota_llm=Quota(first_429=1, retry_after_s=200.0)) as s:
        with pytest.raises(_sdk("openai").RateLimitError):
            _openai(s, "k").chat.completions.create(model="m", messages=MSG)
        assert len(_rows(s, "k")) == 1


def test_openai_sdk_meets_the_rpm_bucket() -> None:
    """60 RPM with a burst of 1: the second call at once finds no token, is told to come back
    in 1.1 s (the key's retry_after_s), by which time a token has refilled."""
    with _server(quota_llm=Quota(rpm=60, rpm_burst=1, retry_after_s=1.1)) as s:
        c = _openai(s, "k")
        c.chat.completions.create(model="m", messages=MSG)
        c.chat.completions.create(model="m", messages=MSG)
        rows = _rows(s, "k")
    assert [(r[9], r[11]) for r in rows] == [(200, "ok"), (429, "rpm"), (200, "ok")]
    assert _gaps_s(rows)[1] >= 1.1


def test_openai_speech_is_as_long_as_the_clip(srv: ServerThread) -> None:
    import io
    import wave

    audio = _openai(srv, "t").audio.speech.create(model="tts-1", voice="alloy", input="Hi.")
    with wave.open(io.BytesIO(audio.content)) as w:
        seconds = w.getnframes() / w.getframerate()
    fake = srv.app.state.fake
    [row] = _rows(srv, "t")
    d, r = fake.provider.draws_for(row[0])
    assert seconds == pytest.approx(int(d.audio_us()[r, 0]) / 1e6, abs=1 / 24_000)


def test_a_disconnect_frees_the_slot_on_a_real_socket() -> None:
    """1 in flight, a 2-s call abandoned by its client after 0.3 s: with disconnect_frees the
    next call is admitted at once."""
    q = Quota(max_inflight=1, disconnect_frees=True)
    with _server(content=2.0, quota_llm=q) as s:
        c = _openai(s, "k", max_retries=0)
        with pytest.raises(_sdk("openai").APITimeoutError):
            c.chat.completions.create(model="m", messages=MSG, timeout=0.3)
        import time

        time.sleep(0.2)  # the server sees the disconnect
        # admitted at once (a 429 would raise: no retries), served its 2 s
        _openai(s, "k", max_retries=0, timeout=10.0).chat.completions.create(
            model="m", messages=MSG
        )
        assert [r[9] for r in _rows(s, "k")] == [200, 200]


def _anthropic(s: ServerThread, key: str) -> Any:
    _CLIENTS.append(_sdk("anthropic").Anthropic(base_url=s.base_url, api_key=key))
    return _CLIENTS[-1]


def test_anthropic_sdk_non_streamed_and_streamed(srv: ServerThread) -> None:
    c = _anthropic(srv, "a1")
    m = c.messages.create(model="claude-sonnet-4-6", max_tokens=200, messages=MSG)
    assert m.content[0].text and m.usage.output_tokens > 0 and m.stop_reason == "end_turn"
    with c.messages.stream(model="claude-sonnet-4-6", max_tokens=200, messages=MSG) as st:
        text = "".join(st.text_stream)
        final = st.get_final_message()
    assert text and final.usage.output_tokens > 0
    rows = _rows(srv, "a1")
    assert [r[8] - r[7] for r in rows] == [300_000, 300_000]


def test_anthropic_sdk_honours_retry_after() -> None:
    q = Quota(first_429=1, retry_after_s=1.0, shape="anthropic")
    with _server(quota_llm=q) as s:
        _anthropic(s, "a").messages.create(model="c", max_tokens=10, messages=MSG)
        rows = _rows(s, "a")
    assert [r[9] for r in rows] == [429, 200]
    assert _gaps_s(rows)[0] >= 1.0 > MAX_BACKOFF_1_S


def test_anthropic_sdk_retries_529_overloaded_then_raises() -> None:
    q = Quota(outages=((0.0, 3600.0, 529),), retry_after_s=None, shape="anthropic")
    with _server(quota_llm=q) as s:
        with pytest.raises(_sdk("anthropic").APIStatusError) as e:
            _anthropic(s, "a").messages.create(model="c", max_tokens=10, messages=MSG)
        rows = _rows(s, "a")
    assert e.value.status_code == 529 and len(rows) == 3
    assert [r[11] for r in rows] == ["outage"] * 3
