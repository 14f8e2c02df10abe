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
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from sim.limiter import MAX_429_WAITS, POLICIES, GateCore
from sim.model import _Stats
from sim.scenario import MODES, RetryPolicy, Scenario
from sim.schema import RunResult

from .failures import FailureReason, failure_from_attempt

__all__ = ["Clock", "PipelineOptions", "ScenePipeline"]

RETRYABLE = frozenset({408, 409, 429})
_ROUTES = ("/api/generate/scene-content", "/api/generate/scene-actions", "/api/generate/tts")


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


@dataclass(frozen=True)
class PipelineOptions:
    """How one classroom is generated. ``concurrency`` is already clamped."""

    mode: str
    concurrency: int
    tts_concurrency: int
    retry_llm: RetryPolicy
    retry_tts: RetryPolicy
    request_timeout_s: float
    classroom: int = 0
    llm_api_key: str = "llm-key"
    tts_api_key: str = "tts-key"
    headers: dict[str, str] = field(default_factory=dict)
    adaptive: str = "off"

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode: must be one of {', '.join(MODES)}; got {self.mode!r}")
        if self.adaptive not in POLICIES:
            raise ValueError(
                f"adaptive: must be one of {', '.join(POLICIES)}; got {self.adaptive!r}"
            )


class _Failed(Exception):
    pass


class _AioGate:
    """The adaptive gate (:class:`sim.limiter.GateCore`) on asyncio futures."""

    def __init__(self, core: GateCore, clock: Clock) -> None:
        self.core = core
        self.clock = clock
        self._armed: set[int] = set()

    async def acquire(self, high: bool = False) -> None:
        if self.core.try_acquire(self.clock.now_us(), high):
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def wake() -> bool:
            if fut.done():  # cancelled while waiting (stop())
                return False
            fut.set_result(None)
            return True

        (self.core.waiters_hi if high else self.core.waiters).append(wake)
        self.changed()
        await fut

    def release(self) -> None:
        self.core.release()
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
        options: PipelineOptions,
        clock: Clock,
        *,
        world: str = "wall",
        seed: int = 0,
    ) -> None:
        self.client = client
        self.sc = scenario
        self.opt = options
        self.clock = clock
        self.world = world
        self.seed = seed
        self.stats = _Stats()
        self.attempt_failures: list[FailureReason] = []  # every unsuccessful attempt, and why
        self._aborted = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self.stage_id = f"sb-{options.classroom}"
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
        gated = options.adaptive == "gate"
        self._tts_gate = (
            _AioGate(GateCore(max(1, options.tts_concurrency), options.adaptive), clock)
            if gated or (options.adaptive != "off" and options.tts_concurrency > 1)
            else None
        )
        self._llm_gate: _AioGate | None = None  # the gate policy's LLM-key gate (run())

    @staticmethod
    def content_slots(concurrency: int, pending: int) -> int:
        """Size of the content semaphore: ``min(c, pending)`` (upstream's rule)."""
        return min(concurrency, pending)

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
    async def _attempt(
        self, route: str, body: dict[str, Any], headers: dict[str, str]
    ) -> tuple[int, dict[str, Any] | None, int | None]:
        """POST once. Returns (status, json or None, retry-after µs); status 0 = timeout."""
        try:
            async with asyncio.timeout(self.clock.real_s(self.opt.request_timeout_s)):
                resp = await self.client.post(route, json=body, headers=headers)
        except TimeoutError:
            self._note_attempt(route, body, 0, None)
            return 0, None, None
        except httpx.TransportError as e:
            self._note_attempt(route, body, -1, None, e)
            return -1, None, None
        try:
            data = resp.json()
        except ValueError:
            data = None
        ra_us = None
        if resp.status_code == 429:
            ms = resp.headers.get("retry-after-ms")
            s = resp.headers.get("retry-after")
            try:
                if ms is not None:
                    ra_us = round(float(ms) * 1000)
                elif s is not None:
                    ra_us = round(float(s) * 1e6)
            except ValueError:
                ra_us = None
        if not isinstance(data, dict):
            bad = resp.status_code if resp.status_code >= 400 else -2
            self._note_attempt(route, body, bad, None)
            return bad, None, ra_us
        self._note_attempt(route, body, resp.status_code, data)
        return resp.status_code, data, ra_us

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
            route, body, status, data, error=error, timeout_s=self.opt.request_timeout_s
        )
        if f is not None:
            self.attempt_failures.append(f)

    async def _call(
        self,
        step: int,
        body: dict[str, Any],
        policy: RetryPolicy,
        headers: dict[str, str],
        gate: _AioGate | None = None,
        high: bool = False,
    ) -> dict[str, Any] | None:
        """One step call with the retry policy; the JSON body on success, else None. A gated
        call tells its adaptive gate of every 429 and of its success."""
        if gate is not None and gate.core.policy == "gate":
            return await self._gated_call(step, body, policy, headers, gate, high)
        st = self.stats
        route = _ROUTES[step]
        for attempt in range(policy.max_retries + 1):
            status, data, ra_us = await self._attempt(route, body, headers)
            if status == 200 and data is not None and data.get("success"):
                st.requests += 1
                if gate is not None:
                    gate.core.on_success(self.clock.now_us())
                return data
            st.count(status)
            if status == 429 and gate is not None:
                gate.core.on_429(self.clock.now_us(), ra_us)
                gate.changed()
            retryable = status <= 0 or status in RETRYABLE or status >= 500
            if not retryable or attempt == policy.max_retries:
                return None
            st.retries += 1
            await self.clock.sleep_us(policy.delay_us(attempt, ra_us if status == 429 else None))
        return None  # pragma: no cover

    async def _gated_call(
        self,
        step: int,
        body: dict[str, Any],
        policy: RetryPolicy,
        headers: dict[str, str],
        gate: _AioGate,
        high: bool,
    ) -> dict[str, Any] | None:
        """The ``gate`` policy: every attempt passes the key's gate; a 429 re-queues the
        attempt at the front instead of spending the retry budget."""
        st = self.stats
        route = _ROUTES[step]
        used = waits = 0
        prio = high
        while True:
            await gate.acquire(prio)
            try:
                status, data, ra_us = await self._attempt(route, body, headers)
            except BaseException:
                gate.release()
                raise
            now = self.clock.now_us()
            if status == 200 and data is not None and data.get("success"):
                st.requests += 1
                gate.core.on_success(now)
                gate.release()
                return data
            st.count(status)
            if status == 429:
                gate.core.on_429(now, ra_us)
                gate.release()
                waits += 1
                if waits > MAX_429_WAITS:
                    return None
                st.retries += 1
                prio = True
                continue
            gate.release()
            retryable = status <= 0 or status in RETRYABLE or status >= 500
            if not retryable or used == policy.max_retries:
                return None
            st.retries += 1
            await self.clock.sleep_us(policy.delay_us(used, None))
            used += 1
            prio = high

    def _llm_headers(self) -> dict[str, str]:
        return {
            "x-model": "fake:model",
            "x-api-key": self.opt.llm_api_key,
            "x-base-url": "",
            "x-provider-type": "openai",
            **self.opt.headers,
        }

    async def content(self, i: int, gate: _AioGate | None = None) -> dict[str, Any] | None:
        body = {
            "outline": self.outlines[i],
            "allOutlines": self.outlines,
            "stageId": self.stage_id,
            "stageInfo": {"name": "scenebench"},
        }
        gate = gate if gate is not None else self._llm_gate
        return await self._call(0, body, self.opt.retry_llm, self._llm_headers(), gate)

    async def actions(
        self, i: int, content: dict[str, Any], prev: list[str]
    ) -> dict[str, Any] | None:
        self.previous_speeches_sent[i] = list(prev)
        body = {
            "outline": content.get("effectiveOutline") or self.outlines[i],
            "allOutlines": self.outlines,
            "content": content["content"],
            "stageId": self.stage_id,
            "previousSpeeches": prev,
        }
        return await self._call(
            1, body, self.opt.retry_llm, self._llm_headers(), self._llm_gate, True
        )

    async def tts(self, scene: dict[str, Any]) -> bool:
        """All speech clips of a scene; every clip is tried, any failure fails the scene."""
        speeches = [
            a for a in scene.get("actions", []) if a.get("type") == "speech" and a.get("text")
        ]
        k = len(speeches)
        if k == 0:
            return True
        oks: list[bool] = []

        async def clip(action: dict[str, Any]) -> None:
            body = {
                "text": action["text"],
                "audioId": f"tts_{action['id']}",
                "ttsProviderId": "fake-tts",
                "ttsVoice": "alloy",
                "ttsApiKey": self.opt.tts_api_key,
            }
            res = await self._call(2, body, self.opt.retry_tts, {}, gate)
            oks.append(res is not None and bool(res.get("base64")))

        c = self.opt.tts_concurrency
        gate = self._tts_gate
        if gate is not None and gate.core.policy == "gate":  # every clip, every attempt gated
            await asyncio.gather(*(clip(a) for a in speeches))
            return all(oks)
        if gate is not None and k > 1:  # adaptive: every clip waits for the gate in order

            async def gated(action: dict[str, Any]) -> None:
                assert gate is not None
                async with gate:
                    await clip(action)

            await asyncio.gather(*(gated(a) for a in speeches))
            return all(oks)
        gate = None
        if c <= 1 or k == 1:
            for a in speeches:
                await clip(a)
        else:
            nxt = iter(speeches)

            async def worker() -> None:  # min(c, k) workers = a FIFO semaphore of size c
                for a in nxt:
                    await clip(a)

            await asyncio.gather(*(worker() for _ in range(min(c, k))))
        return all(oks)

    # -- the loop ----------------------------------------------------------------------
    async def run(self) -> RunResult:
        self.clock.start()
        n = self.sc.outlines
        mode, c = self.opt.mode, self.opt.concurrency
        ready: list[tuple[int, int]] = []
        failed: list[int] = []
        status = "completed"
        prev: list[str] = []
        parallel = mode != "serial" and c > 1 and n > 1
        if self.opt.adaptive == "gate":
            slots = min(c, n) + 1 if parallel else 1
            self._llm_gate = _AioGate(GateCore(slots, "gate"), self.clock)
        content_tasks: list[asyncio.Task[dict[str, Any] | None]] = []

        async def scene_tail(i: int, content: dict[str, Any]) -> bool:
            nonlocal prev
            if self._aborted:
                raise _Failed
            res = await self._guard(self.actions(i, content, prev))
            ok = res is not None and isinstance(res.get("scene"), dict)
            if ok:
                assert res is not None
                if self._aborted:
                    raise _Failed
                ok = await self._guard(self.tts(res["scene"]))
            if self._aborted:
                raise _Failed
            if ok:
                assert res is not None
                ready.append((i, self.clock.now_us()))
                prev = list(res.get("previousSpeeches") or [])
            else:
                failed.append(i)
            return ok

        try:
            if not parallel:
                for i in range(n):
                    if self._aborted:
                        raise _Failed
                    content = await self._guard(self.content(i))
                    if self._aborted:
                        raise _Failed
                    if content is None:
                        failed.append(i)
                        status = "paused"
                        break
                    if not await scene_tail(i, content):
                        status = "paused"
                        break
            else:
                slots = self.content_slots(c, n)
                cgate = (
                    _AioGate(GateCore(slots, self.opt.adaptive), self.clock)
                    if self.opt.adaptive not in ("off", "gate")
                    else None
                )
                sem = asyncio.Semaphore(slots)

                async def content_task(i: int) -> dict[str, Any] | None:
                    async with cgate if cgate is not None else sem:
                        if self._aborted:
                            return None
                        return await self.content(i, cgate or self._llm_gate)

                for i in range(n):
                    t = asyncio.ensure_future(content_task(i))
                    content_tasks.append(t)
                    self._tasks.add(t)
                if mode == "hybrid":
                    await asyncio.gather(*content_tasks, return_exceptions=True)
                for i in range(n):
                    if self._aborted:
                        raise _Failed
                    try:
                        content = await content_tasks[i]
                    except asyncio.CancelledError:
                        raise _Failed from None
                    if self._aborted:
                        raise _Failed
                    if content is None:
                        failed.append(i)
                        continue
                    if not await scene_tail(i, content):
                        status = "paused"
                        break
        except (_Failed, asyncio.CancelledError):
            if not self._aborted:
                raise
            status = "paused"
        end_us = self.clock.now_us()
        # Upstream does not abort the remaining content requests on a pause; let them finish.
        if content_tasks:
            await asyncio.gather(*content_tasks, return_exceptions=True)
        self._tasks.clear()
        st = self.stats
        return RunResult(
            world=self.world,
            scenario=self.sc.name,
            mode=mode,
            concurrency=c,
            tts_concurrency=self.opt.tts_concurrency,
            seed=self.seed,
            classroom=self.opt.classroom,
            makespan_s=end_us / 1e6,
            ttfs_s=ready[0][1] / 1e6 if ready else math.nan,
            scenes_ok=len(ready),
            scenes_failed=len(failed),
            status=status,
            requests=st.requests,
            http_429=st.http_429,
            http_5xx=st.http_5xx,
            retries=st.retries,
            timeouts=st.timeouts,
            scene_order=tuple(i for i, _ in ready),
            scene_ready_s=tuple(t / 1e6 for _, t in ready),
            failed_orders=tuple(failed),
        )


StopHook = Callable[[ScenePipeline], Awaitable[None]]
