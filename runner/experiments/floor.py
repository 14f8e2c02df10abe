"""The wall clock's floor: real time a request costs beyond the latency it asked for.

Two figures measured side by side in one run, on the same event loop and client settings:

* ``harness``: serial classrooms of the real pipeline against the fake provider (in its own
  process), every call a constant ``call_s``: (makespan - requests x call_s) / requests;
* ``bare``: plain httpx POSTs to a bare uvicorn app (:func:`runner.experiments.load.bare_app`) that
  sleeps the same ``call_s``: elapsed - call_s. Its zero-latency round trip is reported too.

The harness cannot beat ``bare`` (the same sockets, the same sleep, the same wake-ups);
what it adds on top (the pipeline's and the provider's own work) is ``harness - bare``.
The time scale of a wall-clock run is picked from ``harness`` (:func:`pick_time_scale`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import math
import multiprocessing
import statistics
import time
from dataclasses import dataclass
from typing import Any

import httpx

from sim.config import RunConfig
from sim.dists import Constant
from sim.scenario import Scenario, load_scenario

from ..world.fake_provider import ServerProcess, ServerThread, create_app
from ..world.pipeline import Clock
from ..world.run import frozen_gc, pool_size, run, wall_client

__all__ = [
    "FLOOR_CALL_S",
    "Floor",
    "ScaleChoice",
    "choose_time_scale",
    "floor_of_this_process",
    "floor_scenario",
    "measure_floor",
    "pick_time_scale",
]

FLOOR_CALL_S = 0.02  # real seconds per call: the order of a wall run's calls at its scale
_BARE_BODY = {"text": "hi", "audioId": "tts_sb-0-o0-s0", "ttsProviderId": "p", "ttsVoice": "v"}


@dataclass(frozen=True)
class Floor:
    """Medians over the rounds, in real seconds per request."""

    harness_s: float  # the pipeline against the fake provider, beyond the latency asked
    bare_s: float  # bare httpx -> bare uvicorn app sleeping the same latency, beyond it
    bare_rtt_s: float  # bare httpx -> bare uvicorn app, zero latency: the round trip
    call_s: float
    rounds: int

    @property
    def diff_s(self) -> float:
        """What the harness adds on top of a bare request with the same latency."""
        return self.harness_s - self.bare_s

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "diff_s": self.diff_s}


def floor_scenario(call_s: float = FLOOR_CALL_S) -> Scenario:
    """The default classroom with every call ``call_s`` long, no quota, no fault (a retry
    would add its back-off to the figure)."""
    sc = load_scenario("default")
    sc = sc.replace(content=Constant(call_s), actions=Constant(call_s), tts=Constant(call_s))
    sc = sc.with_quota(llm_inflight=0, tts_inflight=0)

    def clean(q: Any) -> Any:
        return dataclasses.replace(
            q, p_429=0.0, p_5xx=0.0, p_reset=0.0, p_stall=0.0, p_truncate=0.0
        )

    return sc.replace(quota_llm=clean(sc.quota_llm), quota_tts=clean(sc.quota_tts), name="floor")


def _client(url: str) -> httpx.AsyncClient:
    return wall_client(url, pool_size(1))  # as a serial classroom's own run has it


async def _bare(client: httpx.AsyncClient, n: int, call_s: float) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        await client.post("/api/generate/tts", json=_BARE_BODY)
        out.append(time.perf_counter() - t - call_s)
    return out


async def _harness(client: httpx.AsyncClient, sc: Scenario, run_id: int, call_s: float) -> float:
    from ..world.run import run_async

    cfg = RunConfig.of("serial", 1)
    _, res = await run_async(client, sc, cfg, run_id=run_id, clock=Clock(1.0), world="wall")
    n = max(1, res.requests)
    return (res.makespan_s - n * call_s) / n


async def _measure(urls: list[str], sc: Scenario, call_s: float, rounds: int) -> Floor:
    from ..world.run import warm_up

    clients = [_client(u) for u in urls]
    async with contextlib.AsyncExitStack() as stack:
        for c in clients:
            await stack.enter_async_context(c)
            await warm_up(c, pool_size(1))
        per_h: list[float] = []
        per_b: list[float] = []
        per_0: list[float] = []
        for r in range(rounds):  # interleaved: the machine's load hits both alike
            h = await _harness(clients[0], sc, r, call_s)
            per_h.append(h)
            if len(clients) > 1:
                per_b.append(statistics.median(await _bare(clients[1], 30, call_s)))
                per_0.append(statistics.median(await _bare(clients[2], 30, 0.0)))
    nan = math.nan
    return Floor(
        harness_s=max(0.0, statistics.median(per_h)),
        bare_s=statistics.median(per_b) if per_b else nan,
        bare_rtt_s=statistics.median(per_0) if per_0 else nan,
        call_s=call_s,
        rounds=rounds,
    )


def measure_floor(*, call_s: float = FLOOR_CALL_S, rounds: int = 3, bare: bool = True) -> Floor:
    """The floor now, on this machine (each round: a classroom, then 30 bare requests at
    ``call_s`` and 30 at zero latency). ``bare=False`` measures the harness only."""
    sc = floor_scenario(call_s)
    with contextlib.ExitStack() as stack:
        if multiprocessing.current_process().daemon:  # a daemonic worker starts no process
            from ..world.bare import bare_app

            apps = [create_app(sc, 0, time_scale=1.0, keep_log=False)]
            apps += [bare_app(call_s), bare_app(0.0)] if bare else []
            urls = [stack.enter_context(ServerThread(a)).base_url for a in apps]
        else:
            servers = [ServerProcess(sc, 0, time_scale=1.0, keep_log=False)]
            if bare:
                servers += [
                    ServerProcess(sc, 0, bare_latency_s=call_s),
                    ServerProcess(sc, 0, bare_latency_s=0.0),
                ]
            urls = [stack.enter_context(s).base_url for s in servers]
        with frozen_gc():
            return asyncio.run(_measure(urls, sc, call_s, rounds))


@functools.cache
def floor_of_this_process() -> float:
    """The harness floor, measured once per process (a sweep's worker picks every wall-clock
    cell's time scale from it)."""
    return measure_floor(rounds=1, bare=False).harness_s


def pick_time_scale(
    floor_s: float,
    requests: int,
    model_s: float,
    *,
    target: float = 0.01,
    min_scale: float = 0.0,
    max_scale: float = 1.0,
) -> float:
    """The smallest time scale (two significant digits, rounded up; within
    ``[min_scale, max_scale]``) at which ``requests`` requests costing ``floor_s`` real
    seconds each stay under ``target`` of ``model_s`` model seconds.

    A run at scale ``s`` lasts ``s x model_s`` real seconds; every request adds ``floor_s``
    of real time, ``floor_s / s`` model seconds; all requests counted (an upper bound: only
    those on the critical path add up)."""
    if not (model_s > 0) or requests <= 0 or not (floor_s > 0):
        return float(min(max_scale, max(min_scale, 1e-3)))
    need = floor_s * requests / (target * model_s)
    digits = 1 - math.floor(math.log10(need))
    nice = math.ceil(need * 10**digits - 1e-9) / 10**digits
    return float(min(max_scale, max(min_scale, nice)))


@dataclasses.dataclass(frozen=True)
class ScaleChoice:
    """A wall-clock run's time scale, picked from the floor measured before it."""

    time_scale: float
    floor_s: float  # real seconds per request beyond its latency, measured just now
    requests: int  # requests of the virtual run of the same command and seed
    model_s: float  # its makespan, model seconds
    target: float

    @property
    def overhead_share(self) -> float:
        """The floor's upper bound on the run's error: floor x requests / real duration."""
        return self.floor_s * self.requests / (self.time_scale * self.model_s)

    def line(self) -> str:
        return (
            f"time scale {self.time_scale:g} (picked: harness floor "
            f"{self.floor_s * 1e3:.2f} ms/request x {self.requests} requests <= "
            f"{100 * self.overhead_share:.2f}% of {self.model_s:.0f} model s; "
            f"target {100 * self.target:g}%; set --time-scale to override)"
        )


def choose_time_scale(
    scenario: Scenario,
    config: RunConfig,
    *,
    seed: int = 0,
    run_id: int = 0,
    target: float = 0.005,
    floor_s: float | None = None,
) -> ScaleChoice:
    """The time scale at which the harness's floor costs at most ``target`` of the run's
    model time: the virtual run of the same command gives the requests and the makespan,
    the floor is measured now (:func:`runner.experiments.floor.measure_floor`) unless given. Never
    below the scenario's own ``time_scale``. The default target is half of the 1% budget:
    the floor is measured on 20 ms calls, and waking after a longer sleep costs up to a
    third more on a busy machine (docs/validation.md)."""
    config = dataclasses.replace(config, records=False)
    [ref] = run(scenario, config, clock="virtual", seed=seed, run_id=run_id)
    if floor_s is None:
        floor_s = measure_floor(rounds=1, bare=False).harness_s
    n = ref.requests + ref.timeouts
    scale = pick_time_scale(
        floor_s, n, ref.makespan_s, target=target, min_scale=scenario.time_scale
    )
    return ScaleChoice(scale, floor_s, n, ref.makespan_s, target)
