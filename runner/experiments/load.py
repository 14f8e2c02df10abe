"""Load and soak of the fake provider, beside a bare ASGI app on the same uvicorn.

Both servers run in their own process on 127.0.0.1; the load comes from this
process through a deliberately thin HTTP/1.1 client (asyncio streams, keep-alive
connections, one request in flight per connection), so that the client's own
cost stays small next to the server's. Reported: requests/s, the latency a
request adds beyond the one it was asked to wait (p50, p99), non-200 answers,
and the server process's resident memory over a soak.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sim.dists import Constant
from sim.scenario import load_scenario

from ..world.bare import bare_app
from ..world.fake_provider import ServerProcess

__all__ = [
    "ALL_ROUTES",
    "FLAT_BOUND_MB",
    "LoadResult",
    "Soak",
    "bare_app",
    "run_load",
    "run_soak",
]

_BODY = json.dumps(
    {
        "text": "hello",
        "audioId": "tts_sb-{cid}-o0-s0",
        "ttsProviderId": "p",
        "ttsVoice": "v",
        "ttsApiKey": "load",
    }
)

# issue 21: the OpenAI-compatible endpoint, each request a fresh call of its own classroom
_CHAT_BODY = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hello"}]})
# (its attempt counted by the fake, as for an SDK's or upstream's calls and the old routes')
_CHAT_HEADERS = "Authorization: Bearer load\r\nx-scenebench-call: content/{cid}/0/0\r\n"
# Anthropic's shape (POST /v1/messages): its key in x-api-key, max_tokens required (the
# answer's 64 filler words stay under it), attempts counted by the fake as above
_MESSAGES_BODY = json.dumps(
    {"model": "m", "max_tokens": 1024, "messages": [{"role": "user", "content": "hello"}]}
)
_MESSAGES_HEADERS = (
    "x-api-key: load\r\nanthropic-version: 2023-06-01\r\nx-scenebench-call: content/{cid}/0/0\r\n"
)
# target -> (path, body template, extra header lines template)
_TARGETS = {
    "tts": (b"/api/generate/tts", _BODY, ""),
    "chat": (b"/v1/chat/completions", _CHAT_BODY, _CHAT_HEADERS),
    "messages": (b"/v1/messages", _MESSAGES_BODY, _MESSAGES_HEADERS),
}


@dataclass
class LoadResult:
    label: str
    requests: int
    seconds: float
    statuses: dict[int, int]
    added_p50_ms: float
    added_p99_ms: float
    max_concurrent: int
    rss_mb: list[tuple[int, float]]

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    @property
    def errors(self) -> int:
        return sum(n for s, n in self.statuses.items() if s not in (200, 429))


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def _worker(
    port: int,
    n: int,
    latency_s: float,
    added: list[float],
    statuses: dict[int, int],
    counter: list[int],
    cid: int,
    target: str = "tts",
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        await _requests(reader, writer, n, latency_s, added, statuses, counter, cid, target)
    finally:
        writer.close()


async def _requests(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    n: int,
    latency_s: float,
    added: list[float],
    statuses: dict[int, int],
    counter: list[int],
    cid: int,
    target: str,
) -> None:
    """``n`` requests one after another on an open keep-alive connection."""
    path, template, head_template = _TARGETS[target]
    for i in range(n):
        # every request its own classroom: a fresh call, as in real traffic
        room = str(cid * 1_000_000 + i)
        body = template.replace("{cid}", room).encode()
        heads = head_template.replace("{cid}", room).encode()
        req = (
            b"POST "
            + path
            + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            + heads
            + b"Content-Type: application/json\r\nContent-Length: "
            + str(len(body)).encode()
            + b"\r\n\r\n"
            + body
        )
        t0 = time.perf_counter()
        writer.write(req)
        head = await reader.readuntil(b"\r\n\r\n")  # the status line and headers at once
        status = int(head.split(None, 2)[1])
        at = head.lower().find(b"\r\ncontent-length:")
        length = 0 if at < 0 else int(head[at + 17 : head.index(b"\r\n", at + 2)])
        await reader.readexactly(length)
        added.append(time.perf_counter() - t0 - latency_s)
        statuses[status] = statuses.get(status, 0) + 1
        counter[0] += 1


async def _drive(
    port: int,
    pid: int,
    connections: int,
    per_connection: int,
    latency_s: float,
    label: str,
    rss_every: int,
    target: str = "tts",
    first_connection: int = 0,
) -> LoadResult:
    added: list[float] = []
    statuses: dict[int, int] = {}
    counter = [0]
    rss: list[tuple[int, float]] = [(0, _rss_mb(pid))]

    async def sample() -> None:
        nxt = rss_every
        while True:
            await asyncio.sleep(0.2)
            if counter[0] >= nxt:
                rss.append((counter[0], _rss_mb(pid)))
                nxt += rss_every

    t0 = time.perf_counter()
    sampler = asyncio.ensure_future(sample())
    try:
        await asyncio.gather(
            *(
                _worker(port, per_connection, latency_s, added, statuses, counter, i, target)
                for i in range(first_connection, first_connection + connections)
            )
        )
    finally:
        sampler.cancel()
    seconds = time.perf_counter() - t0
    rss.append((counter[0], _rss_mb(pid)))
    q = statistics.quantiles(added, n=100) if len(added) >= 100 else [math_nan()] * 99
    return LoadResult(
        label,
        counter[0],
        seconds,
        statuses,
        1e3 * statistics.median(added),
        1e3 * q[98],
        connections,
        rss,
    )


def math_nan() -> float:
    return float("nan")


def _zero_latency_scenario(latency_s: float, chat: bool) -> Any:
    """The default scenario with every call ``latency_s`` long, no quota and no random fault
    on the TTS key (and on the LLM key too with ``chat``): every request a plain 200."""
    sc = load_scenario("default").replace(
        content=Constant(latency_s), actions=Constant(latency_s), tts=Constant(latency_s)
    )
    sc = sc.with_quota(llm_inflight=0, tts_inflight=0)
    sc = sc.replace(quota_tts=sc.quota_tts.__class__())  # no random faults either
    if chat:  # the chat endpoint uses the LLM key: no faults there either
        sc = sc.replace(quota_llm=sc.quota_llm.__class__())
    return sc


def run_load(
    *,
    connections: int,
    per_connection: int,
    latency_s: float,
    rss_every: int = 10_000,
    target: str = "tts",
) -> tuple[LoadResult, LoadResult]:
    """The same load on the fake provider and on a bare ASGI app; both in their own process.
    ``target``: the fake provider's route, ``tts`` (OpenMAIC's TTS route, the default),
    ``chat`` (``POST /v1/chat/completions``, issue 21) or ``messages`` (``POST /v1/messages``)."""
    sc = _zero_latency_scenario(latency_s, target != "tts")
    out = []
    for label, srv in (
        ("fake provider", ServerProcess(sc, 0, time_scale=1.0, keep_log=True)),
        ("bare ASGI app", ServerProcess(sc, 0, bare_latency_s=latency_s)),
    ):
        with srv:
            port = int(srv.base_url.rsplit(":", 1)[1])
            out.append(
                asyncio.run(
                    _drive(
                        port,
                        srv.process.pid or 0,
                        connections,
                        per_connection,
                        latency_s,
                        label,
                        rss_every,
                        target if label == "fake provider" else "tts",
                    )
                )
            )
    return out[0], out[1]


LOG_WINDOW = 100_000  # the fake provider keeps the newest 100,000 log rows and calls
# Memory is flat when RSS after N requests is at most this many MB above RSS after N / 2, once
# N / 2 >= LOG_WINDOW (log and attempt table full): the attempt table (an OrderedDict of the
# newest 100,000 calls) grows once more after it is full, when its churn first forces a
# reallocation: 10.5 -> 17.9 MB (sys.getsizeof; then flat, checked to 400,000 calls); twice
# that step, for the allocator keeping what it freed.
FLAT_BOUND_MB = 16.0


@dataclass
class Soak:
    """A soak of the fake provider beside the bare app, interleaved in rounds; per round a
    chunk on OpenMAIC's TTS route, the same requests on the bare app, one on ``POST
    /v1/chat/completions``, the same on the bare app and, when soaked, one on ``POST
    /v1/messages`` and the same on the bare app (each the same number of requests). A route's
    ratio is to the bare app given its own requests (its headers and body parsed by the same
    server: only the fake provider's own work differs)."""

    requests: int  # on the fake provider, its routes together
    rounds: int
    tts: LoadResult  # OpenMAIC's old route, all rounds together
    chat: LoadResult  # the provider-shaped endpoints: OpenAI's
    bare: LoadResult  # the bare app given the TTS route's requests
    rss_mb: list[tuple[int, float]]  # (fake provider requests so far, its RSS) after each chunk
    load_avg: tuple[list[float], list[float]]  # os.getloadavg() before and after
    messages: LoadResult | None = None  # Anthropic's, when soaked
    bare_chat: LoadResult | None = None  # the bare app given the chat requests
    bare_messages: LoadResult | None = None  # ... the messages requests, when soaked

    def rss_at(self, n: int) -> tuple[int, float]:
        """The first RSS sample at or after ``n`` requests."""
        return next((at, mb) for at, mb in self.rss_mb if at >= n)

    @property
    def memory_flat(self) -> bool | None:
        """RSS after all requests within :data:`FLAT_BOUND_MB` of RSS after half of them;
        ``None`` while half is under :data:`LOG_WINDOW` (the bounded log still filling)."""
        if self.requests // 2 < LOG_WINDOW:
            return None
        return self.rss_mb[-1][1] - self.rss_at(self.requests // 2)[1] <= FLAT_BOUND_MB

    def to_dict(self) -> dict[str, Any]:
        half_at, half_mb = self.rss_at(self.requests // 2)
        return {
            "requests": self.requests,
            "rounds": self.rounds,
            "tts_rps": self.tts.rps,
            "chat_rps": self.chat.rps,
            "bare_rps": self.bare.rps,
            "tts_over_bare": self.tts.rps / self.bare.rps,
            **self._route_ratios("chat", self.chat, self.bare_chat),
            **self._route_ratios("messages", self.messages, self.bare_messages),
            "non_200": {k: _non_200(r) for k, r in self._parts()},
            "rss_mb": [list(x) for x in self.rss_mb],
            "rss_start_mb": self.rss_mb[0][1],
            "rss_half_at": half_at,
            "rss_half_mb": half_mb,
            "rss_end_mb": self.rss_mb[-1][1],
            "memory_flat": self.memory_flat,
            "memory_bound": f"RSS after {self.requests:,} requests <= RSS after {half_at:,} "
            f"+ {FLAT_BOUND_MB:.0f} MB (the 100,000-call attempt table's last growth, twice); "
            f"checked once half the soak is >= {LOG_WINDOW:,} requests (log and table full)",
            "load_avg_before": self.load_avg[0],
            "load_avg_after": self.load_avg[1],
            **{k: _result_dict(r) for k, r in self._parts()},
        }

    def _route_ratios(
        self, route: str, fake: LoadResult | None, bare: LoadResult | None
    ) -> dict[str, float]:
        """A route's rate and its ratio to the bare app given the same requests, and (as
        before issue 24's ninth pass) to the bare app given the TTS route's."""
        if fake is None:
            return {}
        out = {f"{route}_rps": fake.rps, f"{route}_over_bare_tts": fake.rps / self.bare.rps}
        if bare is not None:
            out[f"bare_{route}_rps"] = bare.rps
            out[f"{route}_over_bare"] = fake.rps / bare.rps
        return out

    def _parts(self) -> tuple[tuple[str, LoadResult], ...]:
        apis = (("fake_chat", self.chat), ("fake_messages", self.messages))
        bares = (("bare_chat", self.bare_chat), ("bare_messages", self.bare_messages))
        return (
            ("fake_tts", self.tts),
            *((k, r) for k, r in apis if r is not None),
            ("bare", self.bare),
            *((k, r) for k, r in bares if r is not None),
        )


def _non_200(r: LoadResult) -> int:
    return sum(n for s, n in r.statuses.items() if s != 200)


def _result_dict(r: LoadResult) -> dict[str, Any]:
    return {
        "requests": r.requests,
        "seconds": r.seconds,
        "rps": r.rps,
        "statuses": {str(k): v for k, v in r.statuses.items()},
        "non_200": _non_200(r),
        "added_p50_ms": r.added_p50_ms,
        "added_p99_ms": r.added_p99_ms,
    }


def _merge(label: str, parts: list[LoadResult]) -> LoadResult:
    """Chunks of one kind as one result (seconds summed; percentiles: the chunks' medians)."""
    statuses: dict[int, int] = {}
    for r in parts:
        for k, v in r.statuses.items():
            statuses[k] = statuses.get(k, 0) + v
    return LoadResult(
        label,
        sum(r.requests for r in parts),
        sum(r.seconds for r in parts),
        statuses,
        statistics.median(r.added_p50_ms for r in parts),
        statistics.median(r.added_p99_ms for r in parts),
        max(r.max_concurrent for r in parts),
        [],
    )


async def _chunk(
    conns: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]],
    per_connection: int,
    target: str,
    first_cid: int,
    label: str,
) -> LoadResult:
    """``per_connection`` requests on each open connection at once (connection ``i`` names
    classrooms ``(first_cid + i) * 1,000,000 + k``)."""
    added: list[float] = []
    statuses: dict[int, int] = {}
    counter = [0]
    t0 = time.perf_counter()
    await asyncio.gather(
        *(
            _requests(r, w, per_connection, 0.0, added, statuses, counter, first_cid + i, target)
            for i, (r, w) in enumerate(conns)
        )
    )
    seconds = time.perf_counter() - t0
    q = statistics.quantiles(added, n=100) if len(added) >= 100 else [math_nan()] * 99
    p50 = 1e3 * statistics.median(added)
    return LoadResult(label, counter[0], seconds, statuses, p50, 1e3 * q[98], len(conns), [])


async def _soak_rounds(
    ports: dict[str, int],
    pid: int,
    rounds: int,
    connections: int,
    per_chunk: int,
    one_round: tuple[tuple[str, str], ...],
) -> tuple[dict[str, list[LoadResult]], list[tuple[int, float]]]:
    conns = {
        k: [await asyncio.open_connection("127.0.0.1", port) for _ in range(connections)]
        for k, port in ports.items()
    }
    parts: dict[str, list[LoadResult]] = {kind: [] for kind, _ in one_round}
    rss = [(0, _rss_mb(pid))]
    done = 0
    try:
        for r in range(rounds):
            for k, (kind, target) in enumerate(one_round):
                # connection ids apart per chunk: every request its own classroom
                first = (r * len(one_round) + k) * connections
                server = "bare" if kind.startswith("bare") else "fake"
                got = await _chunk(conns[server], per_chunk, target, first, kind)
                parts[kind].append(got)
                if server == "fake":
                    done += got.requests
                    rss.append((done, _rss_mb(pid)))
    finally:
        for pairs in conns.values():
            for _, w in pairs:
                w.close()
    return parts, rss


def _round(routes: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    """One round of the soak: (what, route), a chunk on each of the fake provider's ``routes``
    with one of the same requests on the bare app after each (``bare`` for the TTS route's,
    ``bare_<route>`` for another's)."""
    bare = {r: "bare" if r == "tts" else f"bare_{r}" for r in routes}
    return tuple(pair for r in routes for pair in ((r, r), (bare[r], r)))


ROUTES = ("tts", "chat")  # the soak's routes unless given: OpenMAIC's TTS route, OpenAI's chat
ALL_ROUTES = (*ROUTES, "messages")  # and Anthropic's messages (what bench soaks)


def run_soak(
    requests: int, *, rounds: int = 4, connections: int = 100, routes: tuple[str, ...] = ROUTES
) -> Soak:
    """At least ``requests`` zero-latency requests to the fake provider (a whole chunk per
    connection, round and route), an equal share on each of ``routes`` (``tts``: the TTS
    route; ``chat``: the OpenAI chat endpoint; ``messages``: Anthropic's), each request its
    own classroom (a fresh call), and the same requests to the bare app, interleaved in ``rounds``
    rounds (so a busy machine slows them all alike); both servers in their own process,
    alive for the whole soak, ``connections`` keep-alive connections to each opened once.
    ``tts`` and ``chat`` are always soaked."""
    routes = tuple(dict.fromkeys((*ROUTES, *routes)))
    per_chunk = max(1, -(-requests // (len(routes) * rounds * connections)))  # per connection
    chunk = per_chunk * connections
    sc = _zero_latency_scenario(0.0, chat=True)
    before = list(os.getloadavg())
    with (
        ServerProcess(sc, 0, time_scale=1.0, keep_log=True) as fake,
        ServerProcess(sc, 0, bare_latency_s=0.0) as bare,
    ):
        pid = fake.process.pid or 0
        ports = {k: int(s.base_url.rsplit(":", 1)[1]) for k, s in (("fake", fake), ("bare", bare))}
        soaked = _soak_rounds(ports, pid, rounds, connections, per_chunk, _round(routes))
        parts, rss = asyncio.run(soaked)
    msgs = "messages" in parts
    return Soak(
        len(routes) * chunk * rounds,
        rounds,
        _merge("fake provider, TTS route", parts["tts"]),
        _merge("fake provider, /v1/chat/completions", parts["chat"]),
        _merge("bare ASGI app, the TTS route's requests", parts["bare"]),
        rss,
        (before, list(os.getloadavg())),
        _merge("fake provider, /v1/messages", parts["messages"]) if msgs else None,
        _merge("bare ASGI app, the chat requests", parts["bare_chat"]),
        _merge("bare ASGI app, the messages requests", parts["bare_messages"]) if msgs else None,
    )
