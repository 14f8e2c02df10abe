"""The server path in the real world: background classroom jobs through the fake provider.

The same jobs as :mod:`sim.jobs`, run by asyncio + httpx against the Starlette fake
provider (:mod:`runner.world.fake_provider`) under the virtual clock: each job is a
:class:`~runner.world.pipeline.ScenePipeline` whose loop skips a failed scene instead of
pausing, followed by the media step (every clip, ``media_concurrency`` at a time).
The provider's routes run the model-call budget (the scenario's
:class:`~sim.jobs.ServerProfile` ``route_policy``: the AI SDK inside the call), the
job runs ``withGenerationRetry`` around it (``client_policy``): the same two layers
as the model. With ``key_gate`` each key's :class:`~sim.keygate.KeyGate` is shared
by all jobs (or classrooms, :func:`run_keygate_tenants`).

Virtual clock only: the key-wide gates keep the key's own time line (the loop's time from
0), which a wall-clock run against a socket does not have yet.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence
from typing import Any

import httpx

from sim.config import RunConfig
from sim.draws import tenant_offsets_us
from sim.errors import UserError
from sim.job_machine import Call, Ended, JobCommand, JobMachine, LoopEnded, Start
from sim.job_machine import first_call as _first_call
from sim.job_machine import loop_call as _loop_call
from sim.jobs import (
    JobRecord,
    JobsRun,
    ServerProfile,
    arrivals_us,
    check_jobs,
    job_record,
    key_gates,
    server_scenario,
)
from sim.keygate import KeyGate
from sim.limiter import Rank
from sim.rules import ClockKind, Policy, RunStatus, Step
from sim.scenario import Scenario
from sim.schema import RunResult

from .fake_provider import create_app
from .pipeline import Clock, ScenePipeline, _AioGate
from .run import _in_virtual_world
from .wire import audio_id

__all__ = ["run_jobs", "run_keygate_tenants", "validate_jobs_exact"]


class _TenantAioGate(_AioGate):
    """One tenant's view of a shared :class:`KeyGate` (waiters carry the tenant's rank)."""

    def __init__(self, core: KeyGate, rank: int) -> None:
        super().__init__(core, _KeyClock(1.0))
        self.rank = rank

    async def acquire(self, rank: Rank = ()) -> None:
        await super().acquire((self.rank, *rank))

    def release(self, rank: Rank = ()) -> None:
        super().release((self.rank, *rank))


class _KeyClock(Clock):
    """The key's time, shared by all its tenants: the virtual loop's time from 0. A pipeline
    calls ``start()`` when its classroom starts; here that changes nothing, so every gate
    decision (holds, AIMD) of every tenant is on one time line."""

    def start(self) -> None:
        return


class _KeyPipeline(ScenePipeline):
    """A browser classroom whose every call passes the key-wide gates (the foreground scene's
    calls too, as the tenant's current call)."""

    def __init__(self, *args: Any, gates: tuple[KeyGate, KeyGate], rank: int, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self._llm_gate = _TenantAioGate(gates[0], rank)
        self._tts_gate = _TenantAioGate(gates[1], rank)

    def _make_gates(self, pending: int) -> None:
        return

    async def run(self) -> RunResult:
        self._t0 = self.clock.now_us()
        return await super().run()

    def _result(self, end_us: int) -> RunResult:
        """Times from the classroom's own start, as :meth:`ScenePipeline.run` reports them."""
        self.ready = [(i, t - self._t0) for i, t in self.ready]
        return super()._result(end_us - self._t0)

    async def _call(
        self,
        step: int,
        body: dict[str, Any],
        headers: dict[str, str],
        ident: tuple[int, int],
        gate: _AioGate | None = None,
        fg: bool = False,
    ) -> dict[str, Any] | None:
        if gate is None and self._llm_gate is not None:
            gate = self._tts_gate if step == Step.TTS else self._llm_gate
        return await super()._call(step, body, headers, ident, gate, fg)


class _JobPipeline(_KeyPipeline):
    """One server job: a thin driver of :class:`~sim.job_machine.JobMachine` (the scene loop,
    a failure skips the scene, then the media step); each step call is :meth:`_call`."""

    def __init__(
        self, *args: Any, gates: tuple[KeyGate, KeyGate] | None, rank: int, media_c: int, **kw: Any
    ) -> None:
        ScenePipeline.__init__(self, *args, **kw)
        if gates is not None:
            self._llm_gate = _TenantAioGate(gates[0], rank)
            self._tts_gate = _TenantAioGate(gates[1], rank)
        self.jm = JobMachine(media_c)
        self.cmds: list[JobCommand] = []  # what the machine said last
        self.speech: dict[int, list[dict[str, Any]]] = {}  # a generated scene's speech actions
        self.contents: dict[int, dict[str, Any]] = {}

    async def content(
        self, i: int, gate: _AioGate | None = None, fg: bool = False
    ) -> dict[str, Any] | None:
        """A content call (the loop's or the prefetch's); the machine hears it end."""
        res = await super().content(i, gate, fg)
        self.cmds = self.jm.feed(Ended(Step.CONTENT, i, 0, res is not None))
        return res

    async def actions(
        self, i: int, content: dict[str, Any], prev: list[str], fg: bool = False
    ) -> dict[str, Any] | None:
        res = await super().actions(i, content, prev, fg)
        ok = res is not None and isinstance(res.get("scene"), dict)
        if ok:
            assert res is not None
            acts = res["scene"].get("actions", [])
            self.speech[i] = [a for a in acts if a.get("type") == "speech"]
        self.cmds = self.jm.feed(Ended(Step.ACTIONS, i, 0, ok, len(self.speech.get(i, ()))))
        return res

    async def scene_tail(self, i: int, content: dict[str, Any], fg: bool = False) -> bool:
        """Actions (the pipelined loop's); the machine records the outcome, the job goes on."""
        await self._step(self.actions(i, content, []))
        return True

    async def serial_loop(self, pending: list[int]) -> None:
        self.cmds = self.jm.feed(Start(tuple(pending), serial=True))
        while (c := _loop_call(self.cmds)) is not None:
            if c.step == Step.CONTENT:
                content = await self._step(self.content(c.order))
                if content is not None:
                    self.contents[c.order] = content
            else:
                await self._step(self.actions(c.order, self.contents.pop(c.order), []))

    async def parallel_loop(self, pending: list[int]) -> None:
        self.cmds = self.jm.feed(Start(tuple(pending), serial=False))
        await super().parallel_loop(pending)
        self.cmds = self.jm.feed(LoopEnded())

    async def _clip(self, c: Call) -> bool:
        action = self.speech[c.order][c.clip]
        body = {
            "text": action["text"],
            "audioId": audio_id(c.order, str(action["id"])),
            "ttsProviderId": "fake-tts",
            "ttsVoice": "alloy",
            "ttsApiKey": self.api_keys[1],
        }
        res = await self._call(Step.TTS, body, {}, (c.order, c.clip), self._tts_gate, False)
        return res is not None and bool(res.get("base64"))

    async def media(self) -> None:
        """The media step: one lane per clip call the machine starts; a freed lane takes the
        clip the machine gives it next."""

        async def lane(c: Call | None) -> None:
            while c is not None:
                ok = await self._clip(c)
                c = _first_call(self.jm.feed(Ended(Step.TTS, c.order, c.clip, ok)))

        lanes = [lane(c) for c in self.cmds if isinstance(c, Call)]
        if lanes:
            await asyncio.gather(*lanes)
        assert self.jm.done

    async def run_job(self, job: int, arrival_us: int) -> JobRecord:
        await self.run()
        await self.media()
        end = self.clock.now_us() - arrival_us
        self.status = RunStatus.COMPLETED
        jm = self.jm
        return job_record(
            job, self.classroom, arrival_us, end, scenes_ok=len(jm.scenes),
            failed=jm.failed, clips=jm.media_clips, clips_failed=jm.clips_failed,
            counts=self.stats,
        )  # fmt: skip


def run_jobs(
    scenario: Scenario,
    mode: str,
    concurrency: int,
    *,
    jobs: int = 1,
    arrival_per_hour: float | None = None,
    arrivals_s: Sequence[float] | None = None,
    seed: int = 0,
    run_id: int = 0,
    media_concurrency: int = 1,
    key_gate: bool = False,
) -> JobsRun:
    """:func:`sim.jobs.simulate_jobs` through the real pipeline and fake provider, virtual
    clock; the result has the same records and the provider's log."""
    check_jobs(mode, jobs, arrival_per_hour, arrivals_s)
    sc = scenario if isinstance(scenario.client, ServerProfile) else server_scenario(scenario)
    arr = arrivals_us(seed, run_id, jobs, arrival_per_hour, arrivals_s)
    # a job's clips go one at a time in the loop (its media step has its own concurrency)
    gate = Policy.GATE if key_gate else Policy.OFF
    cfg = RunConfig.of(mode, concurrency, tts_concurrency=1, adaptive=gate)
    c = cfg.c
    lo = run_id * len(arr)
    app = create_app(sc, seed, virtual=True, keep_log=True)
    fake = app.state.fake
    gates = key_gates(sc) if key_gate else None

    async def one(client: httpx.AsyncClient, j: int) -> JobRecord:
        if arr[j]:
            await asyncio.sleep(arr[j] / 1e6)
        pipe = _JobPipeline(
            client, sc, cfg, _KeyClock(1.0), classroom=lo + j, world=ClockKind.VIRTUAL,
            seed=seed, gates=gates, rank=j, media_c=media_concurrency,
        )  # fmt: skip
        return await pipe.run_job(j, arr[j])

    async def body(cl: httpx.AsyncClient) -> list[JobRecord]:
        return list(await asyncio.gather(*(one(cl, j) for j in range(len(arr)))))

    recs: list[JobRecord] = _in_virtual_world(app, body)
    return JobsRun(recs, fake.log_rows(), sc, mode, c, media_concurrency, key_gate)


def run_keygate_tenants(
    scenario: Scenario,
    mode: str,
    concurrency: int,
    tenants: int,
    *,
    seed: int = 0,
    run_id: int = 0,
    tts_concurrency: int | None = None,
    stagger_s: float = 0.0,
    stagger_dist: str = "constant",
) -> list[RunResult]:
    """:func:`runner.run` of several tenants with key-wide gates instead of per-classroom gates
    (virtual clock); the counterpart of :func:`sim.jobs.simulate_keygate_tenants`."""
    cfg = RunConfig.of(mode, concurrency, tts_concurrency=tts_concurrency, adaptive=Policy.GATE)
    if not (isinstance(tenants, int) and tenants >= 1):
        raise UserError(f"tenants: must be an integer >= 1, got {tenants!r}")
    app = create_app(scenario, seed, virtual=True, keep_log=False)
    gates = key_gates(scenario)
    offsets = tenant_offsets_us(seed, run_id, tenants, stagger_s, stagger_dist)

    async def one(client: httpx.AsyncClient, j: int) -> RunResult:
        if offsets[j]:
            await asyncio.sleep(offsets[j] / 1e6)
        cid = run_id * tenants + j
        pipe = _KeyPipeline(
            client,
            scenario,
            cfg,
            _KeyClock(1.0),
            classroom=cid,
            world=ClockKind.VIRTUAL,
            seed=seed,
            gates=gates,
            rank=cid,
        )
        res = await pipe.run()
        return dataclasses.replace(res, tenants=tenants, tenant=j)

    async def body(cl: httpx.AsyncClient) -> list[RunResult]:
        return list(await asyncio.gather(*(one(cl, j) for j in range(tenants))))

    results: list[RunResult] = _in_virtual_world(app, body)
    return results


def _log_key(e: Sequence[Any]) -> tuple[Any, ...]:
    return (e[7], e[0], e[1], e[2], e[3], e[4])


def validate_jobs_exact(
    scenarios: Sequence[Scenario],
    *,
    runs: int = 1,
    seed: int = 0,
    jobs: int = 8,
    arrival_per_hour: float = 60.0,
    quotas: Sequence[int | None] = (None, 3),
    cells: Sequence[tuple[str, int]] = (("serial", 1), ("pipelined", 2), ("pipelined", 3)),
) -> dict[str, Any]:
    """Server jobs (key gate off and on) and key-gated tenants, model vs real pipeline under
    the virtual clock: every job record and every provider log row equal. ``quotas``: the
    scenario's own keys (``None``) and keys of that many slots."""
    from sim.jobs import simulate_jobs, simulate_keygate_tenants

    rep: dict[str, Any] = {"cells": 0, "runs": 0, "requests": 0, "http_429": 0, "divergences": []}
    for base in scenarios:
        for q in quotas:
            sc = base if q is None else base.with_quota(llm_inflight=q, tts_inflight=q)
            name = f"{base.name}@{'own' if q is None else q}"
            for (mode, c), gate, r in (
                (cell, g, r) for cell in cells for g in (False, True) for r in range(runs)
            ):
                kw: dict[str, Any] = {"jobs": jobs, "arrival_per_hour": arrival_per_hour}
                kw |= {"seed": seed, "run_id": r, "key_gate": gate}
                a = simulate_jobs(sc, mode, c, **kw)
                b = run_jobs(sc, mode, c, **kw)
                same = a.records == b.records
                same = same and sorted(a.log, key=_log_key) == sorted(b.log, key=_log_key)
                rep["runs"] += len(a.records)
                rep["requests"] += len(a.log)
                rep["http_429"] += sum(1 for e in a.log if e[9] == 429)
                if not same:
                    rep["divergences"].append(f"jobs {name} {mode} c={c} gate={gate} run {r}")
                rep["cells"] += 1
            for (mode, c), r in ((cell, r) for cell in cells for r in range(runs)):
                ta = simulate_keygate_tenants(sc, mode, c, 3, seed=seed, run_id=r, stagger_s=5.0)
                tb = run_keygate_tenants(sc, mode, c, 3, seed=seed, run_id=r, stagger_s=5.0)
                strip = [dataclasses.replace(x, world="", requests_log=()) for x in ta]
                if strip != [dataclasses.replace(x, world="", requests_log=()) for x in tb]:
                    rep["divergences"].append(f"key-gate tenants {name} {mode} c={c} run {r}")
                rep["runs"] += len(ta)
                rep["cells"] += 1
    rep["ok"] = not rep["divergences"]
    return rep
