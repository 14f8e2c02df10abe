"""SimPy model of OpenMAIC's scene generation: serial, hybrid and pipelined.

The model mirrors :mod:`runner.pipeline` step for step (``content``, ``actions``,
``tts``) and shares the provider's admission rules (:mod:`sim.provider`) and
the keyed draws (:mod:`sim.draws`) with the fake server, so that a model run and
a real run with the same seed see the same latencies and the same quota
decisions. Time is kept in integer microseconds.

Order at equal times (documented, and followed by the real pipeline too):
a request ending at ``t`` frees its slot for one arriving at ``t``; arrivals on
a limited key at one instant are decided together, after everything else at
that instant, in :func:`sim.provider.arrival_order`.
"""

from __future__ import annotations

import math
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import Any

import simpy
from simpy.events import NORMAL, Event, EventPriority

from .draws import Draws, tenant_offsets_us
from .limiter import MAX_429_WAITS, POLICIES, GateCore
from .provider import Call, Decision, Provider, arrival_order
from .scenario import MAX_CONCURRENCY, MODES, RetryPolicy, Scenario
from .schema import RunResult, records_from_log

__all__ = ["clamp_concurrency", "effective_tts_concurrency", "simulate", "simulate_many"]

LLM_KEY = "llm-key"
TTS_KEY = "tts-key"
_BATCH_PRIORITY = EventPriority(NORMAL + 1)  # after every normal event of the instant
_TIMEOUT = Decision(0, 0, None, 0, "timeout")


def clamp_concurrency(value: object) -> int:
    """Upstream's rule: an integer clamped to [0, 10]; non-numeric or <= 0 gives 0."""
    try:
        v = int(float(str(value).strip()))
    except (TypeError, ValueError):
        return 0
    return max(0, min(MAX_CONCURRENCY, v))


def effective_tts_concurrency(mode: str, concurrency: int, tts_concurrency: int | None) -> int:
    """Within-scene TTS concurrency: follows ``concurrency`` in parallel modes unless given."""
    if tts_concurrency is not None:
        return max(1, clamp_concurrency(tts_concurrency))
    if mode == "serial":
        return 1
    return max(1, clamp_concurrency(concurrency))


@dataclass
class _Stats:
    requests: int = 0
    http_429: int = 0
    http_5xx: int = 0
    retries: int = 0
    timeouts: int = 0

    def count(self, status: int) -> None:
        """Count a failed attempt's answer: 0 is a timeout (no answer), anything else an
        answered request, of which 429s and 5xx are also counted apart (both worlds)."""
        if status == 0:
            self.timeouts += 1
            return
        self.requests += 1
        if status == 429:
            self.http_429 += 1
        elif status >= 500:
            self.http_5xx += 1


class _Batch(Event):
    """Fires after every normal event of its instant: decides the batched arrivals."""

    def __init__(self, world: _World, key: int) -> None:
        super().__init__(world.env)
        self._ok = True
        self._value = None
        self.key = key
        self.items: list[tuple[Call, Event]] = []
        self.callbacks.append(world._flush)
        world.env.schedule(self, _BATCH_PRIORITY)


class _SimGate:
    """The adaptive gate (:class:`sim.limiter.GateCore`) on SimPy events."""

    def __init__(self, env: simpy.Environment, core: GateCore) -> None:
        self.env = env
        self.core = core
        self._armed: set[int] = set()

    def acquire(self, high: bool = False) -> Event | None:
        now = int(self.env.now)
        if self.core.try_acquire(now, high):
            return None
        ev = Event(self.env)

        def wake() -> bool:
            ev.succeed()
            return True

        (self.core.waiters_hi if high else self.core.waiters).append(wake)
        self.changed()
        return ev

    def changed(self) -> None:
        """After any change of the gate's state: wake who fits, arm the hold's end."""
        now = int(self.env.now)
        at = self.core.pump(now)
        if at is not None and at not in self._armed:
            self._armed.add(at)
            t = self.env.timeout(at - now)

            def fire(_ev: Event) -> None:
                self._armed.discard(at)
                self.changed()

            t.callbacks.append(fire)


class _World:
    def __init__(self, scenario: Scenario, provider: Provider) -> None:
        self.env = simpy.Environment()
        self.scenario = scenario
        self.provider = provider
        self.batches: dict[int, _Batch] = {}
        self.timeout_us = round(scenario.request_timeout_s * 1e6)

    def _flush(self, batch: Event) -> None:
        assert isinstance(batch, _Batch)
        del self.batches[batch.key]
        now = int(self.env.now)
        decide = self.provider.decide
        items = batch.items
        items.sort(key=lambda it: arrival_order(it[0]))
        for call, ev in items:
            ev.succeed(decide(call, now))

    def attempt(self, call: Call) -> Generator[Event, Any, Decision]:
        """One attempt: arrival, admission, and the wait for the answer."""
        env = self.env
        prov = self.provider
        if prov.limited(call.step):
            ks = prov.key_state(call.step, call.api_key)
            batch = self.batches.get(id(ks))
            if batch is None:
                batch = self.batches[id(ks)] = _Batch(self, id(ks))
            ev = Event(env)
            batch.items.append((call, ev))
            dec: Decision = yield ev
        else:
            dec = prov.decide(call, int(env.now))
        if dec.latency_us > self.timeout_us:
            yield env.timeout(self.timeout_us)
            return _TIMEOUT
        if dec.latency_us:
            yield env.timeout(dec.latency_us)
        return dec

    def call(
        self,
        cid: int,
        step: int,
        order: int,
        clip: int,
        policy: RetryPolicy,
        stats: _Stats,
        gate: _SimGate | None = None,
    ) -> Generator[Event, Any, bool]:
        """One step call with the client's retry policy; True on success. A gated call tells
        its adaptive gate of every 429 and of its success."""
        key = TTS_KEY if step == 2 else LLM_KEY
        last = policy.max_retries
        for attempt in range(last + 1):
            dec = yield from self.attempt(Call(cid, step, order, clip, attempt, key))
            status = dec.status
            ra_us = None
            if status == 200:
                stats.requests += 1
                if gate is not None:
                    gate.core.on_success(int(self.env.now))
                return True
            stats.count(status)  # RESET / TRUNCATED: failed requests, retried like network errors
            if status == 429:
                if dec.retry_after_ms is not None:
                    ra_us = dec.retry_after_ms * 1000
                if gate is not None:
                    gate.core.on_429(int(self.env.now), ra_us)
                    gate.changed()
            if attempt == last:
                return False
            stats.retries += 1
            yield self.env.timeout(policy.delay_us(attempt, ra_us))
        return False  # pragma: no cover - loop always returns

    def gated_call(
        self,
        cid: int,
        step: int,
        order: int,
        clip: int,
        policy: RetryPolicy,
        stats: _Stats,
        gate: _SimGate,
        high: bool,
    ) -> Generator[Event, Any, bool]:
        """The ``gate`` policy: every attempt passes the key's gate; a 429 re-queues the
        attempt at the front instead of spending the retry budget."""
        key = TTS_KEY if step == 2 else LLM_KEY
        attempt = used = waits = 0
        prio = high
        while True:
            ev = gate.acquire(prio)
            if ev is not None:
                yield ev
            dec = yield from self.attempt(Call(cid, step, order, clip, attempt, key))
            attempt += 1
            now = int(self.env.now)
            status = dec.status
            if status == 200:
                stats.requests += 1
                gate.core.on_success(now)
                gate.core.release()
                gate.changed()
                return True
            stats.count(status)
            if status == 429:
                ra_us = None if dec.retry_after_ms is None else dec.retry_after_ms * 1000
                gate.core.on_429(now, ra_us)
                gate.core.release()
                gate.changed()
                waits += 1
                if waits > MAX_429_WAITS:
                    return False
                stats.retries += 1
                prio = True
                continue
            gate.core.release()
            gate.changed()
            if used == policy.max_retries:
                return False
            stats.retries += 1
            yield self.env.timeout(policy.delay_us(used, None))
            used += 1
            prio = high

    def tts(
        self, cid: int, order: int, tts_c: int, stats: _Stats, gate: _SimGate | None = None
    ) -> Generator[Event, Any, bool]:
        """All speech clips of one scene; every clip is tried, any failure fails the scene."""
        k = self.provider.speeches(cid, order)
        policy = self.scenario.retry_tts
        if k == 0:
            return True
        if gate is not None and gate.core.policy == "gate":  # every clip, every attempt gated
            oks_q = [True]

            def gated_clip(clip: int) -> Generator[Event, Any, None]:
                assert gate is not None
                ok = yield from self.gated_call(cid, 2, order, clip, policy, stats, gate, False)
                if not ok:
                    oks_q[0] = False

            yield self.env.all_of([self.env.process(gated_clip(j)) for j in range(k)])
            return oks_q[0]
        if gate is not None and k > 1:  # adaptive: every clip waits for the gate in order
            oks_g = [True]

            def clip_proc(clip: int) -> Generator[Event, Any, None]:
                assert gate is not None
                ev = gate.acquire()
                if ev is not None:
                    yield ev
                ok = yield from self.call(cid, 2, order, clip, policy, stats, gate)
                gate.core.release()
                gate.changed()
                if not ok:
                    oks_g[0] = False

            yield self.env.all_of([self.env.process(clip_proc(j)) for j in range(k)])
            return oks_g[0]
        if tts_c <= 1 or k == 1:
            ok_all = True
            for clip in range(k):
                ok = yield from self.call(cid, 2, order, clip, policy, stats)
                ok_all = ok_all and ok
            return ok_all
        # Bounded map: min(c, k) workers take clips in order (= a FIFO semaphore of size c).
        env = self.env
        nxt = [0]
        oks = [True]

        def worker() -> Generator[Event, Any, None]:
            while nxt[0] < k:
                clip = nxt[0]
                nxt[0] += 1
                ok = yield from self.call(cid, 2, order, clip, policy, stats)
                if not ok:
                    oks[0] = False

        yield env.all_of([env.process(worker()) for _ in range(min(tts_c, k))])
        return oks[0]


def _classroom(
    w: _World,
    cid: int,
    mode: str,
    c: int,
    tts_c: int,
    out: dict[str, Any],
    adaptive: str = "off",
    delay_us: int = 0,
) -> Generator[Event, Any, None]:
    env = w.env
    sc = w.scenario
    n = sc.outlines
    if delay_us:  # a staggered tenant arrives later
        yield env.timeout(delay_us)
    stats = _Stats()
    ready: list[tuple[int, int]] = []
    failed: list[int] = []
    status = "completed"
    t0 = int(env.now)
    out["stats"] = stats
    out["ready"] = ready
    out["failed"] = failed
    parallel = mode != "serial" and c > 1 and n > 1
    gated = adaptive == "gate"
    llm_gate = (
        _SimGate(env, GateCore(min(c, n) + 1 if parallel else 1, adaptive)) if gated else None
    )
    tts_gate = (
        _SimGate(env, GateCore(max(1, tts_c), adaptive))
        if gated or (adaptive != "off" and tts_c > 1)
        else None
    )

    def llm_call(step: int, i: int, high: bool) -> Generator[Event, Any, bool]:
        if llm_gate is not None:
            return (yield from w.gated_call(cid, step, i, 0, sc.retry_llm, stats, llm_gate, high))
        return (yield from w.call(cid, step, i, 0, sc.retry_llm, stats))

    def scene_tail(i: int) -> Generator[Event, Any, bool]:
        ok = yield from llm_call(1, i, True)
        if ok:
            ok = yield from w.tts(cid, i, tts_c, stats, tts_gate)
        if ok:
            ready.append((i, int(env.now) - t0))
        else:
            failed.append(i)
        return ok

    if not parallel:
        for i in range(n):
            ok = yield from llm_call(0, i, False)
            if not ok:
                failed.append(i)
                status = "paused"
                break
            ok = yield from scene_tail(i)
            if not ok:
                status = "paused"
                break
    else:
        slots = min(c, n)
        done = [env.event() for _ in range(n)]
        nxt = [0]

        def content_worker() -> Generator[Event, Any, None]:
            while nxt[0] < n:
                i = nxt[0]
                nxt[0] += 1
                ok = yield from llm_call(0, i, False)
                done[i].succeed(ok)

        if adaptive in ("off", "gate"):
            for _ in range(slots):
                env.process(content_worker())
        else:
            gate = _SimGate(env, GateCore(slots, adaptive))

            def content_task(i: int) -> Generator[Event, Any, None]:
                ev = gate.acquire()
                if ev is not None:
                    yield ev
                ok = yield from w.call(cid, 0, i, 0, sc.retry_llm, stats, gate)
                gate.core.release()
                gate.changed()
                done[i].succeed(ok)

            for i in range(n):
                env.process(content_task(i))
        if mode == "hybrid":
            yield env.all_of(done)
        for i in range(n):
            ok = yield done[i]
            if not ok:
                failed.append(i)
                continue
            ok = yield from scene_tail(i)
            if not ok:
                status = "paused"
                break
    out["status"] = status
    out["end"] = env.now - t0


def _result(
    sc: Scenario,
    mode: str,
    c: int,
    tts_c: int,
    seed: int,
    cid: int,
    out: dict[str, Any],
    tenants: int,
    tenant: int,
    log: Sequence[Any],
) -> RunResult:
    st: _Stats = out["stats"]
    ready = out["ready"]
    return RunResult(
        world="sim",
        scenario=sc.name,
        mode=mode,
        concurrency=c,
        tts_concurrency=tts_c,
        seed=seed,
        classroom=cid,
        makespan_s=out["end"] / 1e6,
        ttfs_s=ready[0][1] / 1e6 if ready else math.nan,
        scenes_ok=len(ready),
        scenes_failed=len(out["failed"]),
        status=out["status"],
        requests=st.requests,
        http_429=st.http_429,
        http_5xx=st.http_5xx,
        retries=st.retries,
        timeouts=st.timeouts,
        scene_order=tuple(i for i, _ in ready),
        scene_ready_s=tuple(t / 1e6 for _, t in ready),
        failed_orders=tuple(out["failed"]),
        tenants=tenants,
        tenant=tenant,
        requests_log=tuple(records_from_log(log)) if log else (),
    )


def _check(
    mode: str, tenants: int, seed: int, run_id: int, adaptive: str = "off", stagger_s: float = 0.0
) -> None:
    if adaptive not in POLICIES:
        raise ValueError(f"adaptive: must be one of {', '.join(POLICIES)}; got {adaptive!r}")
    if not (stagger_s >= 0 and math.isfinite(stagger_s)):
        raise ValueError(f"stagger_s: must be a finite number >= 0, got {stagger_s}")
    if mode not in MODES:
        raise ValueError(f"mode: must be one of {', '.join(MODES)}; got {mode!r}")
    if tenants < 1:
        raise ValueError(f"tenants: must be >= 1, got {tenants}")
    if seed < 0 or run_id < 0:
        raise ValueError(f"seed and run_id: must be >= 0, got {seed}, {run_id}")


def _run_one(
    sc: Scenario,
    mode: str,
    c: int,
    tts_c: int,
    seed: int,
    run_id: int,
    tenants: int,
    draws: Draws | None,
    records: bool,
    adaptive: str = "off",
    stagger_s: float = 0.0,
    stagger_dist: str = "constant",
) -> list[RunResult]:
    prov = Provider(sc, seed, draws=draws, keep_log=records)
    w = _World(sc, prov)
    outs = []
    offsets = tenant_offsets_us(seed, run_id, tenants, stagger_s, stagger_dist)
    for j in range(tenants):
        out: dict[str, Any] = {}
        delay = offsets[j]
        w.env.process(_classroom(w, run_id * tenants + j, mode, c, tts_c, out, adaptive, delay))
        outs.append(out)
    w.env.run()
    results = []
    for j, out in enumerate(outs):
        cid = run_id * tenants + j
        log = [e for e in prov.log if e[0] == cid] if records else []
        results.append(_result(sc, mode, c, tts_c, seed, cid, out, tenants, j, log))
    return results


def simulate(
    scenario: Scenario,
    mode: str,
    concurrency: int,
    *,
    seed: int = 0,
    run_id: int = 0,
    tts_concurrency: int | None = None,
    tenants: int = 1,
    records: bool = False,
    adaptive: str = "off",
    stagger_s: float = 0.0,
    stagger_dist: str = "constant",
) -> RunResult | list[RunResult]:
    """Simulate one run: one classroom (``tenants=1``) or ``tenants`` sharing the keys.

    ``concurrency`` is clamped like upstream's ``PARALLEL_SCENE_CONCURRENCY``; with
    ``tenants > 1`` a list of per-classroom results is returned. Classroom ids
    are ``run_id * tenants + j``; they key the draws. Tenant ``j`` starts at
    ``j * stagger_s`` (``stagger_dist="constant"``) or after exponential gaps of mean
    ``stagger_s`` (``"exponential"``, keyed by seed and run id).
    ``adaptive`` is the limiter policy (:mod:`sim.limiter`).
    """
    _check(mode, tenants, seed, run_id, adaptive, stagger_s)
    c = clamp_concurrency(concurrency)
    tts_c = effective_tts_concurrency(mode, c, tts_concurrency)
    res = _run_one(
        scenario,
        mode,
        c,
        tts_c,
        seed,
        run_id,
        tenants,
        None,
        records,
        adaptive,
        stagger_s,
        stagger_dist,
    )
    return res[0] if tenants == 1 else res


def simulate_many(
    scenario: Scenario,
    mode: str,
    concurrency: int,
    reps: int,
    *,
    seed: int = 0,
    first_run: int = 0,
    tts_concurrency: int | None = None,
    tenants: int = 1,
    records: bool = False,
    adaptive: str = "off",
    stagger_s: float = 0.0,
    stagger_dist: str = "constant",
) -> list[RunResult]:
    """``reps`` runs with run ids ``first_run ..``; draws are made in one batch."""
    _check(mode, tenants, seed, first_run, adaptive, stagger_s)
    if reps < 1:
        raise ValueError(f"reps: must be >= 1, got {reps}")
    c = clamp_concurrency(concurrency)
    tts_c = effective_tts_concurrency(mode, c, tts_concurrency)
    lo = first_run * tenants
    draws = Draws(scenario, seed, lo, lo + reps * tenants)
    out: list[RunResult] = []
    for r in range(first_run, first_run + reps):
        out.extend(
            _run_one(
                scenario,
                mode,
                c,
                tts_c,
                seed,
                r,
                tenants,
                draws,
                records,
                adaptive,
                stagger_s,
                stagger_dist,
            )
        )
    return out
