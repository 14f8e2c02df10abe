"""An exact vectorised path for quota-free cells (no in-flight limit, no token bucket).

Without a quota no request affects another, so each call's duration and outcome
is a function of its own keyed draws (attempts, random 429/5xx, timeouts,
backoff), and a classroom is a max-plus recurrence over its scenes. This module
evaluates that recurrence with numpy across many classrooms at once, with the
same draws, rules and failure semantics as :mod:`sim.model`; the tests prove it
equal to the SimPy model run for run. Results are columns (numpy arrays), turned
into the tidy schema by :func:`FastRuns.frame` or :func:`FastRuns.results`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from .draws import KIND_5XX, KIND_429, KIND_FAULT, Draws
from .model import clamp_concurrency, effective_tts_concurrency
from .scenario import MODES, RetryPolicy, Scenario
from .schema import SCHEMA_VERSION, RunResult

__all__ = ["FastRuns", "quota_free", "simulate_fast"]

I64 = NDArray[np.int64]
B = NDArray[np.bool_]


def quota_free(scenario: Scenario) -> bool:
    """Whether the fast path applies: neither key has an in-flight limit nor a bucket."""
    return not (scenario.quota_llm.limited or scenario.quota_tts.limited)


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
    """Outcome of every call of one step: dense durations, sparse failures.

    Calls that succeed at their first attempt count one request and nothing
    else; ``idx`` (flat indices into the table) lists the others, with their
    per-call counters in ``extra`` (columns in ``_COUNTERS`` order).
    """

    dur: I64
    ok: B | None  # None: every call succeeded
    idx: I64
    extra: I64  # (len(idx), 5)


@dataclass
class FastRuns:
    """Column results of :func:`simulate_fast`; times in µs."""

    scenario: Scenario
    mode: str
    concurrency: int
    tts_concurrency: int
    seed: int
    first_run: int
    end_us: I64
    ready_us: I64  # (reps, N), -1 where no scene was added
    failed: B  # (reps, N)
    paused: B
    counters: _Counters

    @property
    def makespan_s(self) -> NDArray[np.float64]:
        return self.end_us / 1e6

    @property
    def ttfs_s(self) -> NDArray[np.float64]:
        r = np.where(self.ready_us >= 0, self.ready_us, np.iinfo(np.int64).max).min(axis=1)
        return np.where(r == np.iinfo(np.int64).max, np.nan, r / 1e6)

    def results(self) -> list[RunResult]:
        """The runs as :class:`RunResult` objects (slower; for comparison and small runs)."""
        out = []
        ttfs = self.ttfs_s
        c = self.counters
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
                    status="paused" if self.paused[r] else "completed",
                    requests=int(c.requests[r]),
                    http_429=int(c.http_429[r]),
                    http_5xx=int(c.http_5xx[r]),
                    retries=int(c.retries[r]),
                    timeouts=int(c.timeouts[r]),
                    scene_order=tuple(int(o) for o in orders[srt]),
                    scene_ready_s=tuple(float(t) / 1e6 for t in ready[srt]),
                    failed_orders=tuple(int(o) for o in np.flatnonzero(self.failed[r])),
                )
            )
        return out

    def frame(self) -> pd.DataFrame:
        """The per-run columns of :func:`sim.schema.runs_frame`, without per-scene lists."""
        c = self.counters
        n = len(self.end_us)
        return pd.DataFrame(
            {
                "world": "sim",
                "scenario": self.scenario.name,
                "mode": self.mode,
                "concurrency": self.concurrency,
                "tts_concurrency": self.tts_concurrency,
                "seed": self.seed,
                "classroom": np.arange(self.first_run, self.first_run + n),
                "makespan_s": self.makespan_s,
                "ttfs_s": self.ttfs_s,
                "scenes_ok": (self.ready_us >= 0).sum(axis=1),
                "scenes_failed": self.failed.sum(axis=1),
                "status": np.where(self.paused, "paused", "completed"),
                "requests": c.requests,
                "http_429": c.http_429,
                "http_5xx": c.http_5xx,
                "retries": c.retries,
                "timeouts": c.timeouts,
                "tenants": 1,
                "tenant": 0,
                "schema_version": SCHEMA_VERSION,
            }
        )


class _Calls:
    """Vectorised step calls: duration and success of every call of one step."""

    def __init__(self, scenario: Scenario, draws: Draws) -> None:
        self.sc = scenario
        self.d = draws
        self.timeout_us = round(scenario.request_timeout_s * 1e6)

    def _attempt(
        self, step: int, attempt: int, lat: I64, idx: I64 | None
    ) -> tuple[I64, B | None, B | None, B | None, B | None]:
        """Duration and the 429, 5xx, timeout and reset/truncated flags of one attempt
        (``idx``: a subset of the table, flat)."""
        quota = self.sc.quota_tts if step == 2 else self.sc.quota_llm

        def pick(u: NDArray[np.float64]) -> NDArray[np.float64]:
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

    def step(self, step: int, policy: RetryPolicy) -> _StepCalls:
        quota = self.sc.quota_tts if step == 2 else self.sc.quota_llm
        lat0 = self.d.latency_us(step, 0)
        dur, is429, is5xx, tout, fail = self._attempt(step, 0, lat0, None)
        bad: B | None = None
        for flag in (is429, is5xx, tout, fail):
            if flag is not None:
                bad = flag if bad is None else (bad | flag)
        if bad is None or not bad.any():
            return _StepCalls(dur, None, np.zeros(0, np.int64), np.zeros((0, 5), np.int64))
        idx = np.flatnonzero(bad)
        m = len(idx)

        def sub(flag: B | None, where: I64 | None = None) -> B:
            if flag is None:
                return np.zeros(m if where is None else len(where), dtype=bool)
            return flag.ravel()[idx] if where is None else flag

        f429, f5xx, ftout, ffail = sub(is429), sub(is5xx), sub(tout), sub(fail)
        extra = np.zeros((m, 5), dtype=np.int64)
        extra[:, 0] = ~ftout
        extra[:, 1] = f429
        extra[:, 2] = f5xx
        extra[:, 4] = ftout
        elapsed = dur.ravel()[idx].astype(np.int64)
        ok = np.zeros(m, dtype=bool)
        active = np.ones(m, dtype=bool)
        ra_us = None if quota.retry_after_s is None else round(quota.retry_after_s * 1000) * 1000
        for attempt in range(1, policy.max_retries + 1):
            extra[:, 3] += active
            d_exp = policy.delay_us(attempt - 1, None)
            delay = np.full(m, d_exp, dtype=np.int64)
            if ra_us is not None:
                delay = np.where(f429, policy.delay_us(attempt - 1, ra_us), delay)
            elapsed += np.where(active, delay, 0)
            lat = self.d.latency_us(step, attempt).ravel()[idx]
            d, a429, a5xx, atout, afail = self._attempt(step, attempt, lat, idx)
            f429, f5xx = sub(a429, idx), sub(a5xx, idx)
            ftout, ffail = sub(atout, idx), sub(afail, idx)
            elapsed += np.where(active, d, 0)
            success = active & ~f429 & ~f5xx & ~ftout & ~ffail
            ok |= success
            extra[:, 0] += active & ~ftout
            extra[:, 1] += active & f429
            extra[:, 2] += active & f5xx
            extra[:, 4] += active & ftout
            active &= ~success
            if not active.any():
                break
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


def simulate_fast(
    scenario: Scenario,
    mode: str,
    concurrency: int,
    reps: int,
    *,
    seed: int = 0,
    first_run: int = 0,
    tts_concurrency: int | None = None,
) -> FastRuns:
    """``reps`` quota-free classrooms at once; equal run for run to :func:`sim.simulate_many`."""
    if mode not in MODES:
        raise ValueError(f"mode: must be one of {', '.join(MODES)}; got {mode!r}")
    if not quota_free(scenario):
        raise ValueError(
            "scenario: the fast path needs quota-free keys (max_inflight = 0 and "
            "rpm = 0 on both); use sim.simulate_many"
        )
    if reps < 1:
        raise ValueError(f"reps: must be >= 1, got {reps}")
    c = clamp_concurrency(concurrency)
    tts_c = effective_tts_concurrency(mode, c, tts_concurrency)
    sc = scenario
    n = sc.outlines
    d = Draws(sc, seed, first_run, first_run + reps)
    calls = _Calls(sc, d)
    kmax = d.kmax
    speeches = d.speeches()  # (reps, n)
    content = calls.step(0, sc.retry_llm)
    actions = calls.step(1, sc.retry_llm)
    tts = calls.step(2, sc.retry_tts)
    ones = np.ones((reps, n), dtype=bool)

    ready = np.full((reps, n), -1, dtype=np.int64)
    failed = np.zeros((reps, n), dtype=bool)
    ran_content = np.zeros((reps, n), dtype=bool)  # which calls were made: for the counters
    ran_actions = np.zeros((reps, n), dtype=bool)
    ran_tts = np.zeros((reps, n), dtype=bool)
    alive = np.ones(reps, dtype=bool)
    paused = np.zeros(reps, dtype=bool)
    end = np.zeros(reps, dtype=np.int64)
    clip_idx = np.arange(kmax)
    parallel = mode != "serial" and c > 1 and n > 1
    content_ok = content.ok if content.ok is not None else ones
    actions_ok = actions.ok if actions.ok is not None else ones

    content_end: I64 | None = None
    t = np.zeros(reps, dtype=np.int64)
    if parallel:
        slots = min(c, n)
        free = np.zeros((reps, slots), dtype=np.int64)
        rows = np.arange(reps)
        content_end = np.empty((reps, n), dtype=np.int64)
        for i in range(n):
            slot = free.argmin(axis=1) if slots > 1 else np.zeros(reps, dtype=np.int64)
            e = free[rows, slot] + content.dur[:, i]
            free[rows, slot] = e
            content_end[:, i] = e
        # Content tasks run to the end even after a pause (upstream does not abort them).
        ran_content[:] = True
        if mode == "hybrid":
            t = content_end.max(axis=1)

    for i in range(n):
        if not alive.any():
            break
        if parallel:
            assert content_end is not None
            t = np.where(alive, np.maximum(t, content_end[:, i]), t)
            skip = alive & ~content_ok[:, i]
            failed[:, i] |= skip
            go = alive & content_ok[:, i]
        else:
            ran_content[:, i] = alive
            t = np.where(alive, t + content.dur[:, i], t)
            bad = alive & ~content_ok[:, i]
            failed[:, i] |= bad
            paused |= bad
            end = np.where(bad, t, end)
            alive = alive & ~bad
            go = alive
        ran_actions[:, i] = go
        t = np.where(go, t + actions.dur[:, i], t)
        tts_go = go & actions_ok[:, i]
        ran_tts[:, i] = tts_go
        cols = slice(i * kmax, (i + 1) * kmax)
        mask = (clip_idx[None, :] < speeches[:, i, None]) & tts_go[:, None]
        if tts_c <= 1:
            t_end = t + np.where(mask, tts.dur[:, cols], 0).sum(axis=1)
        else:
            t_end = _bounded_map(t, tts.dur[:, cols], mask, tts_c)
        t = np.where(tts_go, t_end, t)
        clips_ok = (
            np.where(mask, tts.ok[:, cols], True).all(axis=1)
            if tts.ok is not None
            else np.ones(reps, dtype=bool)
        )
        scene_ok = tts_go & clips_ok
        ready[:, i] = np.where(scene_ok, t, -1)
        bad = go & ~scene_ok
        failed[:, i] |= bad
        paused |= bad
        end = np.where(bad, t, end)
        alive = alive & ~bad
    end = np.where(alive, t, end)

    # Counters: one request per call made, plus what failed first attempts added.
    n_tts = np.where(ran_tts, speeches, 0).sum(axis=1)
    totals = np.zeros((5, reps), dtype=np.int64)
    totals[0] = ran_content.sum(axis=1) + ran_actions.sum(axis=1) + n_tts
    for calls_, ran, is_tts in (
        (content, ran_content, False),
        (actions, ran_actions, False),
        (tts, ran_tts, True),
    ):
        if not len(calls_.idx):
            continue
        per = kmax if is_tts else 1
        r, col = np.divmod(calls_.idx, n * per)
        scene = col // per
        made = ran[r, scene]
        if is_tts:
            made &= (col % per) < speeches[r, scene]
        extra = calls_.extra[made].copy()
        extra[:, 0] -= 1  # the one request already counted
        for j in range(5):
            np.add.at(totals[j], r[made], extra[:, j])
    cnt = _Counters(*totals)
    return FastRuns(
        scenario=sc,
        mode=mode,
        concurrency=c,
        tts_concurrency=tts_c,
        seed=seed,
        first_run=first_run,
        end_us=end,
        ready_us=ready,
        failed=failed,
        paused=paused,
        counters=cnt,
    )
