"""Run the real pipeline for one classroom on one of two clocks.

* ``virtual``: the pipeline and the fake provider app in one looptime event loop,
  talking through ``httpx.ASGITransport``: exact model times, milliseconds of CPU;
* ``wall``: the fake provider on a real uvicorn socket on 127.0.0.1 (or any
  ``base_url``), latencies compressed by ``time_scale``; times reported in model
  seconds.

Same pipeline code, same provider code; only the clock and the transport differ.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import multiprocessing
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import httpx
import looptime

from sim.config import RunConfig
from sim.draws import tenant_offsets_us
from sim.errors import UserError
from sim.rules import CLOCKS, ClockKind, clamp_concurrency
from sim.scenario import Scenario
from sim.schema import RunResult, records_from_log

from .fake_provider import ServerProcess, ServerThread, create_app
from .pipeline import Clock, ScenePipeline

__all__ = [
    "frozen_gc",
    "pool_size",
    "read_server_concurrency",
    "run",
    "run_async",
    "wall_client",
    "warm_up",
]

Hook = Callable[[ScenePipeline], Awaitable[None]]


async def read_server_concurrency(
    client: httpx.AsyncClient, endpoint: str | None = "/api/server-providers"
) -> int:
    """Read ``generation.parallelSceneConcurrency`` where the profile's client reads it
    (``/api/server-providers`` since #660; ``None``: the version has no knob → 0), parsed
    and clamped like upstream."""
    if endpoint is None:
        return 0
    try:
        resp = await client.get(endpoint)
        raw = resp.json().get("generation", {}).get("parallelSceneConcurrency", 0)
    except (httpx.HTTPError, ValueError, AttributeError):
        return 0
    return clamp_concurrency(raw)


async def run_async(
    client: httpx.AsyncClient,
    scenario: Scenario,
    config: RunConfig,
    *,
    seed: int = 0,
    run_id: int = 0,
    clock: Clock | None = None,
    world: str = ClockKind.WALL,
    hook: Hook | None = None,
    api_keys: tuple[str, str] = ("llm-key", "tts-key"),
) -> tuple[ScenePipeline, RunResult]:
    """One classroom (id ``run_id``) of ``config`` through the pipeline on an existing client,
    with ``hook`` beside it; returns the pipeline and its result. A config without a
    concurrency reads the provider's knob first. ``api_keys`` are the (LLM, TTS) keys the
    classroom sends; quotas are per key."""
    if config.concurrency is None:
        knob = await read_server_concurrency(client, scenario.client.knob_endpoint)
        config = dataclasses.replace(config, concurrency=knob)
    pipe = ScenePipeline(
        client, scenario, config, clock or Clock(1.0),
        classroom=run_id, api_keys=api_keys, world=world, seed=seed,
    )  # fmt: skip
    if hook is None:
        return pipe, await pipe.run()
    task = asyncio.ensure_future(pipe.run())
    hook_task = asyncio.ensure_future(hook(pipe))
    res = await task
    hook_task.cancel()
    await asyncio.gather(hook_task, return_exceptions=True)
    return pipe, res


def run(
    scenario: Scenario,
    config: RunConfig,
    *,
    clock: str = ClockKind.VIRTUAL,
    seed: int = 0,
    run_id: int = 0,
    time_scale: float | None = None,
    base_url: str | None = None,
    hook: Hook | None = None,
) -> list[RunResult]:
    """Run ``config`` through the real pipeline against the fake provider: one result per
    classroom (``config.tenants`` of them on the same keys, ids ``run_id * tenants + j``, as
    :func:`sim.simulate`; several only on the virtual clock).

    ``clock`` is a :class:`sim.rules.ClockKind`: ``virtual`` (exact model times) or
    ``wall`` (a real socket, latencies compressed by ``time_scale``, default the
    scenario's). ``config.concurrency=None`` reads the provider's knob. With ``base_url``
    the provider is external (wall clock only); otherwise one is started for the run.
    ``config.records`` attaches the provider's request log to each result. ``hook`` runs
    beside a single classroom's pipeline (e.g. to stop it).
    """
    if clock not in CLOCKS:
        raise UserError(f"clock: must be one of {', '.join(CLOCKS)}; got {clock!r}")
    if clock == ClockKind.VIRTUAL and base_url is not None:
        raise UserError(
            "base_url: only with clock='wall' (a virtual clock needs the in-process provider)"
        )
    if seed < 0 or run_id < 0:
        raise UserError(f"seed and run_id: must be >= 0, got {seed}, {run_id}")
    if config.tenants > 1:
        if clock != ClockKind.VIRTUAL or hook is not None:
            raise UserError("tenants: classrooms sharing the keys run on the virtual clock only")
        return _run_tenants(scenario, config, seed, run_id)
    if clock == ClockKind.VIRTUAL:
        return [_run_virtual(scenario, config, seed, run_id, hook)]
    scale = scenario.time_scale if time_scale is None else time_scale
    if not scale > 0:
        raise UserError(f"time_scale: must be > 0, got {scale}")
    with frozen_gc():
        return [asyncio.run(_run_wall(scenario, config, seed, run_id, scale, base_url, hook))]


@contextlib.contextmanager
def frozen_gc() -> Iterator[None]:
    """For a wall-clock run: the objects alive before it move out of the garbage collector's
    sight (``gc.freeze``) until it ends. A full collection over everything the process has
    imported (numpy, pandas, scipy) stalls the event loop for 100-200 ms on a busy machine:
    a request sent in that stall is late by that much."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _in_virtual_world(app: Any, body: Callable[[httpx.AsyncClient], Awaitable[Any]]) -> Any:
    """Run ``body(client)`` against ``app`` through the ASGI transport on a fresh looptime loop
    that starts at virtual time 0 with microsecond resolution."""

    async def main() -> Any:
        # an injected reset raises inside the app after a partial body: hand that partial body
        # to the client (a failed request), as a socket would, instead of raising into it
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://fake-provider") as cl:
            return await body(cl)

    loop = looptime.new_event_loop(start=0.0, resolution=1e-6, noop_cycles=0)
    try:
        return loop.run_until_complete(main())
    finally:
        loop.close()


def _run_virtual(
    scenario: Scenario, cfg: RunConfig, seed: int, run_id: int, hook: Hook | None
) -> RunResult:
    app = create_app(scenario, seed, virtual=True, keep_log=cfg.records)
    fake = app.state.fake

    async def body(cl: httpx.AsyncClient) -> RunResult:
        world = ClockKind.VIRTUAL
        _, res = await run_async(
            cl, scenario, cfg, seed=seed, run_id=run_id, clock=Clock(1.0), world=world, hook=hook
        )
        if cfg.records:
            res = dataclasses.replace(
                res, requests_log=tuple(records_from_log(fake.log_rows(run_id)))
            )
        return res

    result: RunResult = _in_virtual_world(app, body)
    return result


async def _run_wall(
    scenario: Scenario,
    cfg: RunConfig,
    seed: int,
    run_id: int,
    scale: float,
    base_url: str | None,
    hook: Hook | None,
) -> RunResult:
    server: ServerProcess | ServerThread | None = None
    if base_url is None:
        server = _own_server(scenario, seed, scale, cfg.records)
        base_url = server.base_url
    try:
        n = pool_size(cfg.concurrency, cfg.tts_concurrency)
        async with wall_client(base_url, n) as client:
            # The server's model clock at the run's start: shared monotonic clock when the
            # server is ours, else read from it (one round trip of error).
            t0_ext = None if server is not None else await _server_now_us(client)
            await warm_up(client, n)
            world = ClockKind.WALL
            pipe, res = await run_async(
                client, scenario, cfg, seed=seed, run_id=run_id, clock=Clock(scale), world=world,
                hook=hook,
            )  # fmt: skip
            if cfg.records:
                if server is not None:
                    t0_server = round((pipe.clock.t0 - _epoch(server)) / scale * 1e6)
                else:
                    t0_server = t0_ext or 0
                log = await _server_log(client, run_id)
                res = dataclasses.replace(
                    res, requests_log=tuple(records_from_log(log, t0_us=t0_server))
                )
        return res
    finally:
        if server is not None:
            server.stop()


def pool_size(concurrency: int | None, tts_concurrency: int | None = None) -> int:
    """Connections one classroom can use at once: ``c`` content calls, the loop's call and
    its clips (``tts_concurrency``, else ``c``); 10 when ``c`` is read from the provider."""
    c = 10 if concurrency is None else max(1, clamp_concurrency(concurrency))
    return c + max(1, tts_concurrency or c) + 2


def wall_client(base_url: str, connections: int) -> httpx.AsyncClient:
    """A wall-clock client: a pool of exactly the connections a classroom needs (httpx checks
    every pooled connection, with a system call each, whenever a request starts or ends: at
    80 connections that is milliseconds per request), and no timeout but the pipeline's own,
    in model seconds (``request_timeout_s``)."""
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    return httpx.AsyncClient(base_url=base_url, limits=limits, timeout=None)


def _own_server(
    scenario: Scenario, seed: int, scale: float, records: bool
) -> ServerProcess | ServerThread:
    """The run's provider: in its own process (its event loop shares no GIL with the
    pipeline's), or in a thread where a process may not start one (a daemonic worker)."""
    if multiprocessing.current_process().daemon:
        return ServerThread(create_app(scenario, seed, time_scale=scale, keep_log=records)).start()
    return ServerProcess(scenario, seed, time_scale=scale, keep_log=records).start()


def _epoch(server: ServerProcess | ServerThread) -> float:
    """The server's model-time origin on this machine's monotonic clock."""
    if isinstance(server, ServerProcess):
        return server.epoch
    return float(server.app.state.fake.epoch)


async def warm_up(client: httpx.AsyncClient, connections: int) -> None:
    """Open the pool's connections before the clock starts (TCP setup is not the pipeline's):
    requests the provider holds for 50 ms, all at once, so that each needs its own connection
    (quick ones would share a few)."""
    with contextlib.suppress(httpx.HTTPError):  # the run itself reports an unreachable provider
        hold = {"ms": "50"}
        await asyncio.gather(
            *(client.get("/api/_scenebench/hold", params=hold) for _ in range(connections))
        )


async def _server_now_us(client: httpx.AsyncClient) -> int:
    try:
        resp = await client.get("/api/_scenebench/clock")
        return int(resp.json()["now_us"])
    except (httpx.HTTPError, ValueError, KeyError, TypeError):
        return 0


async def _server_log(client: httpx.AsyncClient, cid: int) -> list[Any]:
    try:
        resp = await client.get("/api/_scenebench/log", params={"classroom": str(cid)})
        rows: list[Any] = resp.json()["log"]
        return rows
    except (httpx.HTTPError, ValueError, KeyError, TypeError):
        return []


def _run_tenants(scenario: Scenario, cfg: RunConfig, seed: int, run_id: int) -> list[RunResult]:
    app = create_app(scenario, seed, virtual=True, keep_log=cfg.records)
    fake = app.state.fake
    tenants = cfg.tenants
    offsets = tenant_offsets_us(seed, run_id, tenants, cfg.stagger_s, cfg.stagger_dist)

    async def one(client: httpx.AsyncClient, j: int) -> RunResult:
        if offsets[j]:
            await asyncio.sleep(offsets[j] / 1e6)
        cid = run_id * tenants + j
        clock, world = Clock(1.0), ClockKind.VIRTUAL
        _, res = await run_async(
            client, scenario, cfg, seed=seed, run_id=cid, clock=clock, world=world
        )
        log = tuple(records_from_log(fake.log_rows(cid))) if cfg.records else ()
        return dataclasses.replace(res, tenants=tenants, tenant=j, requests_log=log)

    async def body(cl: httpx.AsyncClient) -> list[RunResult]:
        return list(await asyncio.gather(*(one(cl, j) for j in range(tenants))))

    results: list[RunResult] = _in_virtual_world(app, body)
    return results
