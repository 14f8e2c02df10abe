"""An exact vectorised path for quota-free cells (no in-flight limit, no token bucket).

Without a quota no request affects another, so each call's duration and outcome
is a function of its own keyed draws (attempts, random 429/5xx, faults, timeouts,
the client's backoff and its keyed jitter), and a classroom is a max-plus
recurrence over its scenes. This module evaluates that recurrence with numpy
across many classrooms at once, with the same draws, rules (:mod:`sim.rules`, the
scenario's upstream profile) and failure semantics as :mod:`sim.model`: the
foreground first scene (its own retry budgets, clips one at a time), then the
loop over the pending outlines (serial, or parallel content with ``min(c,
pending)`` slots), and the final status. The tests prove it equal to the SimPy
model run for run. Results are columns (numpy arrays), turned into the tidy
schema by :func:`FastRuns.frame` or :func:`FastRuns.results`.

Not covered (:func:`fast_fits` is False; :func:`sim.simulate` runs SimPy): keys with
an in-flight limit or a bucket, and profiles whose route retries inside one client
request (the ``route`` error shape before #788): those retries share the request's
timeout and count differently.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from .config import RunConfig
from .draws import KIND_5XX, KIND_429, KIND_FAULT, Draws
from .errors import UserError
from .qoe import QOE_FIELDS, QoE, qoe_us
from .rules import (
    Policy,
    RetryPolicy,
    RunStatus,
    Step,
    content_slots,
    is_parallel,
    tts_concurrency,
)
from .scenario import Scenario
from .schema import SCHEMA_VERSION, RunResult
from .upstream import ErrorShape

__all__ = [
    "STATUSES",
    "FastRuns",
    "delay_us",
    "fast_fits",
    "quota_free",
    "route_retries",
    "simulate_fast",
]

I64 = NDArray[np.int64]
I8 = NDArray[np.int8]
B = NDArray[np.bool_]
F64 = NDArray[np.float64]

# FastRuns.status codes: an index into STATUSES
STATUSES = (RunStatus.COMPLETED, RunStatus.PAUSED, RunStatus.FIRST_SCENE_FAILED)
_COMPLETED, _PAUSED, _FIRST_FAILED = 0, 1, 2


def route_retries(scenario: Scenario) -> bool:
    """Whether the profile's routes retry inside one client request (any step, either scene)."""
    client = scenario.client
    return any(
        client.route_policy(step, fg).max_retries > 0 for step in Step for fg in (False, True)
    )


def quota_free(scenario: Scenario) -> bool:
    """Whether the fast path applies: neither key has an in-flight limit nor a bucket, and
    the routes do not retry (:func:`route_retries`; pre-#788 profiles in their default
    ``route`` error shape do, so those run on SimPy)."""
    limited = scenario.quota_llm.limited or scenario.quota_tts.limited
    return not (limited or route_retries(scenario) or refusals(scenario))


def refusals(scenario: Scenario) -> bool:
    """Whether a key's ``p_5xx`` faults answer a 4xx (never retried): the fast path retries
    every fault, so those run in :func:`sim.simulate_many`."""
    q = (scenario.quota_llm, scenario.quota_tts)
    return any(k.p_5xx > 0 and k.status_5xx < 500 for k in q)


def fast_fits(scenario: Scenario, config: RunConfig) -> bool:
    """The engine rule (:func:`sim.engines.pick_engine`): this path computes ``config`` on
    ``scenario`` when the keys are quota-free (:func:`quota_free`), one classroom has them
    (``tenants == 1``) and no limiter runs (``adaptive == "off"``)."""
    return quota_free(scenario) and config.tenants == 1 and config.adaptive == Policy.OFF


def delay_us(policy: RetryPolicy, retry_index: int, retry_after_us: int | None, u: F64) -> I64:
    """:meth:`RetryPolicy.delay_us` for an array of jitter draws ``u`` (same shape out).

    The same operations in the same order on the same doubles as the scalar method, so
    each element equals ``policy.delay_us(retry_index, retry_after_us, float(u_i))``.
    """
    p = policy
    exp_ms = p.initial_delay_s * p.backoff_factor**retry_index * 1000.0
    cap_ms = p.max_delay_s * 1000.0 if p.max_delay_s > 0 else math.inf
    exp_ms = min(cap_ms, exp_ms)
    exp_us = round(exp_ms * 1000)
    u = np.asarray(u, dtype=np.float64)
    if (
        p.honour_retry_after
        and retry_after_us is not None
        and retry_after_us >= 0
        and (retry_after_us < p.retry_after_cap_s * 1e6 or retry_after_us < exp_us)
    ):
        return np.full(u.shape, retry_after_us, dtype=np.int64)
    if p.jitter:
        uc = np.minimum(np.maximum(u, 0.0), 1.0)
        jittered = np.minimum(cap_ms, exp_ms + np.floor(exp_ms * uc * p.jitter))
        out: I64 = np.rint(jittered * 1000).astype(np.int64)
        return out
    return np.full(u.shape, exp_us, dtype=np.int64)


_COUNTERS = ("requests", "http_429", "http_5xx", "retries", "timeouts")


@dataclass
class _Counters:
    """Per-run counters (arrays of length reps)."""

    requests: I64
    http_429: I64
    http_5xx: I64
    retries: I64
    timeouts: I64


@dataclass
class _StepCalls:
    """Outcome of every call of one step: dense durations and success, sparse counters.

    Calls that succeed at their first attempt count one request and nothing
    else; ``idx`` (flat indices into the table) lists the others, with their
    per-call counters in ``extra`` (columns in ``_COUNTERS`` order).
    """

    dur: I64
    ok: B
    idx: I64
    extra: I64  # (len(idx), 5)


@dataclass
class FastRuns:
    """Column results of :func:`simulate_fast`; times in µs.

    ``status`` holds codes into :data:`STATUSES` (completed, paused, first_scene_failed).
    """

    scenario: Scenario
    mode: str
    concurrency: int
    tts_concurrency: int
    seed: int
    first_run: int
    end_us: I64
    ready_us: I64  # (reps, N), -1 where no scene was added
    failed: B  # (reps, N)
    status: I8
    counters: _Counters
    qoe: QoE | None = None  # the learner's metrics (sim.qoe.qoe_us on ready_us)

    @property
    def paused(self) -> B:
        out: B = self.status == _PAUSED
        return out

    @property
    def status_names(self) -> NDArray[np.str_]:
        return np.array([str(s) for s in STATUSES])[self.status]

    @property
    def makespan_s(self) -> F64:
        return self.end_us / 1e6

    @property
    def ttfs_s(self) -> F64:
        r = np.where(self.ready_us >= 0, self.ready_us, np.iinfo(np.int64).max).min(axis=1)
        return np.where(r == np.iinfo(np.int64).max, np.nan, r / 1e6)

    def results(self) -> list[RunResult]:
        """The runs as :class:`RunResult` objects (slower; for comparison and small runs)."""
        out = []
        ttfs = self.ttfs_s
        c = self.counters
        names = self.status_names
        for r in range(len(self.end_us)):
            orders = np.flatnonzero(self.ready_us[r] >= 0)
            ready = self.ready_us[r, orders]
            srt = np.argsort(ready, kind="stable")
            out.append(
                RunResult(
                    world="sim",
                    scenario=self.scenario.name,
                    mode=self.mode,
                    concurrency=self.concurrency,
                    tts_concurrency=self.tts_concurrency,
                    seed=self.seed,
                    classroom=self.first_run + r,
                    makespan_s=float(self.end_us[r]) / 1e6,
                    ttfs_s=float(ttfs[r]),
                    scenes_ok=len(orders),
                    scenes_failed=int(self.failed[r].sum()),
                    status=str(names[r]),
                    requests=int(c.requests[r]),
                    http_429=int(c.http_429[r]),
                    http_5xx=int(c.http_5xx[r]),
                    retries=int(c.retries[r]),
                    timeouts=int(c.timeouts[r]),
                    scene_order=tuple(int(o) for o in orders[srt]),
                    scene_ready_s=tuple(float(t) / 1e6 for t in ready[srt]),
                    failed_orders=tuple(int(o) for o in np.flatnonzero(self.failed[r])),
                    **(self.qoe.row(r) if self.qoe is not None else {}),
                    upstream=self.scenario.upstream,
                )
            )
        return out

    def frame(self) -> pd.DataFrame:
        """The per-run columns of :func:`sim.schema.runs_frame`, without per-scene lists
        (its text columns taken from one-value arrays: pandas makes a text column from a
        scalar or from Python strings value by value)."""
        c = self.counters
        n = len(self.end_us)
        every = np.zeros(n, dtype=np.intp)
        return pd.DataFrame(
            {
                "world": _texts(("sim",), every),
                "scenario": _texts((self.scenario.name,), every),
                "mode": _texts((self.mode,), every),
                "concurrency": self.concurrency,
                "tts_concurrency": self.tts_concurrency,
                "seed": self.seed,
                "classroom": np.arange(self.first_run, self.first_run + n),
                "makespan_s": self.makespan_s,
                "ttfs_s": self.ttfs_s,
                "scenes_ok": (self.ready_us >= 0).sum(axis=1),
                "scenes_failed": self.failed.sum(axis=1),
                "status": _texts(tuple(str(x) for x in STATUSES), self.status.astype(np.intp)),
                "requests": c.requests,
                "http_429": c.http_429,
                "http_5xx": c.http_5xx,
                "retries": c.retries,
                "timeouts": c.timeouts,
                **({k: getattr(self.qoe, k) for k in QOE_FIELDS} if self.qoe is not None else {}),
                "upstream": _texts((self.scenario.upstream,), every),
                "tenants": 1,
                "tenant": 0,
                "schema_version": SCHEMA_VERSION,
            }
        )


def _texts(values: tuple[str, ...], at: NDArray[np.intp]) -> pd.api.extensions.ExtensionArray:
    """A text column, ``values[at]``, as pandas makes one from Python strings
    (``pd.Series(list(values)).array.take(at)``); where pandas keeps text in pyarrow (its
    ``str`` since pandas 3), taken or repeated by pyarrow itself (a sixth of the time)."""
    dtype = _arrow_text()
    if dtype is None:
        return pd.Series(list(values)).array.take(at)
    import pyarrow as pa

    arrow = pa.array(values, type=pa.large_string())
    taken = arrow.take(pa.array(at)) if len(values) > 1 else pa.repeat(arrow[0], at.size)
    return pd.arrays.ArrowStringArray(taken, dtype=dtype)


@functools.cache
def _arrow_text() -> pd.api.extensions.ExtensionDtype | None:
    """pandas' dtype for text where it keeps text as pyarrow's large strings, else None."""
    import pyarrow as pa

    base = pd.Series(["text"]).array
    if isinstance(base, pd.arrays.ArrowStringArray) and pa.array(base).type == pa.large_string():
        return base.dtype
    return None


_Flags = tuple[I64, B | None, B | None, B | None, B | None]


class _Calls:
    """Vectorised step calls: duration and success of every call of one step, with the
    client's retries (the loop's budget, or the foreground scene's for outline 0)."""

    def __init__(self, scenario: Scenario, draws: Draws, foreground: bool) -> None:
        self.sc = scenario
        self.d = draws
        self.foreground = foreground
        self.timeout_us = round(scenario.request_timeout_s * 1e6)
        self.direct = scenario.client.provider_errors == ErrorShape.DIRECT

    def _attempt(self, step: int, attempt: int, lat: I64, idx: I64 | None) -> _Flags:
        """Duration and the 429, 5xx, timeout and reset/truncated flags of one attempt
        (``idx``: a subset of the table, flat)."""
        quota = self.sc.quota_tts if step == Step.TTS else self.sc.quota_llm

        def pick(u: F64) -> F64:
            return u if idx is None else u.ravel()[idx]

        is429 = pick(self.d.fault_u(step, attempt, KIND_429)) < quota.p_429 if quota.p_429 else None
        is5xx = pick(self.d.fault_u(step, attempt, KIND_5XX)) < quota.p_5xx if quota.p_5xx else None
        if is429 is not None and is5xx is not None:
            is5xx &= ~is429
        fail = None
        if quota.faulty:  # reset / stall / truncated, for admitted non-5xx attempts
            uf = pick(self.d.fault_u(step, attempt, KIND_FAULT))
            eligible = np.ones(uf.shape, dtype=bool)
            for flag in (is429, is5xx):
                if flag is not None:
                    eligible &= ~flag
            p_r, p_s, p_t = quota.p_reset, quota.p_stall, quota.p_truncate
            stall = eligible & (uf >= p_r) & (uf < p_r + p_s)
            fail = eligible & ((uf < p_r) | ((uf >= p_r + p_s) & (uf < p_r + p_s + p_t)))
            if stall.any():
                lat = np.where(stall, round(quota.stall_s * 1e6), lat)
        tout = lat > self.timeout_us if lat.size and lat.max() > self.timeout_us else None
        if tout is not None:
            if is429 is not None:
                tout &= ~is429
            if is5xx is not None:
                is5xx &= ~tout
            if fail is not None:
                fail &= ~tout
        dur = lat
        if tout is not None:
            dur = np.where(tout, self.timeout_us, dur)
        if is429 is not None:
            dur = np.where(is429, 0, dur)
        return dur, is429, is5xx, tout, fail

    def _delays(self, step: int, k: int, idx: I64, fg: B, was429: B) -> I64:
        """The wait before retry ``k`` of the calls ``idx`` (``fg``: the foreground policy),
        after attempt ``k`` failed (``was429``: with a provider 429)."""
        client = self.sc.client
        quota = self.sc.quota_tts if step == Step.TTS else self.sc.quota_llm
        # the client sees a 429 (and its Retry-After) only in the direct shape
        ra = quota.retry_after_s if self.direct else None
        ra_us = None if ra is None else round(ra * 1000) * 1000
        pols = [(False, client.client_policy(step, False))]
        if self.foreground:
            pols.append((True, client.client_policy(step, True)))
        u: F64 = np.zeros(len(idx))
        if any(p.jitter for _, p in pols):
            if client.jitter_u is not None:
                u = np.full(len(idx), client.jitter_u)
            else:
                u = self.d.jitter_u(step, k).ravel()[idx]
        out = np.zeros(len(idx), dtype=np.int64)
        for is_fg, p in pols:
            sel = fg == is_fg
            if not sel.any():
                continue
            d = delay_us(p, k, None, u[sel])
            if ra_us is not None:
                d = np.where(was429[sel], delay_us(p, k, ra_us, u[sel]), d)
            out[sel] = d
        return out

    def step(self, step: int) -> _StepCalls:
        lat0 = self.d.latency_us(step, 0)
        dur, is429, is5xx, tout, fail = self._attempt(step, 0, lat0, None)
        bad: B | None = None
        for flag in (is429, is5xx, tout, fail):
            if flag is not None:
                bad = flag if bad is None else (bad | flag)
        if bad is None or not bad.any():
            ok0 = np.ones(dur.shape, dtype=bool)
            return _StepCalls(dur, ok0, np.zeros(0, np.int64), np.zeros((0, 5), np.int64))
        idx = np.flatnonzero(bad)
        m = len(idx)

        def sub(flag: B | None, subset: bool) -> B:
            if flag is None:
                return np.zeros(m, dtype=bool)
            return flag if subset else flag.ravel()[idx]

        f429, f5xx, ftout = sub(is429, False), sub(is5xx, False), sub(tout, False)
        extra = np.zeros((m, 5), dtype=np.int64)
        extra[:, 0] = ~ftout
        extra[:, 1] = f429
        extra[:, 2] = f5xx
        extra[:, 4] = ftout
        elapsed = dur.ravel()[idx].astype(np.int64)
        # the foreground scene's calls: outline 0's column(s) when it runs in the foreground
        width = self.d.kmax if step == Step.TTS else 1
        per = dur.shape[1]
        fg = (idx % per < width) if self.foreground else np.zeros(m, dtype=bool)
        client = self.sc.client
        budget = np.where(
            fg,
            client.client_policy(step, True).max_retries,
            client.client_policy(step, False).max_retries,
        )
        ok = np.zeros(m, dtype=bool)
        active = np.ones(m, dtype=bool)
        for k in range(int(budget.max())):
            active &= k < budget  # attempt k failed: retried while the budget lasts
            if not active.any():
                break
            extra[:, 3] += active
            elapsed += np.where(active, self._delays(step, k, idx, fg, f429), 0)
            lat = self.d.latency_us(step, k + 1).ravel()[idx]
            d, a429, a5xx, atout, afail = self._attempt(step, k + 1, lat, idx)
            f429, f5xx = sub(a429, True), sub(a5xx, True)
            ftout, ffail = sub(atout, True), sub(afail, True)
            elapsed += np.where(active, d, 0)
            success = active & ~f429 & ~f5xx & ~ftout & ~ffail
            ok |= success
            extra[:, 0] += active & ~ftout
            extra[:, 1] += active & f429
            extra[:, 2] += active & f5xx
            extra[:, 4] += active & ftout
            active &= ~success
        dur_full = dur.copy() if dur is lat0 else dur
        dur_full.ravel()[idx] = elapsed
        ok_full = np.ones(dur.shape, dtype=bool)
        ok_full.ravel()[idx] = ok
        return _StepCalls(dur_full, ok_full, idx, extra)


def _bounded_map(start: I64, dur: I64, mask: B, workers: int) -> I64:
    """End of a FIFO bounded map: items (columns) in order, ``workers`` at a time.

    ``start`` (reps,), ``dur``/``mask`` (reps, k). Masked-out items take no time.
    """
    reps, k = dur.shape
    w = max(1, min(workers, k))
    free = np.repeat(start[:, None], w, axis=1)
    end = start.copy()
    rows = np.arange(reps)
    for j in range(k):
        slot = free.argmin(axis=1)
        s = free[rows, slot]
        e = s + dur[:, j]
        m = mask[:, j]
        free[rows, slot] = np.where(m, e, s)
        end = np.where(m, np.maximum(end, e), end)
    return end


class _Run:
    """The state of ``reps`` classrooms and the three steps' call tables."""

    def __init__(self, sc: Scenario, d: Draws, mode: str, c: int, tts_c: int) -> None:
        self.sc = sc
        self.mode = mode
        self.c = c
        self.tts_c = tts_c
        self.foreground = sc.client.foreground_first_scene
        calls = _Calls(sc, d, self.foreground)
        self.content, self.actions, self.tts = (
            calls.step(Step.CONTENT),
            calls.step(Step.ACTIONS),
            calls.step(Step.TTS),
        )
        self.kmax = d.kmax
        self.speeches = d.speeches()  # (reps, n)
        reps, n = self.speeches.shape
        self.clip_idx = np.arange(self.kmax)
        self.ready = np.full((reps, n), -1, dtype=np.int64)
        self.failed = np.zeros((reps, n), dtype=bool)
        # which calls were made: for the counters
        self.ran = [np.zeros((reps, n), dtype=bool) for _ in range(3)]
        self.status = np.full(reps, _COMPLETED, dtype=np.int8)
        self.end = np.zeros(reps, dtype=np.int64)

    def tail(self, i: int, go: B, t: I64, tts_c: int) -> tuple[I64, B]:
        """Actions, then every clip of scene ``i`` for the runs ``go`` from ``t``: the end
        and whether the scene was added (a failed one is marked)."""
        self.ran[1][:, i] = go
        t = np.where(go, t + self.actions.dur[:, i], t)
        tts_go = go & self.actions.ok[:, i]
        self.ran[2][:, i] = tts_go
        cols = slice(i * self.kmax, (i + 1) * self.kmax)
        mask = (self.clip_idx[None, :] < self.speeches[:, i, None]) & tts_go[:, None]
        if tts_c <= 1:
            t_end = t + np.where(mask, self.tts.dur[:, cols], 0).sum(axis=1)
        else:
            t_end = _bounded_map(t, self.tts.dur[:, cols], mask, tts_c)
        t = np.where(tts_go, t_end, t)
        clips_ok = np.where(mask, self.tts.ok[:, cols], True).all(axis=1)
        scene_ok = tts_go & clips_ok
        self.ready[:, i] = np.where(scene_ok, t, -1)
        self.failed[:, i] |= go & ~scene_ok
        return t, scene_ok

    def first_scene(self) -> tuple[I64, B]:
        """The foreground first scene (its clips one at a time; at c since #1039): its end
        and success; a failure ends the run (``first_scene_failed``)."""
        self.ran[0][:, 0] = True
        t = self.content.dur[:, 0].copy()
        ok = self.content.ok[:, 0]
        self.failed[:, 0] = ~ok
        fg_c = self.tts_c if self.sc.client.foreground_tts_at_concurrency else 1
        t, ok = self.tail(0, ok, t, fg_c)
        self.status[~ok] = _FIRST_FAILED
        self.end = np.where(ok, self.end, t)
        return t, ok

    def serial_loop(self, pending: list[int], t: I64, alive: B) -> I64:
        """Content then tail, one outline at a time; a failure pauses the run."""
        for i in pending:
            if not alive.any():
                break
            self.ran[0][:, i] = alive
            t = np.where(alive, t + self.content.dur[:, i], t)
            bad = alive & ~self.content.ok[:, i]
            self.failed[:, i] |= bad
            alive = alive & ~bad
            t, ok = self.tail(i, alive, t, self.tts_c)
            bad |= alive & ~ok
            self.status[bad] = _PAUSED
            alive = alive & ok
        return t

    def parallel_loop(self, pending: list[int], t: I64, started: B) -> I64:
        """Content prefetch in ``min(c, pending)`` FIFO slots from the loop's start; scenes
        in order as their content is ready; a failed content is skipped, a failed tail
        pauses; the final status by :func:`sim.rules.final_status`."""
        reps = len(t)
        slots = content_slots(self.c, len(pending))
        free = np.repeat(t[:, None], slots, axis=1)
        rows = np.arange(reps)
        content_end = {}
        for i in pending:
            slot = free.argmin(axis=1)
            e = free[rows, slot] + self.content.dur[:, i]
            free[rows, slot] = e
            content_end[i] = e
            # content tasks run to the end even after a pause (upstream does not abort them)
            self.ran[0][:, i] = started
        if self.mode == "hybrid":
            t = np.where(started, np.max([content_end[i] for i in pending], axis=0), t)
        alive = started.copy()
        content_failed = np.zeros(reps, dtype=bool)
        paused = np.zeros(reps, dtype=bool)
        for i in pending:
            if not alive.any():
                break
            t = np.where(alive, np.maximum(t, content_end[i]), t)
            cf = alive & ~self.content.ok[:, i]
            self.failed[:, i] |= cf
            content_failed |= cf
            go = alive & self.content.ok[:, i]
            t, ok = self.tail(i, go, t, self.tts_c)
            paused |= go & ~ok
            alive &= ~(go & ~ok)
        pauses = self.sc.client.content_failure_pauses
        to_pause = paused | (content_failed & pauses)  # final_status, vectorised
        self.status[started & to_pause] = _PAUSED
        return t

    def run(self) -> None:
        reps, n = self.speeches.shape
        t = np.zeros(reps, dtype=np.int64)
        started = np.ones(reps, dtype=bool)
        first = 0
        if self.foreground:
            t, started = self.first_scene()
            first = 1
        pending = list(range(first, n))
        if is_parallel(self.mode, self.c, len(pending)):
            t = self.parallel_loop(pending, t, started)
        else:
            t = self.serial_loop(pending, t, started.copy())
        self.end = np.where(started, t, self.end)

    def counters(self) -> _Counters:
        """One request per call made, plus what failed first attempts added."""
        reps, n = self.speeches.shape
        kmax = self.kmax
        n_tts = np.where(self.ran[2], self.speeches, 0).sum(axis=1)
        totals = np.zeros((5, reps), dtype=np.int64)
        totals[0] = self.ran[0].sum(axis=1) + self.ran[1].sum(axis=1) + n_tts
        for step, calls in enumerate((self.content, self.actions, self.tts)):
            if not len(calls.idx):
                continue
            per = kmax if step == Step.TTS else 1
            r, col = np.divmod(calls.idx, n * per)
            scene = col // per
            made = self.ran[step][r, scene]
            if step == Step.TTS:
                made &= (col % per) < self.speeches[r, scene]
            extra = calls.extra[made].copy()
            extra[:, 0] -= 1  # the one request already counted
            for j in range(5):
                np.add.at(totals[j], r[made], extra[:, j])
        return _Counters(*totals)


def simulate_fast(
    scenario: Scenario, config: RunConfig, reps: int, *, seed: int = 0, first_run: int = 0
) -> FastRuns:
    """``reps`` runs of ``config`` at once, as columns; equal run for run to SimPy where
    :func:`fast_fits` (else a one-line error). :func:`sim.simulate` picks this engine itself;
    call it for the arrays and :meth:`FastRuns.frame`."""
    if not fast_fits(scenario, config):
        raise UserError(
            f"engine: the vectorised path needs quota-free keys (max_inflight = 0 and rpm = 0 "
            f"on both), no retries inside the route (profile {scenario.upstream!r}), no 4xx "
            "faults (status_5xx < 500), one classroom and adaptive off; use the simpy engine"
        )
    if reps < 1:
        raise UserError(f"reps: must be >= 1, got {reps}")
    mode, c = str(config.mode), config.c
    tts_c = tts_concurrency(mode, c, config.tts_concurrency, scenario.client.tts_at_concurrency)
    draws = Draws(scenario, seed, first_run, first_run + reps)
    run = _Run(scenario, draws, mode, c, tts_c)
    run.run()
    pb = scenario.playback
    qoe = qoe_us(run.ready, draws.playback_table_us(), pb.start, pb.buffer_us, compiled=True)
    return FastRuns(
        scenario=scenario,
        mode=mode,
        concurrency=c,
        tts_concurrency=tts_c,
        seed=seed,
        first_run=first_run,
        end_us=run.end,
        ready_us=run.ready,
        failed=run.failed,
        status=run.status,
        counters=run.counters(),
        qoe=qoe,
    )
