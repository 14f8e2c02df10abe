"""The server's protocol (runner.world.lean_http): its transport holds one write back (a
response's head and body go out in one write, a lone write at the end of the loop's
iteration, in order); one keep-alive timer per connection closes it once idle as long as
uvicorn's would; and over a real socket the answers are byte for byte uvicorn's own
protocol's (the date header aside)."""

from __future__ import annotations

import asyncio
import itertools
import re
import socket
import time
from typing import Any

import looptime
import pytest

from runner.world import provider_api as _api
from runner.world.bare import bare_app
from runner.world.fake_provider import ServerThread, create_app
from runner.world.lean_http import HeldWrites, LeanHttpProtocol, _flusher, _KeepAlive
from tests.conftest import const_scenario


class _Recorder(asyncio.Transport):
    """A transport that records what is written to it."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False
        self.aborted = False

    def write(self, data: Any) -> None:
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


def _held() -> tuple[HeldWrites, _Recorder]:
    t = _Recorder()
    return HeldWrites(t, _flusher(asyncio.get_running_loop())), t


def test_two_writes_in_one_step_go_out_as_one() -> None:
    async def main() -> list[bytes]:
        h, t = _held()
        h.write(b"HTTP/1.1 200 OK\r\n\r\n")
        assert t.writes == []  # held
        h.write(b"body")
        h.write(b"next head")  # held again
        out = list(t.writes)
        await asyncio.sleep(0)  # the loop's iteration ends: the held write goes out
        return [*out, b"|", *t.writes]

    assert asyncio.run(main()) == [
        b"HTTP/1.1 200 OK\r\n\r\nbody",
        b"|",
        b"HTTP/1.1 200 OK\r\n\r\nbody",
        b"next head",
    ]


def test_a_lone_write_goes_out_when_the_app_awaits_and_order_is_kept() -> None:
    async def main() -> tuple[list[bytes], list[bytes]]:
        a, ta = _held()
        b, tb = _held()
        a.write(b"a1")
        b.write(b"b1")
        await asyncio.sleep(0)
        a.write(b"a2")
        a.write(b"a3")
        await asyncio.sleep(0)
        return ta.writes, tb.writes

    assert asyncio.run(main()) == ([b"a1", b"a2a3"], [b"b1"])


def test_close_sends_what_is_held_abort_drops_it_a_closed_one_gets_nothing() -> None:
    async def main() -> list[Any]:
        c, tc = _held()
        c.write(b"partial")
        c.close()
        x, tx = _held()
        x.write(b"dropped")
        x.abort()
        g, tg = _held()
        g.write(b"too late")
        tg.closed = True  # the peer went away before the loop's iteration ended
        await asyncio.sleep(0)
        return [tc.writes, tc.closed, tx.writes, tx.aborted, tg.writes]

    assert asyncio.run(main()) == [[b"partial"], True, [], True, []]


_DATE = re.compile(rb"\r\ndate: [^\r]*")


def _exchange(srv: ServerThread, raw: bytes, want_responses: int) -> bytes:
    """Send ``raw`` on one connection; read until ``want_responses`` answers are complete
    (by their content-length or last chunk) or the connection closes."""
    port = int(srv.base_url.rsplit(":", 1)[1])
    got = b""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(raw)
        while got.count(b"HTTP/1.1 ") < want_responses or not _complete(got):
            chunk = s.recv(65536)
            if not chunk:
                break
            got += chunk
    return _DATE.sub(b"", got)


def _complete(got: bytes) -> bool:
    head, sep, body = got.rpartition(b"HTTP/1.1 ")[2].partition(b"\r\n\r\n")
    if b"transfer-encoding: chunked" in head:  # a stream: until its last chunk
        return body.endswith(b"0\r\n\r\n")
    m = re.search(rb"content-length: (\d+)", head)
    return bool(sep) and m is not None and len(body) >= int(m.group(1))


def _request(path: str, body: bytes, extra: str = "") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


@pytest.mark.parametrize("which", ["fake", "bare"])
def test_answers_on_a_socket_are_uvicorns_own_bytes(which: str) -> None:
    tts = b'{"text": "hi", "audioId": "tts_sb-3-o1-s0", "ttsProviderId": "p", "ttsVoice": "v"}'
    chat = b'{"model": "m", "messages": [{"role": "user", "content": "hello"}]}'
    stream = b'{"model": "m", "stream": true, "messages": [{"role": "user", "content": "hi"}]}'
    reqs = [
        (_request("/api/generate/tts", tts), 1),
        (_request("/api/generate/tts", tts) + _request("/v1/chat/completions", chat), 2),
        (_request("/v1/chat/completions", stream, "x-scenebench-call: content/4/1/0/0\r\n"), 1),
        (_request("/api/generate/tts", b"{nope"), 1),
        (b"GET /api/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 1),
    ]
    answers = []
    for protocol in (LeanHttpProtocol, "httptools"):
        sc = const_scenario(content=0.002, actions=0.002, tts=0.001)
        app = create_app(sc, 0) if which == "fake" else bare_app(0.001)
        srv = ServerThread(app)
        srv.server.config.http = protocol
        _api._ids = itertools.count(1)  # both servers number their answers alike
        with srv:
            answers.append([_exchange(srv, raw, n) for raw, n in reqs])
    assert answers[0] == answers[1]
    assert all(a.startswith(b"HTTP/1.1 ") for a in answers[0])
    if which == "fake":  # the stream read to its end
        assert b"data: [DONE]" in answers[0][2] and answers[0][2].endswith(b"0\r\n\r\n")


class _Proto:
    """What the keep-alive timer uses of its protocol: the loop, and the handler it calls."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.fired_at: list[float] = []

    def timeout_keep_alive_handler(self) -> None:
        self.fired_at.append(self.loop.time())


def test_the_keep_alive_timer_fires_once_at_the_last_deadline() -> None:
    """On a virtual clock: armed at 0 and again at 3 (5 s each), the one loop timer fires at
    5, finds the deadline moved to 8, is set again and fires the handler at 8; disarmed
    (a request came), it calls nothing; stopped, the loop's timer is cancelled."""

    async def main() -> list[Any]:
        p = _Proto(asyncio.get_running_loop())
        k = _KeepAlive(p)  # type: ignore[arg-type]
        k.arm(p.loop, 5.0)
        first = k.handle
        await asyncio.sleep(3.0)
        k.arm(p.loop, 5.0)
        same = k.handle is first
        await asyncio.sleep(2.5)  # t = 5.5: the first timer fired early and was set again
        early = (list(p.fired_at), k.handle is not None and k.handle is not first)
        await asyncio.sleep(10.0)
        k.arm(p.loop, 5.0)
        k.cancel()
        await asyncio.sleep(10.0)
        k.arm(p.loop, 5.0)
        last = k.handle
        k.stop()
        assert last is not None
        return [same, early, p.fired_at, last.cancelled(), k.handle]

    loop = looptime.new_event_loop(start=0.0, resolution=1e-6, noop_cycles=0)
    try:
        got = loop.run_until_complete(main())
    finally:
        loop.close()
    assert got == [True, ([], True), [8.0], True, None]


@pytest.mark.wallclock
def test_a_connection_stays_open_while_busy_and_closes_once_idle() -> None:
    """Requests back to back for three keep-alive timeouts keep the connection (each answer
    moves the deadline); idle, it is closed, no earlier than the timeout after the last
    request was sent (a one-sided bound)."""
    timeout_s = 0.5
    srv = ServerThread(bare_app(0.0))
    srv.server.config.timeout_keep_alive = timeout_s  # type: ignore[assignment]  # (a delay)
    req = _request("/", b"{}")
    with srv:
        port = int(srv.base_url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            t0 = time.monotonic()
            answers = 0
            while time.monotonic() - t0 < 3 * timeout_s:
                sent = time.monotonic()
                s.sendall(req)
                got = b""
                while not _complete(got):
                    chunk = s.recv(65536)
                    assert chunk, "closed while busy"
                    got += chunk
                answers += 1
            assert s.recv(1) == b""  # closed by the server
            assert time.monotonic() - sent >= timeout_s
    assert answers > 3
