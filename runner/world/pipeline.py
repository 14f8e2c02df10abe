"""The real pipeline: an asyncio + httpx port of OpenMAIC's scene-generation loop.

Step for step the same as :mod:`sim.model` (``content``, ``actions``, ``tts``):

* ``serial``: for each pending outline in order: content → actions (with the
  previous scene's speeches) → every speech clip; any failure marks the outline
  failed and pauses the batch;
* ``hybrid``: content for all pending outlines through a FIFO semaphore of size
  ``min(c, pending)``, waiting for all of them (a barrier); then the serial loop
  over the outlines whose content succeeded;
* ``pipelined``: every pending outline's content task starts at once, each
  waiting for a slot of that semaphore; the serial loop awaits outline ``i``'s
  content when it gets to ``i``.

In both parallel modes a content failure marks only that outline failed; an
actions or TTS failure pauses. Parallel modes run only when ``c > 1`` and more
than one outline is pending. Within a scene, clips run through a bounded map of
size ``tts_concurrency`` (every clip is tried; any failure fails the scene).
Retries follow the scenario's policies (LLM steps retry like the AI SDK; TTS
does not retry). ``stop()`` aborts in-flight requests and pauses.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx

from sim.config import RunConfig
from sim.draws import Draws, client_jitter_u
from sim.limiter import LOOP_DONE, GateCore, Rank, tell_gate
from sim.rules import (
    Act,
    CallMachine,
    ClockKind,
    Counts,
    Mode,
    Policy,
    RunStatus,
    Step,
    content_slots,
    final_status,
    is_parallel,
    tts_concurrency,
)
from sim.scenario import Scenario
from sim.schema import RunResult
from sim.timeline import Timeline, run_result
from sim.upstream import Handoff

from .failures import FailureReason, failure_from_attempt
from .wire import COUNTS_HEADER, FOREGROUND_HEADER, SENT_HEADER, audio_id, parse_counts

__all__ = ["Clock", "ScenePipeline"]

_ROUTES = ("/api/generate/scene-content", "/api/generate/scene-actions", "/api/generate/tts")
HANDOFF_YIELDS = 16  # event-loop turns the loop gets to issue actions(i) before the slot frees


class Clock:
    """Model time for the pipeline: ``loop.time()`` scaled by ``time_scale``, in µs."""

    def __init__(self, time_scale: float = 1.0) -> None:
        self.time_scale = time_scale
        self.t0 = 0.0

    def start(self) -> None:
        self.t0 = asyncio.get_running_loop().time()

    def now_us(self) -> int:
        return round((asyncio.get_running_loop().time() - self.t0) / self.time_scale * 1e6)

    async def sleep_us(self, us: int) -> None:
        await asyncio.sleep(us / 1e6 * self.time_scale)

    def real_s(self, model_s: float) -> float:
        return model_s * self.time_scale


class _Failed(Exception):
    pass


@dataclass(frozen=True)
class _Answer:
    """One HTTP answer as the client read it (status 0 timeout, -1 network, -2 bad body)."""

    status: int
    data: dict[str, Any] | None
    retry_after_us: int | None
    counts: str | None  # the route's count header, when the answer had one


@dataclass(frozen=True)
class _Fetch:
    """One client request's end, as in :class:`sim.model._Fetch` (plus the body)."""

    status: int
    provider_status: int
    retry_after_us: int | None
    counts: Counts | None
    data: dict[str, Any] | None


def _retry_after_us(resp: httpx.Response) -> int | None:
    ms = resp.headers.get("retry-after-ms")
    s = resp.headers.get("retry-after")
    try:
        if ms is not None:
            return round(float(ms) * 1000)
        if s is not None:
            return round(float(s) * 1e6)
    except ValueError:
        return None
    return None


class _AioGate:
    """The adaptive gate (:class:`sim.limiter.GateCore`) on asyncio futures."""

    def __init__(self, core: GateCore, clock: Clock) -> None:
        self.core = core
        self.clock = clock
        self._armed: set[int] = set()

    async def acquire(self, rank: Rank = ()) -> None:
        if self.core.try_acquire(self.clock.now_us(), rank):
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def wake() -> bool:
            if fut.done():  # cancelled while waiting (stop())
                return False
            fut.set_result(None)
            return True

        self.core.wait(rank, wake)
        self.changed()
        await fut

    def release(self, rank: Rank = ()) -> None:
        self.core.release(rank)
        self.changed()

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(self, *exc: object) -> None:
        self.release()

    def changed(self) -> None:
        """After any change of the gate's state: wake who fits, arm the hold's end."""
        now = self.clock.now_us()
        at = self.core.pump(now)
        if at is not None and at not in self._armed:
            self._armed.add(at)

            def fire() -> None:
                self._armed.discard(at)
                self.changed()

            asyncio.get_running_loop().call_later(self.clock.real_s((at - now) / 1e6), fire)


class ScenePipeline:
    """One classroom's generation against a provider reachable through ``client``."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        scenario: Scenario,
        config: RunConfig,
        clock: Clock,
        *,
        classroom: int = 0,
        api_keys: tuple[str, str] = ("llm-key", "tts-key"),
        world: str = ClockKind.WALL,
        seed: int = 0,
    ) -> None:
        self.client = client
        self.sc = scenario
        self.cfg = config  # its concurrency already read from the provider's knob if unset
        self.c = config.c
        self.tts_c = tts_concurrency(
            config.mode, self.c, config.tts_concurrency, scenario.client.tts_at_concurrency
        )
        self.classroom = classroom
        self.api_keys = api_keys  # (LLM, TTS); quotas are per key
        self.clock = clock
        self.world = world
        self.seed = seed
        self.stats = Counts()
        self.attempt_failures: list[FailureReason] = []  # every unsuccessful attempt, and why
        self._aborted = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self.stage_id = f"sb-{classroom}"
        self.outlines = [
            {
                "id": f"outline-{i}",
                "type": scenario.scene_type(i),
                "title": f"Scene {i + 1}",
                "order": i,
                "description": f"Outline {i + 1} of {scenario.outlines}",
            }
            for i in range(scenario.outlines)
        ]
        self.previous_speeches_sent: dict[int, list[str]] = {}
        self._tts_gate: _AioGate | None = None  # the loop's gates (made when it starts)
        self._llm_gate: _AioGate | None = None
        self._draws_cache: Draws | None = None
        self._content_tasks: list[asyncio.Task[Any]] = []
        self._awaiting: int | None = None  # the outline whose content the loop waits for
        self._prev: list[str] = []  # previousSpeeches
        self.ready: list[tuple[int, int]] = []
        self.clips: dict[int, int] = {}  # speech clips per scene, as the actions answer gave them
        self.failed: list[int] = []
        self.status = RunStatus.COMPLETED

    @staticmethod
    def content_slots(concurrency: int, pending: int) -> int:
        """Size of the content semaphore (:func:`sim.rules.content_slots`)."""
        return content_slots(concurrency, pending)

    # -- abort -------------------------------------------------------------------------
    def stop(self) -> None:
        """Upstream's ``stop()``: set the abort flag and abort in-flight requests."""
        self._aborted = True
        for t in list(self._tasks):
            t.cancel()

    async def _guard(self, coro: Awaitable[Any]) -> Any:
        """Run a step as a task that ``stop()`` can cancel."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        try:
            return await task
        finally:
            self._tasks.discard(task)

    # -- one step call with retries ----------------------------------------------------
    async def _attempt(self, route: str, body: dict[str, Any], headers: dict[str, str]) -> _Answer:
        """POST once; the answer the client sees (status 0 = timeout, -1 = network)."""
        try:
            async with asyncio.timeout(self.clock.real_s(self.sc.request_timeout_s)):
                if self.world == ClockKind.WALL:  # the provider counts the latency from here
                    headers = {**headers, SENT_HEADER: str(time.monotonic_ns())}
                resp = await self.client.post(route, json=body, headers=headers)
        except TimeoutError:
            self._note_attempt(route, body, 0, None)
            return _Answer(0, None, None, None)
        except httpx.TransportError as e:
            self._note_attempt(route, body, -1, None, e)
            return _Answer(-1, None, None, None)
        try:
            data = resp.json()
        except ValueError:
            data = None
        ra_us = _retry_after_us(resp) if resp.status_code == 429 else None
        counts = resp.headers.get(COUNTS_HEADER)
        if not isinstance(data, dict):
            status = resp.status_code if resp.status_code >= 400 else -2
            self._note_attempt(route, body, status, None)
            return _Answer(status, None, ra_us, None)  # a cut body: the counts are lost too
        self._note_attempt(route, body, resp.status_code, data)
        return _Answer(resp.status_code, data, ra_us, counts)

    async def _fetch(
        self, step: int, body: dict[str, Any], headers: dict[str, str], fg: bool
    ) -> _Fetch:
        """One client request (the route may retry inside it, see
        :mod:`runner.world.fake_provider`)."""
        hdrs = {**headers, FOREGROUND_HEADER: "1"} if fg else headers
        ans = await self._attempt(_ROUTES[step], body, hdrs)
        if ans.status == 0:
            return _Fetch(0, 0, None, None, None)
        counts, provider_status = parse_counts(ans.counts, ans.status)
        status = ans.status
        if status == 200 and not (ans.data is not None and ans.data.get("success")):
            status = -2
        return _Fetch(status, provider_status, ans.retry_after_us, counts, ans.data)

    def _note_attempt(
        self,
        route: str,
        body: dict[str, Any],
        status: int,
        data: dict[str, Any] | None,
        error: BaseException | None = None,
    ) -> None:
        """Record why an attempt did not succeed (``self.attempt_failures``; nothing on
        success)."""
        f = failure_from_attempt(
            route, body, status, data, error=error, timeout_s=self.sc.request_timeout_s
        )
        if f is not None:
            self.attempt_failures.append(f)

    async def _call(
        self,
        step: int,
        body: dict[str, Any],
        headers: dict[str, str],
        ident: tuple[int, int],
        gate: _AioGate | None = None,
        fg: bool = False,
    ) -> dict[str, Any] | None:
        """One step call with the client's retries (:class:`sim.rules.CallMachine`); the JSON
        body on success, else None. A call with an adaptive gate tells it of every 429 and of
        its success; under the ``gate`` policy every attempt passes the gate at its rank
        (outline order, step, clip) and a 429 re-queues it there instead of spending the retry
        budget."""
        held = gate if gate is not None and gate.core.policy is Policy.GATE else None
        machine = CallMachine(self.sc.client.client_policy(step, fg), gated=held is not None)
        rank = (ident[0], step, ident[1])

        def jitter(attempt: int) -> float:
            return self.jitter_u(step, ident, attempt)

        while True:
            if held is not None:
                await held.acquire(rank)
            try:
                f = await self._fetch(step, body, headers, fg)
            except BaseException:
                if held is not None:
                    held.release(rank)
                raise
            self.stats.add(f.counts)
            verdict = machine.step(f.status, f.provider_status, f.retry_after_us, jitter)
            if gate is not None:
                slot = rank if held is not None else None
                tell_gate(gate, verdict.tell, self.clock.now_us(), f.retry_after_us, slot)
            if verdict.retry:
                self.stats.retries += 1
            if verdict.kind is Act.DONE:
                return f.data
            if verdict.kind is Act.FAIL:
                return None
            if verdict.kind is Act.WAIT:
                await self.clock.sleep_us(verdict.wait_us)

    def jitter_u(self, step: int, ident: tuple[int, int], attempt: int) -> float:
        """The retry jitter after a call's attempt: the profile's fixed value or the keyed
        draw of this classroom (the same number the model draws)."""
        return client_jitter_u(self.sc, self._draws(), 0, step, ident[0], ident[1], attempt)

    def _draws(self) -> Draws:
        if self._draws_cache is None:
            cid = self.classroom
            self._draws_cache = Draws(self.sc, self.seed, cid, cid + 1, compiled=False)
        return self._draws_cache

    def _llm_headers(self) -> dict[str, str]:
        return {
            "x-model": "fake:model",
            "x-api-key": self.api_keys[0],
            "x-base-url": "",
            "x-provider-type": "openai",
        }

    async def content(
        self, i: int, gate: _AioGate | None = None, fg: bool = False
    ) -> dict[str, Any] | None:
        body = {
            "outline": self.outlines[i],
            "allOutlines": self.outlines,
            "stageId": self.stage_id,
            "stageInfo": {"name": "scenebench"},
        }
        gate = None if fg else (gate if gate is not None else self._llm_gate)
        return await self._call(Step.CONTENT, body, self._llm_headers(), (i, 0), gate, fg)

    async def actions(
        self, i: int, content: dict[str, Any], prev: list[str], fg: bool = False
    ) -> dict[str, Any] | None:
        self.previous_speeches_sent[i] = list(prev)
        body = {
            "outline": content.get("effectiveOutline") or self.outlines[i],
            "allOutlines": self.outlines,
            "content": content["content"],
            "stageId": self.stage_id,
            "previousSpeeches": prev,
        }
        gate = None if fg else self._llm_gate
        return await self._call(Step.ACTIONS, body, self._llm_headers(), (i, 0), gate, fg)

    async def tts(self, scene: dict[str, Any], fg: bool = False) -> bool:
        """All speech clips of a scene; every clip is tried, any failure fails the scene.
        The foreground scene's clips go one at a time (the preview page's call), at the
        loop's within-scene concurrency under profiles with #1039's rule."""
        speeches = [
            a for a in scene.get("actions", []) if a.get("type") == "speech" and a.get("text")
        ]
        k = len(speeches)
        order = int(scene.get("order", 0))
        self.clips[order] = k
        if k == 0:
            return True
        oks: list[bool] = []

        async def clip(j: int, g: _AioGate | None = None) -> None:
            body = {
                "text": speeches[j]["text"],
                "audioId": audio_id(order, str(speeches[j]["id"])),
                "ttsProviderId": "fake-tts",
                "ttsVoice": "alloy",
                "ttsApiKey": self.api_keys[1],
            }
            res = await self._call(Step.TTS, body, {}, (order, j), g, fg)
            oks.append(res is not None and bool(res.get("base64")))

        gate = None if fg else self._tts_gate
        if gate is not None and (gate.core.policy is Policy.GATE or k > 1):
            gate_all = gate.core.policy is Policy.GATE  # every clip, every attempt gated

            async def gated(j: int) -> None:
                assert gate is not None
                if gate_all:
                    await clip(j, gate)
                    return
                async with gate:  # adaptive: every clip waits for the gate in order
                    await clip(j, gate)

            await asyncio.gather(*(gated(j) for j in range(k)))
            return all(oks)
        fg_at_c = self.sc.client.foreground_tts_at_concurrency  # since #1039
        c = 1 if fg and not fg_at_c else self.tts_c
        nxt = iter(range(k))

        async def worker() -> None:  # min(c, k) workers = a FIFO semaphore of size c
            for j in nxt:
                await clip(j)

        if c <= 1 or k == 1:
            await worker()
        else:
            await asyncio.gather(*(worker() for _ in range(min(c, k))))
        return all(oks)

    # -- the loop ----------------------------------------------------------------------
    async def run(self) -> RunResult:
        self.clock.start()
        try:
            await self._run_loop()
        except (_Failed, asyncio.CancelledError):
            if not self._aborted:
                raise
            self.status = RunStatus.PAUSED
        end_us = self.clock.now_us()
        # Upstream does not abort the remaining content requests on a pause; let them finish.
        if self._content_tasks:
            await asyncio.gather(*self._content_tasks, return_exceptions=True)
        self._tasks.clear()
        return self._result(end_us)

    async def _step(self, coro: Awaitable[Any]) -> Any:
        """A step the loop waits for; a stop before or during it ends the loop."""
        if self._aborted:
            coro.close() if hasattr(coro, "close") else None
            raise _Failed
        res = await self._guard(coro)
        if self._aborted:
            raise _Failed
        return res

    async def _run_loop(self) -> None:
        first = 0
        if self.sc.client.foreground_first_scene:  # the preview page, before the loop
            content = await self._step(self.content(0, fg=True))
            ok = content is not None and await self.scene_tail(0, content, fg=True)
            if not ok:
                if 0 not in self.failed:
                    self.failed.append(0)
                self.status = RunStatus.FIRST_SCENE_FAILED
                return
            first = 1
        pending = list(range(first, self.sc.outlines))
        self._make_gates(len(pending))
        if is_parallel(self.cfg.mode, self.c, len(pending)):
            await self.parallel_loop(pending)
        else:
            await self.serial_loop(pending)

    def _make_gates(self, pending: int) -> None:
        cfg = self.cfg
        parallel = is_parallel(cfg.mode, self.c, pending)
        gated = cfg.adaptive == Policy.GATE
        if gated:
            slots = self.content_slots(self.c, pending) + 1 if parallel else 1
            reserve = parallel and cfg.mode == Mode.PIPELINED  # keep a slot for the loop
            self._llm_gate = _AioGate(GateCore(slots, Policy.GATE, reserve), self.clock)
        if gated or (cfg.adaptive != Policy.OFF and self.tts_c > 1):
            core = GateCore(max(1, self.tts_c), cfg.adaptive)
            self._tts_gate = _AioGate(core, self.clock)

    def _frontier(self, i: int) -> None:
        """The scene whose LLM work the loop does or awaits next (the gate keeps it a slot)."""
        gate = self._llm_gate
        if gate is not None and gate.core.reserve:
            gate.core.frontier = i
            gate.changed()

    async def scene_tail(self, i: int, content: dict[str, Any], fg: bool = False) -> bool:
        """Actions, then every clip; the scene is added on success."""
        res = await self._step(self.actions(i, content, self._prev, fg))
        ok = res is not None and isinstance(res.get("scene"), dict)
        if ok and not fg:
            self._frontier(i + 1)  # the loop's next LLM call is for the next scene
        if ok:
            assert res is not None
            ok = await self._step(self.tts(res["scene"], fg))
        if ok:
            assert res is not None
            self.ready.append((i, self.clock.now_us()))
            self._prev = list(res.get("previousSpeeches") or [])
        else:
            self.failed.append(i)
        return ok

    async def serial_loop(self, pending: list[int]) -> None:
        for i in pending:
            content = await self._step(self.content(i))
            if content is None:
                self.failed.append(i)
                self.status = RunStatus.PAUSED
                return
            if not await self.scene_tail(i, content):
                self.status = RunStatus.PAUSED
                return

    def _start_content(self, pending: list[int]) -> dict[int, asyncio.Future[Any]]:
        """Every pending outline's content task, each waiting for a slot of a FIFO
        semaphore of ``min(c, pending)`` (or of the adaptive gate)."""
        loop = asyncio.get_running_loop()
        slots = self.content_slots(self.c, len(pending))
        adaptive = self.cfg.adaptive
        cgate = (
            _AioGate(GateCore(slots, adaptive), self.clock)
            if adaptive not in (Policy.OFF, Policy.GATE)
            else None
        )
        sem = asyncio.Semaphore(slots)
        results = {i: loop.create_future() for i in pending}

        async def content_task(i: int) -> None:
            async with cgate if cgate is not None else sem:
                res = None if self._aborted else await self.content(i, cgate or self._llm_gate)
                if not results[i].done():
                    results[i].set_result(res)
                await self._handoff(i)

        for i in pending:
            t = asyncio.ensure_future(content_task(i))
            self._content_tasks.append(t)
            self._tasks.add(t)
        return results

    async def _handoff(self, i: int) -> None:
        """JavaScript's order at the hand-off (``actions-first``): when the loop is waiting
        for content ``i``, it issues actions ``i`` before the slot goes to the next content.
        (Under the virtual clock the provider orders same-instant arrivals by the same rule.)"""
        if self.sc.client.handoff == Handoff.ACTIONS_FIRST and self._awaiting == i:
            for _ in range(HANDOFF_YIELDS):
                await asyncio.sleep(0)

    async def parallel_loop(self, pending: list[int]) -> None:
        results = self._start_content(pending)
        if self.cfg.mode == Mode.HYBRID:
            await asyncio.gather(*results.values(), return_exceptions=True)
        content_failed = paused = False
        for i in pending:
            if self._aborted:
                raise _Failed
            self._frontier(i)
            self._awaiting = i
            content = await results[i]
            self._awaiting = None
            if self._aborted:
                raise _Failed
            if content is None:
                self.failed.append(i)
                content_failed = True
                continue
            if not await self.scene_tail(i, content):
                paused = True
                break
        # the content still queued runs to the end (a stop() cancels it instead)
        self._frontier(LOOP_DONE)
        self.status = final_status(paused, content_failed, self.sc.client.content_failure_pauses)

    def _result(self, end_us: int) -> RunResult:
        """The classroom's :class:`RunResult` (:func:`sim.timeline.run_result`): each ready
        scene plays its clips' keyed audio durations plus the non-speech constant."""
        d = self._draws()
        play = {i: d.playback_us(0, i, self.clips.get(i, 0)) for i, _ in self.ready}
        tl = Timeline(self.ready, self.failed, self.stats, self.status, end_us)
        return run_result(
            self.sc,
            tl,
            play,
            world=self.world,
            mode=self.cfg.mode,
            concurrency=self.c,
            tts_concurrency=self.tts_c,
            seed=self.seed,
            classroom=self.classroom,
        )


StopHook = Callable[[ScenePipeline], Awaitable[None]]
