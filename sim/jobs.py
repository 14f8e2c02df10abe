"""The server path in the model: background classroom jobs on one server key.

Upstream's ``POST /api/generate-classroom`` starts a background job that runs
``lib/server/classroom-generation.ts`` on the server's keys (see
``docs/server-path.md``). A job here is:

1. the scene loop over all ``N`` outlines (no foreground first scene): serial
   content → actions per outline, a failed content or actions *skips* that scene
   (a job never pauses); with ``mode="pipelined"`` and ``c > 1``, #697's content
   prefetch (the browser loop's FIFO semaphore of ``min(c, N)``, JavaScript's
   hand-off order);
2. then the classroom's TTS in a separate media step: every clip of every scene
   that was generated, in order, through a bounded map of ``media_concurrency``.

Retries compose as on upstream's server path: the model call keeps the AI SDK's
own budget (:data:`MODEL_RETRY`: 2 retries, 2 s × 2, Retry-After honoured below
60 s), which runs *inside* one request (:meth:`sim.model._World.fetch`), and the
job wraps each generator in ``withGenerationRetry`` (:data:`JOB_RETRY`: 5 retries,
1 s × 2, cap 16 s, keyed jitter up to 20 %) around it (:meth:`sim.model._World.call`):
up to 3 × 6 = 18 provider attempts per step call. Both are configurable
(:func:`server_scenario`). Clips: no model-call layer, ``tts_retry`` (default none).

A job *fails* when any of its scenes or clips failed (the classroom is not the one
asked for); ``scenes_ok == 0`` is upstream's thrown "No scenes were generated".

Arrivals: Poisson at ``arrival_per_hour`` from the run's keyed stream
(:func:`sim.draws.tenant_offsets_us`, exponential gaps; job 0 at 0), or a replayed
list of arrival times. Job ``j`` is classroom ``run_id * jobs + j`` for the draws.
With ``key_gate`` every attempt on each key passes that key's
:class:`~sim.keygate.KeyGate` (FIFO by job arrival, the loop's current call first).
"""

from __future__ import annotations

import math
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from simpy.events import Event

from . import rules
from .config import check_mode
from .draws import Draws, tenant_offsets_us
from .errors import UserError
from .job_machine import Call, Ended, JobCommand, JobMachine, LoopEnded, Start, media_plan
from .job_machine import first_call as _first_call
from .job_machine import loop_call as _loop_call
from .keygate import KeyGate, key_cap
from .limiter import Rank
from .model import _Classroom, _result, _SimGate, _World
from .provider import Provider
from .rules import Counts, Policy, RetryPolicy, RunStatus, Step, clamp_concurrency
from .scenario import Scenario
from .upstream import (
    AI_SDK_RETRY,
    CLIENT_RETRY,
    NO_RETRY,
    ClientProfile,
    ErrorShape,
    RetryLayer,
)

__all__ = [
    "CLIENTS",
    "JOB_RETRY",
    "MODEL_RETRY",
    "JobRecord",
    "JobsRun",
    "ServerProfile",
    "arrivals_us",
    "check_jobs",
    "job_record",
    "key_gates",
    "media_plan",
    "model_retry_of",
    "server_scenario",
    "simulate_jobs",
    "simulate_keygate_tenants",
    "summarize_jobs",
]

CLIENTS = ("browser", "server")
MODEL_RETRY = AI_SDK_RETRY  # the AI SDK inside generateText, before #788 (no maxRetries: 0 yet)


def model_retry_of(profile: ClientProfile) -> RetryPolicy:
    """The budget inside the job's model call: the AI SDK's own (2 retries) while retries lived
    in the routes; since #788 (``lib/server/classroom-generation.ts``) the job calls the model
    with ``maxRetries: 0``, so each step makes the 6 attempts of withGenerationRetry alone."""
    return MODEL_RETRY if profile.retry_in is RetryLayer.ROUTE else NO_RETRY


JOB_RETRY = CLIENT_RETRY  # withGenerationRetry around each generator call


@dataclass(frozen=True)
class ServerProfile(ClientProfile):
    """The server job's rules: two retry layers that multiply, no foreground scene."""

    model_retry: RetryPolicy = MODEL_RETRY
    job_retry: RetryPolicy = JOB_RETRY
    tts_retry: RetryPolicy = NO_RETRY

    def client_policy(self, step: int, foreground: bool) -> RetryPolicy:
        """The job's ``withGenerationRetry`` (content, actions) or the clip's budget."""
        return self.tts_retry if step == Step.TTS else self.job_retry

    def route_policy(self, step: int, foreground: bool) -> RetryPolicy:
        """The AI SDK's budget inside one model call; clips have none."""
        return NO_RETRY if step == Step.TTS else self.model_retry


def server_scenario(
    sc: Scenario,
    *,
    model_retry: RetryPolicy | None = None,
    job_retry: RetryPolicy | None = None,
    tts_retry: RetryPolicy | None = None,
) -> Scenario:
    """``sc`` with the server job's client rules (keeps its hand-off rule and jitter)."""
    base = sc.client
    prof = ServerProfile(
        upstream=base.upstream,
        handoff=base.handoff,
        jitter_u=base.jitter_u,
        foreground_first_scene=False,
        content_failure_pauses=False,
        provider_errors=ErrorShape.ROUTE,
        model_retry=model_retry_of(base) if model_retry is None else model_retry,
        job_retry=JOB_RETRY if job_retry is None else job_retry,
        tts_retry=NO_RETRY if tts_retry is None else tts_retry,
    )
    return sc.replace(client=prof)


def check_jobs(
    mode: str, jobs: int, arrival_per_hour: float | None, arrivals_s: Sequence[float] | None
) -> None:
    """One-line ValueErrors naming the argument."""
    check_mode(mode)
    if arrivals_s is not None:
        if not arrivals_s or any(not (math.isfinite(t) and t >= 0) for t in arrivals_s):
            raise UserError("arrivals: must be a non-empty list of finite times >= 0")
        return
    if not (isinstance(jobs, int) and jobs >= 1):
        raise UserError(f"jobs: must be an integer >= 1, got {jobs!r}")
    if arrival_per_hour is None or not (math.isfinite(arrival_per_hour) and arrival_per_hour > 0):
        raise UserError(f"arrival_per_hour: must be a number > 0, got {arrival_per_hour!r}")


def arrivals_us(
    seed: int,
    run_id: int,
    jobs: int,
    arrival_per_hour: float | None,
    arrivals_s: Sequence[float] | None = None,
) -> list[int]:
    """Job arrival times in µs: the replayed list (sorted), else Poisson from the keyed stream."""
    if arrivals_s is not None:
        return sorted(round(t * 1e6) for t in arrivals_s)
    assert arrival_per_hour is not None
    return tenant_offsets_us(seed, run_id, jobs, 3600.0 / arrival_per_hour, "exponential")


@dataclass(frozen=True)
class JobRecord:
    """One job: times in model seconds, counts as the job (the client) saw them."""

    job: int
    classroom: int
    arrival_s: float
    latency_s: float
    scenes_ok: int
    scenes_failed: int
    clips: int
    clips_failed: int
    requests: int
    http_429: int
    http_5xx: int
    retries: int
    timeouts: int
    failed_orders: tuple[int, ...] = ()

    @property
    def failed(self) -> bool:
        return self.scenes_failed > 0 or self.clips_failed > 0


def job_record(
    job: int,
    classroom: int,
    arrival_us: int,
    latency_us: int,
    *,
    scenes_ok: int,
    failed: Sequence[int],
    clips: int,
    clips_failed: int,
    counts: Counts,
) -> JobRecord:
    """A job's :class:`JobRecord`, assembled once for both worlds (integer µs in)."""
    return JobRecord(
        job=job,
        classroom=classroom,
        arrival_s=arrival_us / 1e6,
        latency_s=latency_us / 1e6,
        scenes_ok=scenes_ok,
        scenes_failed=len(failed),
        clips=clips,
        clips_failed=clips_failed,
        requests=counts.requests,
        http_429=counts.http_429,
        http_5xx=counts.http_5xx,
        retries=counts.retries,
        timeouts=counts.timeouts,
        failed_orders=tuple(sorted(failed)),
    )


class _TenantSimGate(_SimGate):
    """One tenant's view of a shared :class:`KeyGate`: its waiters carry the tenant's rank."""

    def __init__(self, env: Any, core: KeyGate, rank: int) -> None:
        super().__init__(env, core)
        self.rank = rank

    def acquire(self, rank: Rank = ()) -> Event | None:
        return super().acquire((self.rank, *rank))

    def release(self, rank: Rank = ()) -> None:
        super().release((self.rank, *rank))


def key_gates(sc: Scenario) -> tuple[KeyGate, KeyGate]:
    """One gate per key (LLM, TTS) with the key's in-flight limit as its cap."""
    return KeyGate(key_cap(sc.quota_llm.max_inflight)), KeyGate(key_cap(sc.quota_tts.max_inflight))


class _KeyClassroom(_Classroom):
    """A browser classroom whose every call (foreground scene included) passes the key-wide
    gates, as tenant ``rank``."""

    def __init__(
        self, w: _World, cid: int, mode: str, c: int, tts_c: int, gates: tuple[KeyGate, KeyGate]
    ) -> None:
        super().__init__(w, cid, mode, c, tts_c, Policy.GATE)
        self.rank = cid
        self.llm_gate = _TenantSimGate(w.env, gates[0], cid)
        self.tts_gate = _TenantSimGate(w.env, gates[1], cid)

    def _gates(self, pending: int) -> None:  # the key-wide gates exist already
        return

    def llm_call(self, step: int, i: int, fg: bool = False) -> Generator[Event, Any, bool]:
        assert self.llm_gate is not None
        gate, st = self.llm_gate, self.stats
        return (yield from self.w.call(self.cid, step, i, 0, fg, st, gate))

    def scene_tail(self, i: int, fg: bool = False) -> Generator[Event, Any, bool]:
        if not fg:
            return (yield from super().scene_tail(i, fg))
        ok = yield from self.llm_call(Step.ACTIONS, i, fg)
        if ok:  # the preview page's clips, one at a time, each through the gate
            assert self.tts_gate is not None
            for clip in range(self.w.provider.speeches(self.cid, i)):
                one = yield from self.w.call(
                    self.cid, Step.TTS, i, clip, fg, self.stats, self.tts_gate
                )
                ok = ok and one
        if ok:
            self.ready.append((i, int(self.env.now) - self.t0))
        else:
            self.failed.append(i)
        return ok


class _Job(_Classroom):
    """One server job: a thin driver of :class:`~sim.job_machine.JobMachine` (the scene loop,
    a failure skips the scene, then the media step); each step call is :meth:`_World.call`."""

    def __init__(
        self,
        w: _World,
        cid: int,
        mode: str,
        c: int,
        media_c: int,
        gates: tuple[KeyGate, KeyGate] | None,
        rank: int,
    ) -> None:
        super().__init__(w, cid, mode, c, 1, Policy.OFF if gates is None else Policy.GATE)
        self.jm = JobMachine(media_c)
        self.cmds: list[JobCommand] = []  # what the machine said last
        self.arrival = 0
        if gates is not None:
            self.llm_gate = _TenantSimGate(w.env, gates[0], rank)
            self.tts_gate = _TenantSimGate(w.env, gates[1], rank)

    def _gates(self, pending: int) -> None:
        return

    def llm_call(self, step: int, i: int, fg: bool = False) -> Generator[Event, Any, bool]:
        """A content or actions call (the loop's or the prefetch's); the machine hears it end."""
        ok = yield from super().llm_call(step, i, fg)
        clips = self.w.provider.speeches(self.cid, i) if ok and step == Step.ACTIONS else 0
        self.cmds = self.jm.feed(Ended(step, i, 0, ok, clips))
        return ok

    def scene_tail(self, i: int, fg: bool = False) -> Generator[Event, Any, bool]:
        """Actions (the pipelined loop's); the machine records the outcome, the job goes on."""
        yield from self.llm_call(Step.ACTIONS, i)
        return True

    def serial_loop(self, pending: list[int]) -> Generator[Event, Any, None]:
        self.cmds = self.jm.feed(Start(tuple(pending), serial=True))
        while (c := _loop_call(self.cmds)) is not None:
            yield from self.llm_call(c.step, c.order)

    def parallel_loop(self, pending: list[int]) -> Generator[Event, Any, None]:
        self.cmds = self.jm.feed(Start(tuple(pending), serial=False))
        yield from super().parallel_loop(pending)
        self.cmds = self.jm.feed(LoopEnded())

    def media(self) -> Generator[Event, Any, None]:
        """The media step: one lane per clip call the machine starts; a freed lane takes the
        clip the machine gives it next."""
        w, env = self.w, self.env

        def lane(c: Call | None) -> Generator[Event, Any, None]:
            while c is not None:
                ok = yield from w.call(
                    self.cid, Step.TTS, c.order, c.clip, False, self.stats, self.tts_gate
                )
                c = _first_call(self.jm.feed(Ended(Step.TTS, c.order, c.clip, ok)))

        lanes = [env.process(lane(c)) for c in self.cmds if isinstance(c, Call)]
        if lanes:
            yield env.all_of(lanes)
        assert self.jm.done

    def run(self, delay_us: int) -> Generator[Event, Any, None]:
        self.arrival = delay_us
        yield from super().run(delay_us)
        yield from self.media()
        self.end = int(self.env.now) - self.t0
        self.status = RunStatus.COMPLETED

    def record(self, job: int) -> JobRecord:
        jm = self.jm
        return job_record(
            job, self.cid, self.arrival, self.end, scenes_ok=len(jm.scenes),
            failed=jm.failed, clips=jm.media_clips, clips_failed=jm.clips_failed,
            counts=self.stats,
        )  # fmt: skip


@dataclass
class JobsRun:
    """A run of jobs: per-job records and the provider's request log (µs tuples)."""

    records: list[JobRecord]
    log: list[tuple[Any, ...]]
    scenario: Scenario
    mode: str
    concurrency: int
    media_concurrency: int
    key_gate: bool

    def summary(self) -> dict[str, Any]:
        return summarize_jobs(self.records, self.log, self.scenario) | {
            "mode": self.mode,
            "concurrency": self.concurrency,
            "media_concurrency": self.media_concurrency,
            "key_gate": self.key_gate,
        }


def simulate_jobs(
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
    server: bool = True,
) -> JobsRun:
    """Simulate server jobs on one key. ``scenario`` gets the server rules
    (:func:`server_scenario`) unless it has them already or ``server=False``."""
    check_jobs(mode, jobs, arrival_per_hour, arrivals_s)
    if not (isinstance(media_concurrency, int) and 1 <= media_concurrency <= 1000):
        raise UserError(
            f"media_concurrency: must be an integer in [1, 1000], got {media_concurrency!r}"
        )
    sc = scenario
    if server and not isinstance(sc.client, ServerProfile):
        sc = server_scenario(sc)
    arr = arrivals_us(seed, run_id, jobs, arrival_per_hour, arrivals_s)
    n = len(arr)
    c = clamp_concurrency(concurrency)
    lo = run_id * n
    prov = Provider(sc, seed, draws=Draws(sc, seed, lo, lo + n), keep_log=True)
    w = _World(sc, prov)
    gates = key_gates(sc) if key_gate else None
    js = []
    for j, t in enumerate(arr):
        job = _Job(w, lo + j, mode, c, media_concurrency, gates, j)
        w.env.process(job.run(t))
        js.append(job)
    w.env.run()
    recs = [job.record(j) for j, job in enumerate(js)]
    return JobsRun(recs, list(prov.log), sc, mode, c, media_concurrency, key_gate)


def simulate_keygate_tenants(
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
) -> list[Any]:
    """:func:`sim.simulate` with ``tenants`` browser classrooms on one key, every call through
    the key-wide gates (one per key) instead of per-classroom gates. Per-classroom
    results as :func:`sim.simulate` gives them (``requests_log`` empty)."""
    check_mode(mode)
    if not (isinstance(tenants, int) and tenants >= 1):
        raise UserError(f"tenants: must be an integer >= 1, got {tenants!r}")
    c = clamp_concurrency(concurrency)
    tts_c = rules.tts_concurrency(mode, c, tts_concurrency, scenario.client.tts_at_concurrency)
    prov = Provider(scenario, seed, keep_log=False)
    w = _World(scenario, prov)
    gates = key_gates(scenario)
    offsets = tenant_offsets_us(seed, run_id, tenants, stagger_s, stagger_dist)
    rooms = []
    for j in range(tenants):
        cr = _KeyClassroom(w, run_id * tenants + j, mode, c, tts_c, gates)
        w.env.process(cr.run(offsets[j]))
        rooms.append(cr)
    w.env.run()
    return [_result(cr, seed, tenants, j, []) for j, cr in enumerate(rooms)]


def _pct(x: np.ndarray[Any, Any], p: float) -> float | None:
    return float(np.percentile(x, p)) if len(x) else None


def _key_use(log: Sequence[tuple[Any, ...]], llm: bool, limit: int, span_us: int) -> dict[str, Any]:
    """Mean requests in flight on a key over the run (admitted attempts' busy time), and
    that over the key's limit (``None`` for an unlimited key)."""
    busy = sum(e[8] - e[7] for e in log if (e[1] != Step.TTS) == llm and e[9] != 429)
    mean = busy / span_us if span_us > 0 else 0.0
    return {"mean_in_flight": mean, "utilisation": mean / limit if limit > 0 else None}


def summarize_jobs(
    records: Sequence[JobRecord], log: Sequence[tuple[Any, ...]], sc: Scenario
) -> dict[str, Any]:
    """A cell's numbers: job latency p50/p95/p99, failed jobs, 429s, key use, jobs per hour.

    ``jobs_per_hour`` is the jobs that did not fail per hour of the run's span (first
    arrival to last job end): the throughput the key sustained.
    """
    lat = np.array([r.latency_s for r in records], dtype=float)
    start = min(r.arrival_s for r in records)
    end = max(r.arrival_s + r.latency_s for r in records)
    span = end - start
    ok = sum(1 for r in records if not r.failed)
    span_us = round(span * 1e6)
    return {
        "scenario": sc.name,
        "upstream": sc.upstream,
        "client": "server",
        "jobs": len(records),
        "job_latency_s": {
            "mean": float(lat.mean()),
            "p50": _pct(lat, 50),
            "p95": _pct(lat, 95),
            "p99": _pct(lat, 99),
        },
        "failed_jobs": len(records) - ok,
        "empty_jobs": sum(1 for r in records if r.scenes_ok == 0),
        "failed_scenes": sum(r.scenes_failed for r in records),
        "failed_clips": sum(r.clips_failed for r in records),
        "http_429": sum(r.http_429 for r in records),
        "requests": sum(r.requests for r in records),
        "retries": sum(r.retries for r in records),
        "span_s": span,
        "jobs_per_hour": ok / span * 3600.0 if span > 0 else math.nan,
        "offered_per_hour": (len(records) - 1) / (records[-1].arrival_s - start) * 3600.0
        if len(records) > 1 and records[-1].arrival_s > start
        else None,
        "key": {
            "llm": _key_use(log, True, sc.quota_llm.max_inflight, span_us),
            "tts": _key_use(log, False, sc.quota_tts.max_inflight, span_us),
        },
    }
