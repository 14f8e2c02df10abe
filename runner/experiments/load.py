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
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

from sim.dists import Constant
from sim.scenario import load_scenario

from ..world.bare import bare_app
from ..world.fake_provider import ServerProcess

__all__ = ["LoadResult", "bare_app", "run_load"]

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
_CHAT_HEADERS = "Authorization: Bearer load\r\nx-scenebench-call: content/{cid}/0/0/0\r\n"
# target -> (path, body template, extra header lines template)
_TARGETS = {
    "tts": (b"/api/generate/tts", _BODY, ""),
    "chat": (b"/v1/chat/completions", _CHAT_BODY, _CHAT_HEADERS),
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
    path, template, head_template = _TARGETS[target]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
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
            status_line = await reader.readline()
            status = int(status_line.split()[1])
            length = 0
            while True:
                line = await reader.readline()
                if line in (b"\r\n", b""):
                    break
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            await reader.readexactly(length)
            added.append(time.perf_counter() - t0 - latency_s)
            statuses[status] = statuses.get(status, 0) + 1
            counter[0] += 1
    finally:
        writer.close()


async def _drive(
    port: int,
    pid: int,
    connections: int,
    per_connection: int,
    latency_s: float,
    label: str,
    rss_every: int,
    target: str = "tts",
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
                for i in range(connections)
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


def run_load(
    *,
    connections: int,
    per_connection: int,
    latency_s: float,
    rss_every: int = 10_000,
    target: str = "tts",
) -> tuple[LoadResult, LoadResult]:
    """The same load on the fake provider and on a bare ASGI app; both in their own process.
    ``target``: the fake provider's route, ``tts`` (OpenMAIC's TTS route, the default) or
    ``chat`` (``POST /v1/chat/completions``, issue 21)."""
    sc = load_scenario("default").replace(
        content=Constant(latency_s), actions=Constant(latency_s), tts=Constant(latency_s)
    )
    sc = sc.with_quota(llm_inflight=0, tts_inflight=0)
    sc = sc.replace(quota_tts=sc.quota_tts.__class__())  # no random faults either
    if target == "chat":  # the chat endpoint uses the LLM key: no faults there either
        sc = sc.replace(quota_llm=sc.quota_llm.__class__())
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
