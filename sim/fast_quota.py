"""An exact vectorised engine for the browser loop's limited-key cells (issue 24).

With ``tenants == 1`` every run is one classroom on its own provider, so runs never meet:
this engine steps all runs of a cell together, in lock step, each run at its own next
instant, with numpy over the runs. Per run it keeps what SimPy's processes keep — the loop
(foreground first scene, then serial, hybrid or pipelined), the content workers (a FIFO
semaphore of ``min(c, pending)`` slots), the within-scene TTS workers — as *callers*: slots
that each run one step call — :class:`sim.rules.CallMachine`'s rules (ungated) vectorised:
the same budgets and delays (each :class:`~sim.rules.RetryPolicy`'s own parameters and its
jitter draws), the outcome of each status from :func:`sim.rules.outcome_of`; the route's
retries inside a client request before #788; the keyed draws of :mod:`sim.draws` — and each
key's in-flight slots (:class:`sim.provider.KeyState`'s rules: a request holds its slot to
its scheduled end; ends at ``t`` are free for arrivals at ``t``).

One *round* of an instant is SimPy's: every zero-time consequence of the instant's events
(answers, wake-ups, the loop's hand-offs, decisions on keys without a limit) runs first, then
the arrivals on a limited key are decided together in :func:`sim.provider.arrival_order`
(the low-priority batch event of :mod:`sim.model`); answers given at once (429) start the
next round at the same instant. Inside a round nothing depends on the order of events (the
workers are interchangeable, the counters add up), so the order SimPy's processes happen to
resume in is not needed.

Where a run meets something this engine does not model (a request the client gives up on:
a timeout), that run is left and computed by the SimPy model instead (runs are independent:
the same result). :func:`quota_fits` is the part of the engine rule
(:func:`sim.engines.pick_engine`) that says which cells it covers; the tests and
``validate --exact`` prove it equal to SimPy run for run and request for request
(:func:`check_quota_engine`).

Not covered (SimPy runs them): RPM buckets, token buckets, per-second windows, shared
capacity, issue-21 limits and slots freed on disconnect; tenants sharing keys; the adaptive
limiters. One field of a request record differs by design: on a key *without* a limit the
in-flight count at arrival is -1 here (SimPy's then depends on the order its processes resume
in at one instant; nothing reads it).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from .config import RunConfig
from .draws import KIND_5XX, KIND_429, KIND_FAULT, KIND_LATENCY, Draws, seconds_to_us
from .errors import UserError
from .fast import STATUSES, FastRuns, _Counters
from .faults import has_limits
from .provider import RESET, TRUNCATED
from .qoe import qoe_us
from .rules import (
    Mode,
    Outcome,
    Policy,
    RetryPolicy,
    Step,
    content_slots,
    is_parallel,
    outcome_of,
    tts_concurrency,
)
from .scenario import Quota, Scenario
from .schema import RequestRecord, RunResult, records_from_log
from .upstream import ErrorShape, Handoff

__all__ = ["QuotaRuns", "check_quota_engine", "divergence", "quota_fits", "simulate_quota"]

I64 = NDArray[np.int64]
B = NDArray[np.bool_]
F64 = NDArray[np.float64]
INF = np.int64(2**62)
# caller phases
IDLE, ARRIVE, FLIGHT, SLEEP, RSLEEP = 0, 1, 2, 3, 4
# the loop's states and the kind of call its own caller runs
L_CALL, L_TTS, L_AWAIT, L_HYB, L_DONE = 0, 1, 2, 3, 4
K_FGC, K_SERC, K_ACT = 0, 1, 2
_COMPLETED, _PAUSED, _FIRST_FAILED = 0, 1, 2  # codes into sim.fast.STATUSES
REASONS = ("ok", "5xx", "inflight", "random", "reset", "stall", "truncated")
_OK, _R5XX, _INFL, _RAND, _RESET, _STALL, _TRUNC = range(7)
_KEYS = ("llm-key", "tts-key")
_CONTENT, _ACTIONS, _TTS = int(Step.CONTENT), int(Step.ACTIONS), int(Step.TTS)


def _any(mask: B) -> bool:
    """``mask.any()`` by a count (the method's Python wrapper costs twice as much)."""
    return bool(np.count_nonzero(mask))


def _all(mask: B) -> bool:
    """``mask.all()`` by a count."""
    return int(np.count_nonzero(mask)) == len(mask)


def _nz(mask: B) -> I64:
    """``np.flatnonzero`` of a 1-D mask, without its Python wrappers."""
    out: I64 = mask.nonzero()[0]
    return out


def _uniq(a: I64) -> I64:
    """The distinct values of ``a``, ascending (``np.unique`` of a small int array without
    its hash table, ~20x slower at these sizes)."""
    if len(a) < 2:
        return a
    s = np.sort(a)
    keep = np.empty(len(s), dtype=bool)
    keep[0] = True
    np.not_equal(s[1:], s[:-1], out=keep[1:])
    out: I64 = s[keep]
    return out


def _plain_key(q: Quota) -> bool:
    """A key this engine admits on: at most an in-flight limit (no bucket, token buckets,
    shared capacity, issue-21 limits, slots freed on disconnect)."""
    return not (q.rpm > 0 or q.tokens_limited or q.shared or has_limits(q) or q.disconnect_frees)


def quota_fits(scenario: Scenario, config: RunConfig) -> bool:
    """Whether this engine computes ``config`` on ``scenario``: one classroom per run
    (``tenants == 1``), no limiter (``adaptive == "off"``) and keys limited by in-flight
    caps only (random 429/5xx and injected faults included)."""
    keys_ok = _plain_key(scenario.quota_llm) and _plain_key(scenario.quota_tts)
    return keys_ok and config.tenants == 1 and config.adaptive == Policy.OFF


@dataclass
class QuotaRuns:
    """The runs as columns (:class:`sim.fast.FastRuns`) plus, with ``records``, each run's
    requests as the provider logged them (:class:`sim.schema.RequestRecord`)."""

    runs: FastRuns
    logs: list[list[RequestRecord]] | None = None
    simpy_runs: list[int] = field(default_factory=list)  # runs handed to SimPy (timeouts)

    def results(self) -> list[RunResult]:
        out = self.runs.results()
        if self.logs is not None:
            logs = zip(out, self.logs, strict=True)
            out = [dataclasses.replace(r, requests_log=tuple(log)) for r, log in logs]
        return out


# sim.rules.outcome_of for every status a request can end with (-2 bad body .. 599), and
# what the retry rules read of it: retried at all (RetryPolicy.retries), a rate limit
_OUTCOMES = [outcome_of(st) for st in range(-2, 600)]
_RETRIED = np.array([o not in (Outcome.OK, Outcome.CLIENT_ERROR) for o in _OUTCOMES])
_RATE = np.array([o is Outcome.RATE_LIMITED for o in _OUTCOMES])


def _outcome_retry(status: I64) -> B:
    """:meth:`RetryPolicy.retries` of :func:`sim.rules.outcome_of`, elementwise."""
    out: B = _RETRIED.take(status + 2)
    return out


def _rate_limited(status: I64) -> B:
    """Whether :func:`sim.rules.outcome_of` is ``RATE_LIMITED``, elementwise."""
    out: B = _RATE.take(status + 2)
    return out


class _Tables:
    """The keyed draws of every attempt, stacked for one gather per decision: per key
    (0 LLM, 1 TTS) a flat array over ``(steps, attempts, runs, columns)`` of the latencies,
    of each attempt's drawn outcome (:func:`_codes`) and of the client's jitter, filled
    attempt by attempt as runs reach them. A call's cell of attempt 0 (:meth:`base`) plus
    ``attempt * stride[key]`` is its index."""

    def __init__(self, sc: Scenario, d: Draws, attempts: int, jitter_attempts: int) -> None:
        self.d = d
        self.steps = ((Step.CONTENT, Step.ACTIONS), (Step.TTS,))
        self.quota = (sc.quota_llm, sc.quota_tts)
        self.reps = d.hi - d.lo
        self.per = (d.n, d.n * d.kmax)
        self.stride = tuple(self.reps * p for p in self.per)  # one attempt's cells
        self.cap = (attempts, jitter_attempts)
        self.filled = [0, 0, 0, 0]  # attempts drawn per key, then jitter draws per key
        self.lat: list[I64] = []
        self.codes: list[NDArray[np.int8] | None] = []
        self.jit: list[F64] = []
        for key in (0, 1):
            shape = (len(self.steps[key]), attempts, self.reps, self.per[key])
            self.lat.append(np.empty(shape, dtype=np.int64))
            drawn = _drawn(self.quota[key])
            self.codes.append(np.empty(shape, dtype=np.int8) if drawn else None)
            shape = (len(self.steps[key]), jitter_attempts, self.reps, self.per[key])
            self.jit.append(np.empty(shape))
        # the jitter's index from a call's cell (:meth:`base`): its step's offset removed
        self.jit_off = np.array([0, (attempts - jitter_attempts) * self.stride[0], 0])
        # TTS latencies (n * kmax columns: the costly quantiles) are drawn only where read:
        # attempt 0 at the clips runs have (``clip < speeches``), retries cell by cell as
        # calls reach them (:meth:`latencies`). Derived latencies (tokens) are drawn whole.
        spec = sc.step_tokens(int(Step.TTS))
        self.tts_cells: I64 | None = None  # flat indices into one attempt's (runs, columns)
        if spec is None or not spec.derived:
            clips = np.arange(d.kmax)[None, None, :] < d.speeches()[:, :, None]
            self.tts_cells = _nz(clips.reshape(-1))
            self.tts_have = np.zeros(attempts * self.reps * self.per[1], dtype=bool)

    def base(self, key: int, step: int, r: I64, order: I64 | int, clip: I64 | int) -> I64:
        """Flat indices of attempt 0 of the calls (``step``, ``order``, ``clip``) of runs
        ``r`` into ``key``'s arrays (LLM: per step, then attempt, run, column)."""
        if key == 0:
            out: I64 = (step * self.cap[0] * self.reps + r) * self.per[0] + order
            return out
        out = r * self.per[1] + np.asarray(order) * self.d.kmax + clip
        return out

    def grow(self, key: int, n: int, jitter: bool = False) -> None:
        """Have ``key``'s draws of attempts ``0 .. n-1`` (``jitter``: the client's jitter)."""
        which = 2 + key if jitter else key
        if n <= self.filled[which]:
            return
        if n > self.cap[1 if jitter else 0]:
            raise AssertionError(f"attempt {n - 1} beyond the retry budgets' bound")
        d = self.d
        codes = self.codes[key]
        for a in range(self.filled[which], n):
            for si, step in enumerate(self.steps[key]):
                if jitter:
                    self.jit[key][si, a] = d.jitter_u(step, a)
                    continue
                if key == 1 and self.tts_cells is not None:
                    if a == 0:
                        self._tts_latencies(0, self.tts_cells, self.tts_cells)
                else:
                    self.lat[key][si, a] = d.latency_us(step, a)
                if codes is not None:
                    codes[si, a] = _codes(self.quota[key], d, step, a)
        self.filled[which] = n

    def latencies(self, key: int, at: I64, retries: bool) -> I64:
        """``key``'s latencies at flat indices ``at`` (:meth:`flat`; ``retries``: some at an
        attempt > 0), the TTS retries' drawn now where not drawn yet."""
        if key == 1 and retries and self.tts_cells is not None:
            slab = self.reps * self.per[1]  # one attempt's cells
            miss = at[(at >= slab) & ~self.tts_have.take(at)]
            if len(miss):
                a = miss // slab
                for aa in _uniq(a).tolist():
                    got = miss[a == aa]
                    self._tts_latencies(aa, got - aa * slab, got)
        out: I64 = self.lat[key].reshape(-1).take(at)
        return out

    def _tts_latencies(self, a: int, cells: I64, at: I64) -> None:
        """:meth:`Draws.latency_us` of TTS attempt ``a`` at ``cells`` (flat indices into its
        (runs, columns)), put at ``at``: the same elementwise quantiles, on those cells."""
        d = self.d
        u = d.uniforms((int(Step.TTS), a, KIND_LATENCY), self.per[1]).reshape(-1)
        self.lat[1].reshape(-1)[at] = seconds_to_us(d.scenario.tts.quantile(u.take(cells)))
        self.tts_have[at] = True


def _rank(r: I64) -> tuple[I64, I64]:
    """Each element's rank among the equal values of ``r`` (in order), and per element
    the count of its value."""
    m = len(r)
    if m < 2 or _all(r[1:] > r[:-1]):  # ascending, no two equal: the usual case
        return np.zeros(m, dtype=np.int64), np.ones(m, dtype=np.int64)
    order = np.argsort(r, kind="stable")
    rs = r[order]
    starts = np.flatnonzero(np.concatenate(([True], rs[1:] != rs[:-1])))
    sizes = np.diff(np.concatenate((starts, [m])))
    rank_sorted = np.arange(m) - np.repeat(starts, sizes)
    rank = np.empty(m, dtype=np.int64)
    rank[order] = rank_sorted
    count = np.empty(m, dtype=np.int64)
    count[order] = np.repeat(sizes, sizes)
    return rank, count


def _drawn(q: Quota) -> bool:
    """Whether a key's attempts draw an outcome (a random 429 or 5xx, a fault)."""
    return bool(q.p_429 or q.p_5xx or q.faulty)


# what an attempt's draws decide (:meth:`KeyState.decide`'s order): a random 429, else a 5xx,
# else a reset, a stall or a truncated answer; per code its status and its logged reason
C_OK, C_RAND, C_5XX, C_RESET, C_STALL, C_TRUNC = range(6)
_REASON_OF = np.array([_OK, _RAND, _R5XX, _RESET, _STALL, _TRUNC], dtype=np.int64)


def _status_of(q: Quota) -> I64:
    """Per code, the status the provider answers (a stall answers 200, late)."""
    return np.array([200, 429, q.status_5xx, RESET, 200, TRUNCATED], dtype=np.int64)


def _codes(q: Quota, d: Draws, step: int, a: int) -> NDArray[np.int8]:
    """Attempt ``a`` of ``step``: each cell's code, from its 429, 5xx and fault uniforms
    (the comparisons of :meth:`KeyState.decide`, in its order)."""
    rand = d.fault_u(step, a, KIND_429) < q.p_429 if q.p_429 else None
    shape = (d.hi - d.lo, d.n * d.kmax if step == Step.TTS else d.n)
    code = np.zeros(shape, dtype=np.int8)
    ok = np.ones(shape, dtype=bool) if rand is None else ~rand
    if q.p_5xx:
        five = ok & (d.fault_u(step, a, KIND_5XX) < q.p_5xx)
        code[five] = C_5XX
        ok &= ~five
    if q.faulty:
        uf = d.fault_u(step, a, KIND_FAULT)
        hit = ok & (uf < q.p_reset + q.p_stall + q.p_truncate)
        reset = hit & (uf < q.p_reset)
        stall = hit & ~reset & (uf < q.p_reset + q.p_stall)
        code[reset] = C_RESET
        code[stall] = C_STALL
        code[hit & ~reset & ~stall] = C_TRUNC
    if rand is not None:
        code[rand] = C_RAND
    return code


def _earlier(r: I64, x: B) -> I64:
    """Per element, how many earlier elements of its run (``r``: a run's elements
    consecutive) have ``x``: shifted comparisons, one per distance up to the largest run."""
    out = np.zeros(len(r), dtype=np.int64)
    for d in range(1, len(r)):
        same = r[d:] == r[:-d]
        if not _any(same):
            break
        out[d:] += same & x[:-d]
    return out


def _bump(arr: I64, r: I64, v: int) -> None:
    """``arr[r] += v`` once per element of ``r`` (``r`` ascending; repeats add up)."""
    if len(r) < 2 or _all(r[1:] > r[:-1]):
        arr[r] += v
    else:
        np.add.at(arr, r, v)


@dataclass(frozen=True)
class _Delays:
    """The retry policies of one cell: per (step, foreground) its index ``step * 2 + fg``."""

    client: tuple[RetryPolicy, ...]
    route: tuple[RetryPolicy, ...]

    @classmethod
    def of(cls, sc: Scenario) -> _Delays:
        cl = sc.client
        pairs = [(st, fg) for st in range(3) for fg in (False, True)]
        return cls(
            tuple(cl.client_policy(st, fg) for st, fg in pairs),
            tuple(cl.route_policy(st, fg) for st, fg in pairs),
        )


class _Waits:
    """:meth:`RetryPolicy.delay_us` elementwise for the policies ``policies`` (by index):
    the exponential part per (policy, retry) computed once, as the scalar method does, then
    the same float operations on arrays (as :func:`sim.fast.delay_us`)."""

    def __init__(self, policies: Sequence[RetryPolicy]) -> None:
        top = max(p.max_retries for p in policies) + 1
        exp_ms = np.zeros((len(policies), top))
        for i, p in enumerate(policies):
            cap_ms = p.max_delay_s * 1000.0 if p.max_delay_s > 0 else math.inf
            for k in range(top):
                exp_ms[i, k] = min(cap_ms, p.initial_delay_s * p.backoff_factor**k * 1000.0)
        self.top = top
        self.exp_ms = exp_ms.reshape(-1)  # flat: policy * top + retry
        rows = exp_ms.tolist()
        self.exp_us = np.array([round(x * 1000) for row in rows for x in row], dtype=np.int64)
        caps = [p.max_delay_s * 1000.0 if p.max_delay_s > 0 else math.inf for p in policies]
        self.cap_ms = np.array(caps)
        self.honour = np.array([p.honour_retry_after for p in policies])
        self.ra_cap_us = np.array([p.retry_after_cap_s * 1e6 for p in policies])
        self.jitter = np.array([p.jitter for p in policies])
        self.any_jitter = bool(self.jitter.any())
        self.any_honour = bool(self.honour.any())

    def __call__(self, pid: I64, index: I64, ra: I64, rate: B, u: F64) -> I64:
        """Waits before retry ``index`` of policy ``pid``, after a Retry-After ``ra`` µs (-1:
        none; used only where ``rate``), jitter draw ``u``."""
        cell = pid * self.top + index
        exp_us = self.exp_us.take(cell)
        out: I64 = exp_us
        if self.any_jitter:
            exp_ms = self.exp_ms.take(cell)
            jit = self.jitter.take(pid)
            uc = np.minimum(np.maximum(u, 0.0), 1.0)
            j = np.minimum(self.cap_ms.take(pid), exp_ms + np.floor(exp_ms * uc * jit))
            out = np.where(jit != 0, np.rint(j * 1000).astype(np.int64), exp_us)
        if self.any_honour:
            use = self.honour.take(pid) & rate & (ra >= 0)
            use &= (ra < self.ra_cap_us.take(pid)) | (ra < exp_us)
            out = np.where(use, ra, out)
        return out


class _Cell:
    """The cell's fixed shape: the loop's settings, the caller slots, the keys."""

    def __init__(self, sc: Scenario, cfg: RunConfig, d: Draws) -> None:
        client = sc.client
        self.sc = sc
        self.n = sc.outlines
        self.kmax = d.kmax
        self.mode = Mode(cfg.mode)
        self.c = cfg.c
        self.tts_c = tts_concurrency(
            cfg.mode, cfg.c, cfg.tts_concurrency, client.tts_at_concurrency
        )
        self.fg = client.foreground_first_scene
        self.fg_c = self.tts_c if client.foreground_tts_at_concurrency else 1
        self.first = 1 if self.fg else 0
        pending = self.n - self.first
        self.par = is_parallel(self.mode, self.c, pending)
        self.w = content_slots(self.c, pending) if self.par else 0
        self.t = max(1, min(max(self.fg_c, self.tts_c), self.kmax))
        self.s = 1 + self.w + self.t
        self.pauses = client.content_failure_pauses
        self.faulty = sc.quota_llm.faulty or sc.quota_tts.faulty
        self.timeout_us = round(sc.request_timeout_s * 1e6)
        self.quota = (sc.quota_llm, sc.quota_tts)
        self.limited = tuple(q.max_inflight > 0 for q in self.quota)
        self.status_of = tuple(_status_of(q) for q in self.quota)
        self.lim_of_step = np.array([self.limited[0], self.limited[0], self.limited[1]])
        self.stall_us = tuple(round(q.stall_s * 1e6) for q in self.quota)
        self.ra_us = tuple(
            -1 if q.retry_after_s is None else round(q.retry_after_s * 1000) * 1000
            for q in self.quota
        )
        self.shape = client.provider_errors
        self.direct = self.shape == ErrorShape.DIRECT
        self.rank = (1, 0, 2) if client.handoff == Handoff.ACTIONS_FIRST else (0, 1, 2)
        self.pol = _Delays.of(sc)
        self.client_waits = _Waits(self.pol.client)
        self.route_waits = _Waits(self.pol.route)
        self.route_retries = any(p.max_retries > 0 for p in self.pol.route)
        self.needs_ra = self.direct or self.route_retries  # who reads a 429's Retry-After
        self.client_max = np.array([p.max_retries for p in self.pol.client], dtype=np.int64)
        self.route_max = np.array([p.max_retries for p in self.pol.route], dtype=np.int64)
        self.jitter_fixed = client.jitter_u
        self.any_jitter = any(p.jitter for p in self.pol.client)
        # at most so many provider attempts in one call, client requests in one call
        pairs = zip(self.client_max.tolist(), self.route_max.tolist(), strict=True)
        self.attempts = max((cm + 1) * (rm + 1) for cm, rm in pairs)
        self.jitter_attempts = int(self.client_max.max()) + 1


class _Q:
    """The lock-step state of ``reps`` runs of one cell (see the module docstring)."""

    def __init__(self, cell: _Cell, d: Draws, reps: int, records: bool) -> None:
        self.k = cell
        self.tab = _Tables(cell.sc, d, cell.attempts, cell.jitter_attempts)
        self.reps = reps
        self.speeches = d.speeches()
        m = reps * cell.s
        i64 = np.int64

        def z(n: int = m) -> I64:
            return np.zeros(n, dtype=i64)

        # callers (flat: run * slots + slot)
        self.ph, self.wake = z(), np.full(m, INF, dtype=i64)
        self.step, self.order, self.clip, self.pid = z(), z(), z(), z()  # pid: step * 2 + fg
        # attempts made in the call, retries used (= the client requests failed before: a
        # failed request not retried ends the call)
        self.att, self.used = z(), z()
        self.first, self.dl, self.dbase = z(), z(), z()
        self.dst, self.dra = z(), z()
        self.pc = np.zeros((4, m), dtype=i64)  # the client request's counts so far
        self.preq, self.p429, self.p5xx, self.pret = self.pc
        # runs
        self.now = z(reps)
        self.alive = np.ones(reps, dtype=bool)
        self.dropped = False  # some run was handed to SimPy (:meth:`drop`)
        self.lst, self.lkind, self.li = z(reps), z(reps), z(reps)
        self.cdone = np.zeros((reps, cell.n), dtype=np.int8)
        self.cnext = z(reps)
        self.tnext, self.tbusy, self.tok = z(reps), z(reps), np.ones(reps, dtype=bool)
        self.ready = np.full((reps, cell.n), -1, dtype=i64)
        self.failed = np.zeros((reps, cell.n), dtype=bool)
        self.status = np.zeros(reps, dtype=np.int8)
        self.end = z(reps)
        self.cfail, self.paused = np.zeros(reps, dtype=bool), np.zeros(reps, dtype=bool)
        self.cnt = np.zeros((5, m), dtype=i64)  # per caller; summed per run at the end
        self.c_req, self.c_429, self.c_5xx, self.c_ret, _ = self.cnt  # (rows: views)
        self.cdone_f, self.speeches_f = self.cdone.reshape(-1), self.speeches.reshape(-1)
        self.ready_f, self.failed_f = self.ready.reshape(-1), self.failed.reshape(-1)
        # per key, each in-flight slot's scheduled end, flat (slot * reps + run)
        self.ends = [np.zeros(max(1, q.max_inflight) * reps, dtype=i64) for q in cell.quota]
        self.log: list[tuple[I64, ...]] | None = [] if records else None
        self.pend: list[I64] = []  # callers arriving on a limited key this round
        self.woken: list[I64] = []  # runs whose loop may go on (parallel: a content ended)

    # -- callers -------------------------------------------------------------------
    def start(
        self, f: I64, step: int, order: I64 | int, clip: I64 | int, fg: B | I64 | bool
    ) -> None:
        """Callers ``f`` begin a step call (attempt 0, a fresh retry budget; ``fg``: 1 in the
        foreground scene)."""
        if not len(f):
            return
        key = 1 if step == _TTS else 0
        self.step[f] = step
        self.order[f] = order
        self.clip[f] = clip
        self.pid[f] = 2 * step + np.asarray(fg, dtype=np.int64)
        self.att[f] = 0
        self.used[f] = 0
        r = f // self.k.s
        t = self.now.take(r)
        self.dbase[f] = self.tab.base(key, step, r, order, clip)
        self.dl[f] = t + self.k.timeout_us
        if self.k.route_retries:  # else never read
            self.first[f] = 0
            self.pc[:, f] = 0
        self.arrive(f, t, self.k.limited[key])

    def request(self, f: I64, lim: bool | None = None) -> None:
        """Callers ``f`` send a new client request now (its own deadline and counts)."""
        if not len(f):
            return
        t = self.now.take(f // self.k.s)
        self.dl[f] = t + self.k.timeout_us
        if self.k.route_retries:  # else never read
            self.first[f] = self.att.take(f)
            self.pc[:, f] = 0
        self.arrive(f, t, lim)

    def arrive(self, f: I64, t: I64, on_limited: bool | None = None) -> None:
        """Callers ``f`` reach the provider at ``t`` (now): on a key without a limit they are
        due at once; on a limited key they wait for the instant's batch (:attr:`pend`);
        ``on_limited``: all of them on a limited key (True) or none (False)."""
        self.ph[f] = ARRIVE
        if on_limited is not None:
            if on_limited:
                self.wake[f] = INF
                self.pend.append(f)
            else:
                self.wake[f] = t
            return
        lim = self.k.lim_of_step.take(self.step.take(f))
        if _all(lim):
            self.wake[f] = INF
            self.pend.append(f)
        elif _any(lim):
            self.wake[f] = np.where(lim, INF, t)
            self.pend.append(f[lim])
        else:
            self.wake[f] = t

    def idle(self, f: I64) -> None:
        if not len(f):
            return
        self.ph[f] = IDLE
        self.wake[f] = INF

    def drop(self, r: I64) -> None:
        """Runs ``r`` met a timeout: SimPy computes them (:func:`simulate_quota`)."""
        if not len(r):
            return
        self.alive[r] = False
        self.dropped = True
        s = self.k.s
        f = (r[:, None] * s + np.arange(s)[None, :]).ravel()
        self.idle(f)

    # -- the provider --------------------------------------------------------------
    def decide(self, f: I64, key: int, grouped: bool = False) -> None:
        """Admission of the requests of callers ``f`` on ``key`` now: :meth:`KeyState.decide`'s
        rules. On a limited key with ``grouped``, a run's arrivals are consecutive in
        :func:`arrival_order` and each sees the slots the earlier ones took."""
        k = self.k
        q = k.quota[key]
        tb = self.tab
        r = f // k.s
        t = self.now.take(r)
        att = self.att.take(f)
        top = int(att.max())
        tb.grow(key, top + 1)
        at = self.dbase.take(f)
        if top:
            at = at + att * tb.stride[key]
        lat = tb.latencies(key, at, top > 0)
        m = len(f)
        codes = tb.codes[key]
        if codes is None:
            code = None
            status = np.full(m, 200, dtype=np.int64)
            rand = np.zeros(m, dtype=bool)
        else:
            code = codes.reshape(-1).take(at)
            status = k.status_of[key].take(code)
            rand = code == C_RAND
            if q.faulty:
                lat = np.where(code == C_STALL, k.stall_us[key], lat)
        nin: I64 | None = None
        over: B | None = None
        if k.limited[key]:
            nin = self._slots(key, r, t, lat, rand, grouped)
            over = nin >= q.max_inflight
            status[over] = 429
            adm = ~over & ~rand
        else:
            adm = ~rand
        lat = np.where(adm, lat, 0)
        end = t + lat
        late = adm & (end > self.dl.take(f))
        if _any(late):
            self.drop(_uniq(r[late]))
        self.att[f] = att + 1
        self.dst[f] = status
        if k.needs_ra:
            self.dra[f] = np.where(status == 429, k.ra_us[key], -1)
        self.ph[f] = FLIGHT
        self.wake[f] = end
        if self.log is not None:
            reason = np.zeros(m, dtype=np.int64) if code is None else _REASON_OF.take(code)
            if over is not None:
                reason[over] = _INFL
            nin = np.full(m, -1, dtype=np.int64) if nin is None else nin
            self.log.append(
                (r, self.step[f], self.order[f], self.clip[f], att, t, end, status, nin, reason)
            )

    def _slots(self, key: int, r: I64, t: I64, lat: I64, rand: B, grouped: bool) -> I64:
        """The requests in flight each arrival sees (``r``: runs, consecutive when
        ``grouped``), and the admitted ones put in their key's free slots: an arrival is
        admitted below the cap unless a random 429; it holds a slot while it lasts (> 0)."""
        cap = self.k.quota[key].max_inflight
        ends = self.ends[key]
        free = [ends.take(r + j * self.reps) <= t for j in range(cap)]  # per slot (caps are small)
        n0 = np.full(len(r), cap, dtype=np.int64)
        for fr in free:
            n0 -= fr
        inc = ~rand & (lat > 0)
        nin = np.minimum(cap, n0 + _earlier(r, inc)) if grouped else n0
        take = inc & (nin < cap)
        if np.count_nonzero(take):  # a run's k-th taker (k earlier takers) takes its k-th free
            kth = _earlier(r, take) if grouped else np.zeros(len(r), dtype=np.int64)
            slot = np.zeros(len(r), dtype=np.int64)
            seen = np.zeros(len(r), dtype=np.int64)  # free slots before slot j
            for j in range(cap):
                fr = free[j]
                slot[fr & (seen == kth)] = j
                seen += fr
            ends[(r + slot * self.reps)[take]] = (t + lat)[take]
        return nin

    def batch(self, f: I64, key: int) -> None:
        """The arrivals on a limited key at one instant (``f`` ascending: a run's callers
        together), each run's in :func:`arrival_order`."""
        r = f // self.k.s
        same = r[1:] == r[:-1]
        if not _any(same):  # one arrival per run
            self.decide(f, key)
            return
        both = np.concatenate((same, [False])) | np.concatenate(([False], same))
        d = _nz(both)
        fd = f[d]
        rank = np.array(self.k.rank, dtype=np.int64)[self.step[fd]]
        canon = ((rank * 100_000 + self.order[fd]) * 10_000 + self.clip[fd]) * 100_000
        canon += self.att[fd]
        f = f.copy()
        f[d] = fd[np.lexsort((canon, r[d]))]
        self.decide(f, key, grouped=True)

    # -- the client ----------------------------------------------------------------
    def answer(self, f: I64) -> tuple[B, B]:
        """Callers ``f`` (ascending) got their answer now: the route's and the client's retry
        rules. Returns, aligned with ``f``, whose call ended ok and whose failed."""
        k = self.k
        st = self.dst.take(f)
        ok = st == 200
        if k.route_retries:  # a request's counts wait for its end (or its timeout)
            g = f[ok]
            self.c_req[g] += 1
            self.cnt[:4, g] += self.pc[:, g]
        else:  # one attempt per request: each answer ends one
            self.c_req[f] += 1
        failed = np.zeros(len(f), dtype=bool)
        if k.faulty:
            transport = (st == RESET) | (st == TRUNCATED)
            tpos = _nz(transport)
            if len(tpos):
                ft = f[tpos]
                if k.route_retries:
                    self.c_req[ft] += 1  # the client learns of one request
                seen_t = np.where(st[tpos] == RESET, -1, -2)
                none = np.full(len(ft), -1, dtype=np.int64)
                failed[tpos[self.client(ft, seen_t, none)]] = True
            bpos = _nz(~ok & ~transport)
        else:
            bpos = _nz(~ok)
        if len(bpos):
            fb, sb = f[bpos], st[bpos]
            if k.route_retries:  # the request's counts wait for its end (or its timeout)
                self.preq[fb] += 1
                self.p429[fb] += sb == 429
                self.p5xx[fb] += sb >= 500
                keep = self._route(fb, sb)
                bpos, fb, sb = bpos[keep], fb[keep], sb[keep]
            else:  # one attempt per request: its end
                self.c_429[fb] += sb == 429
                self.c_5xx[fb] += sb >= 500
            ra = self.dra[fb] if k.direct else np.full(len(fb), -1, dtype=np.int64)
            failed[bpos[self.client(fb, self._route_status(fb, sb), ra)]] = True
        return ok, failed

    def _route_status(self, f: I64, seen: I64) -> I64:
        """:func:`sim.upstream.route_status` elementwise."""
        shape = self.k.shape
        if shape is ErrorShape.DIRECT:
            return seen
        if shape is ErrorShape.ROUTE:
            return np.full(len(seen), 500, dtype=np.int64)
        tts = self.step[f] == _TTS
        llm = np.where((seen >= 400) & (seen <= 599), seen, 500)
        out: I64 = np.where(tts, np.where(seen == 429, 429, 500), llm)
        return out

    def _route(self, f: I64, seen: I64) -> B:
        """The route's retries (profiles before #788) of the failed attempts ``f``: those it
        retries sleep (or time out: SimPy's); the others' counts are added (the mask of
        those, returned)."""
        k = self.k
        keep = np.ones(len(f), dtype=bool)
        if k.route_retries:
            pid = self.pid.take(f)
            index = self.att[f] - 1 - self.first[f]
            retry = _outcome_retry(seen) & (index < k.route_max[pid])
            if _any(retry):
                fr = f[retry]
                rate = _rate_limited(seen[retry])
                u = np.zeros(len(fr))
                w = k.route_waits(pid[retry], index[retry], self.dra[fr], rate, u)
                t = self.now[fr // k.s]
                late = t + w >= self.dl[fr]
                if _any(late):
                    self.drop(_uniq((fr // k.s)[late]))
                self.pret[fr] += 1
                self.ph[fr] = RSLEEP
                self.wake[fr] = t + w
                keep = ~retry
        fk = f[keep]
        self.cnt[:4, fk] += self.pc[:, fk]
        return keep

    def client(self, f: I64, status: I64, ra: I64) -> B:
        """:meth:`CallMachine.step` (ungated) on failed requests ``f``: those that retry
        sleep; returns the mask of those whose call failed."""
        k = self.k
        pid = self.pid.take(f)
        used = self.used.take(f)
        index = used  # the client requests failed before in this call
        retry = _outcome_retry(status) & (used < k.client_max.take(pid))
        if not _any(retry):
            return ~retry
        if _all(retry):
            fr, index_r, pid_r, used_r, ra_r, st_r = f, index, pid, used, ra, status
        else:
            fr, index_r, pid_r = f[retry], index[retry], pid[retry]
            used_r, ra_r, st_r = used[retry], ra[retry], status[retry]
        u = self._jitter(fr, index_r)
        w = k.client_waits(pid_r, used_r, ra_r, _rate_limited(st_r), u)
        self.used[fr] = used_r + 1
        self.c_ret[fr] += 1
        self.ph[fr] = SLEEP
        self.wake[fr] = self.now.take(fr // k.s) + w
        out: B = ~retry
        return out

    def _jitter(self, f: I64, index: I64) -> F64:
        k = self.k
        if k.jitter_fixed is not None:
            return np.full(len(f), k.jitter_fixed)
        if not k.any_jitter:
            return np.zeros(len(f))
        tb = self.tab
        step = self.step.take(f)
        at = self.dbase.take(f) - tb.jit_off.take(step)
        tts = step == _TTS
        if not _any(tts) or _all(tts):  # one key
            kk = int(tts[0])
            tb.grow(kk, int(index.max()) + 1, jitter=True)
            out: F64 = tb.jit[kk].reshape(-1).take(at + index * tb.stride[kk])
            return out
        out = np.empty(len(f))
        for kk, sel in ((0, ~tts), (1, tts)):
            tb.grow(kk, int(index[sel].max()) + 1, jitter=True)
            out[sel] = tb.jit[kk].reshape(-1).take(at[sel] + index[sel] * tb.stride[kk])
        return out

    # -- the loop ------------------------------------------------------------------
    def ended(self, f: I64, ok: B) -> None:
        """Calls of callers ``f`` ended (``ok``): the workers and the loop go on."""
        k = self.k
        slot = f % k.s
        loop = slot == 0
        content = (slot >= 1) & (slot <= k.w)
        tts = slot > k.w
        if _any(content):
            self._content_ended(f[content], ok[content])
        if _any(tts):
            self._tts_ended(f[tts], ok[tts])
        if _any(loop):
            self._loop_ended(f[loop], ok[loop])
        self.advance()

    def _content_ended(self, f: I64, ok: B) -> None:
        k = self.k
        r = f // k.s
        self.cdone_f[r * k.n + self.order[f]] = np.where(ok, 1, 2)
        self.woken.append(r)
        rank, _ = _rank(r)
        nxt = self.cnext[r] + rank
        go = nxt < k.n
        if _all(go):
            self.start(f, _CONTENT, nxt, 0, False)
        else:
            self.idle(f[~go])
            self.start(f[go], _CONTENT, nxt[go], 0, False)
        _bump(self.cnext, r, 1)

    def _tts_ended(self, f: I64, ok: B) -> None:
        k = self.k
        r = f // k.s
        if not _all(ok):
            self.tok[r[~ok]] = False
        rank, _ = _rank(r)
        li = self.li[r]
        nxt = self.tnext[r] + rank
        go = nxt < self.speeches_f.take(r * k.n + li)
        _bump(self.tnext, r, 1)
        if _all(go):
            self.start(f, _TTS, li, nxt, self.pid.take(f) & 1)
            return
        if _any(go):
            g = f[go]
            self.start(g, _TTS, li[go], nxt[go], self.pid.take(g) & 1)
        stop = ~go
        self.idle(f[stop])
        rs = r[stop]
        _bump(self.tbusy, rs, -1)
        if len(rs) > 1 and not _all(rs[1:] > rs[:-1]):
            rs = _uniq(rs)
        done = rs[self.tbusy[rs] == 0]
        if len(done):
            self.scene_end(done, self.tok[done].copy())

    def _loop_ended(self, f: I64, ok: B) -> None:
        k = self.k
        r = f // k.s
        kind = self.lkind[r]
        self.idle(f)
        fgc = (kind == K_FGC) & ~ok
        if _any(fgc):  # the foreground content failed: the run ends
            rf = r[fgc]
            self.failed[rf, 0] = True
            self._finish(rf, _FIRST_FAILED)
        serc = (kind == K_SERC) & ~ok
        if _any(serc):
            rs = r[serc]
            self.failed[rs, self.li[rs]] = True
            self._finish(rs, _PAUSED)
        content_ok = (kind != K_ACT) & ok
        if _any(content_ok):
            rc = r[content_ok]
            fg = self.k.fg & (self.li[rc] == 0) & (kind[content_ok] == K_FGC)
            self.lkind[rc] = K_ACT
            self.start(rc * k.s, _ACTIONS, self.li[rc], 0, fg)
        act = kind == K_ACT
        if _any(act & ~ok):
            self.scene_end(r[act & ~ok], np.zeros(int((act & ~ok).sum()), dtype=bool))
        if _any(act & ok):
            self.start_tts(r[act & ok])

    def start_tts(self, r: I64) -> None:
        """Scene ``li`` of runs ``r``: its clips on ``min(c, clips)`` workers (one when a
        scene has one clip or the within-scene concurrency is 1)."""
        k = self.k
        li = self.li[r]
        fg = k.fg & (li == 0)
        clips = self.speeches_f.take(r * k.n + li)
        none = clips == 0
        if _any(none):
            self.scene_end(r[none], np.ones(int(none.sum()), dtype=bool))
        r, li, fg, clips = r[~none], li[~none], fg[~none], clips[~none]
        if not len(r):
            return
        tc = np.where(fg, k.fg_c, k.tts_c)
        w = np.where((tc <= 1) | (clips == 1), 1, np.minimum(tc, clips))
        self.lst[r] = L_TTS
        self.tnext[r] = w
        self.tbusy[r] = w
        self.tok[r] = True
        if _all(w == 1):
            self.start(r * k.s + 1 + k.w, _TTS, li, 0, fg)
            return
        rr = np.repeat(r, w)  # worker j of each run takes clip j
        j = np.arange(len(rr)) - np.repeat(np.cumsum(w) - w, w)
        self.start(rr * k.s + 1 + k.w + j, _TTS, np.repeat(li, w), j, np.repeat(fg, w))

    def scene_end(self, r: I64, ok: B) -> None:
        """Scene ``li`` of runs ``r`` is added (``ok``) or failed; the loop goes on."""
        if not len(r):
            return
        k = self.k
        li = self.li[r]
        t = self.now[r]
        at = r * k.n + li
        self.ready_f[at[ok]] = t[ok]
        self.failed_f[at[~ok]] = True
        fg = k.fg & (li == 0)
        if _any(fg & ~ok):
            self._finish(r[fg & ~ok], _FIRST_FAILED)
        if _any(fg & ok):
            self.loop_start(r[fg & ok])
        r, ok = r[~fg], ok[~fg]
        if not len(r):
            return
        if k.par:
            self.paused[r[~ok]] = True
            self._finish_parallel(r[~ok])
            rn = r[ok]
            self.li[rn] += 1
            self.lst[rn] = L_AWAIT
            self.woken.append(rn)
        else:
            self._finish(r[~ok], _PAUSED)
            self.next_serial(r[ok], self.li[r[ok]] + 1)

    def loop_start(self, r: I64) -> None:
        """The loop over the pending outlines begins (after the foreground scene)."""
        k = self.k
        if not k.par:
            self.next_serial(r, np.full(len(r), k.first, dtype=np.int64))
            return
        for j in range(k.w):
            self.start(r * k.s + 1 + j, _CONTENT, k.first + j, 0, False)
        self.cnext[r] = k.first + k.w
        self.li[r] = k.first
        self.lst[r] = L_HYB if k.mode == Mode.HYBRID else L_AWAIT
        self.woken.append(r)

    def next_serial(self, r: I64, i: I64) -> None:
        if not len(r):
            return
        k = self.k
        end = i >= k.n
        self._finish(r[end], _COMPLETED)
        r, i = r[~end], i[~end]
        if len(r):
            self.li[r] = i
            self.lkind[r] = K_SERC
            self.lst[r] = L_CALL
            self.start(r * k.s, _CONTENT, i, 0, False)

    def _finish(self, r: I64, status: int) -> None:
        if not len(r):
            return
        self.status[r] = status
        self.end[r] = self.now[r]
        self.lst[r] = L_DONE

    def _finish_parallel(self, r: I64) -> None:
        """:func:`sim.rules.final_status`: paused, or a content failed and that pauses."""
        if not len(r):
            return
        paused = self.paused[r] | (self.cfail[r] & self.k.pauses)
        self.status[r] = np.where(paused, _PAUSED, _COMPLETED)
        self.end[r] = self.now[r]
        self.lst[r] = L_DONE

    def advance(self) -> None:
        """The parallel loop's awaits that can go on now (zero time), among the runs woken
        since the last call."""
        k = self.k
        if not k.par or not self.woken:
            return
        cand = self.woken[0] if len(self.woken) == 1 else np.concatenate(self.woken)
        self.woken = []
        if len(cand) > 1 and not _all(cand[1:] > cand[:-1]):
            cand = _uniq(cand)
        first = k.first
        hyb = cand[self.lst[cand] == L_HYB]
        if len(hyb):
            ready = (self.cdone[hyb, first:] != 0).all(axis=1)
            self.lst[hyb[ready]] = L_AWAIT
        aw = cand[self.lst[cand] == L_AWAIT]
        while len(aw):
            li = self.li[aw]
            over = li >= k.n
            self._finish_parallel(aw[over])
            aw, li = aw[~over], li[~over]
            got = self.cdone_f.take(aw * k.n + li)
            bad = aw[got == 2]
            self.failed[bad, self.li[bad]] = True
            self.cfail[bad] = True
            self.li[bad] += 1
            okr = aw[got == 1]
            if len(okr):
                self.lkind[okr] = K_ACT
                self.lst[okr] = L_CALL
                self.start(okr * k.s, _ACTIONS, self.li[okr], 0, False)
            aw = bad

    # -- time ----------------------------------------------------------------------
    def begin(self) -> None:
        """Time 0: the foreground first scene's content, or the loop."""
        k = self.k
        r = np.arange(self.reps, dtype=np.int64)
        if k.fg:
            self.li[r] = 0
            self.lkind[r] = K_FGC
            self.lst[r] = L_CALL
            self.start(r * k.s, _CONTENT, 0, 0, True)
        else:
            self.loop_start(r)
        self.advance()

    def step_pass(self, due: I64) -> None:
        """One pass of an instant's zero-time work on the callers ``due``."""
        ph = self.ph[due]
        flight = ph == FLIGHT
        fl = due
        if not _all(flight):
            fl = due[flight]
            arrive = due[ph == ARRIVE]  # on keys without a limit: decided on arrival
            tts = self.step.take(arrive) == _TTS
            for key, fk in ((0, arrive[~tts]), (1, arrive[tts])):
                if len(fk):
                    self.decide(fk, key)
            self.request(due[ph == SLEEP])
            rs = due[ph == RSLEEP]
            if len(rs):
                self.arrive(rs, self.now[rs // self.k.s])
        if len(fl):
            ok, failed = self.answer(fl)
            done = ok | failed
            if _any(done):
                self.ended(fl[done], ok[done])

    def run(self) -> None:
        """Every run to its end: rounds at each run's next instant, in lock step."""
        s = self.k.s
        self.begin()
        self.round(np.zeros((self.reps, 1), dtype=np.int64))  # the rest of time 0
        wake = self.wake.reshape(self.reps, s)
        now = np.empty(self.reps, dtype=np.int64)
        while True:
            # each run's next instant: its slots' minimum, slot by slot (a reduction along
            # the short axis, ``min(axis=1)``, costs ~10x as much per call)
            now[:] = wake[:, 0]
            for j in range(1, s):
                np.minimum(now, wake[:, j], out=now)
            act = self.alive & (now < INF)
            if not _any(act):
                return
            self.now = np.where(act, now, self.now)
            self.round(np.where(act, now, -1)[:, None])

    def round(self, nowc: I64) -> None:
        """One round at each run's instant (``nowc``: a column, a row per run; -1: none): the
        zero-time work, then the batch of arrivals on limited keys in :func:`arrival_order`
        (answers given at once, 429s, make the next round at the same instant)."""
        k = self.k
        wake = self.wake.reshape(self.reps, k.s)
        while True:
            due = _nz((wake == nowc).reshape(-1))
            if not len(due):
                break
            self.step_pass(due)
        if not self.pend:
            return
        f = np.concatenate(self.pend)
        self.pend = []
        if self.dropped:
            f = f[(self.ph[f] == ARRIVE) & self.alive[f // k.s]]
        f = np.sort(f)
        keys = self.step.take(f) == _TTS
        for key in (0, 1):
            fk = f[keys == key] if k.limited[1 - key] else f
            if k.limited[key] and len(fk):
                self.batch(fk, key)


def _logs(q: _Q, first_run: int) -> list[list[RequestRecord]]:
    """Each run's requests in the provider's log order (by decision time, then the order
    the instant decided them), as :func:`sim.schema.records_from_log` makes them."""
    assert q.log is not None
    parts = list(zip(*q.log, strict=True)) if q.log else [np.zeros(0, np.int64)] * 10
    r, step, order, clip, att, t, end, status, nin, reason = (np.concatenate(p) for p in parts)
    seq = np.arange(len(r))
    srt = np.lexsort((seq, t, r))
    out: list[list[tuple[object, ...]]] = [[] for _ in range(q.reps)]
    for j in srt.tolist():
        key = _KEYS[1] if step[j] == Step.TTS else _KEYS[0]
        out[int(r[j])].append(
            (
                first_run + int(r[j]), int(step[j]), int(order[j]), int(clip[j]), int(att[j]),
                key, int(t[j]), int(t[j]), int(end[j]), int(status[j]), int(nin[j]),
                REASONS[int(reason[j])],
            )
        )  # fmt: skip
    return [records_from_log(rows) for rows in out]


def _from_simpy(
    q: _Q, cnt: I64, runs: list[int], sc: Scenario, cfg: RunConfig, seed: int, lo: int
) -> list[RunResult]:
    """Runs ``runs`` (indices) computed by SimPy, their columns put in place."""
    from .model import simulate_simpy

    names = [str(s) for s in STATUSES]
    out = []
    for j in runs:
        (res,) = simulate_simpy(sc, cfg, 1, seed=seed, first_run=lo + j)
        q.ready[j] = -1
        for o, t_s in zip(res.scene_order, res.scene_ready_s, strict=True):
            q.ready[j, o] = round(t_s * 1e6)
        q.failed[j] = False
        q.failed[j, list(res.failed_orders)] = True
        q.status[j] = names.index(res.status)
        q.end[j] = round(res.makespan_s * 1e6)
        counts = (res.requests, res.http_429, res.http_5xx, res.retries, res.timeouts)
        cnt[:, j] = counts
        out.append(res)
    return out


def simulate_quota(
    scenario: Scenario,
    config: RunConfig,
    reps: int,
    *,
    seed: int = 0,
    first_run: int = 0,
) -> QuotaRuns:
    """``reps`` runs of ``config`` at once; equal run for run (and, with ``config.records``,
    request for request) to SimPy where :func:`quota_fits` (else a one-line error)."""
    if not quota_fits(scenario, config):
        raise UserError(
            "engine: the limited-key engine needs keys limited by in-flight caps only (no rpm, "
            "token buckets, shared capacity, daily limits or windows, slots freed on "
            "disconnect), one classroom (tenants 1) and adaptive off; use the simpy engine"
        )
    if reps < 1:
        raise UserError(f"reps: must be >= 1, got {reps}")
    draws = Draws(scenario, seed, first_run, first_run + reps)
    cell = _Cell(scenario, config, draws)
    q = _Q(cell, draws, reps, config.records)
    q.run()
    dropped = np.flatnonzero(~q.alive).tolist()
    cnt = q.cnt.reshape(5, reps, cell.s).sum(axis=2)
    simpy = _from_simpy(q, cnt, dropped, scenario, config, seed, first_run)
    logs = _logs(q, first_run) if config.records else None
    if logs is not None:
        for j, res in zip(dropped, simpy, strict=True):
            logs[j] = list(res.requests_log)
    pb = scenario.playback
    qoe = qoe_us(q.ready, draws.playback_table_us(), pb.start, pb.buffer_us)
    runs = FastRuns(
        scenario=scenario,
        mode=str(config.mode),
        concurrency=config.c,
        tts_concurrency=cell.tts_c,
        seed=seed,
        first_run=first_run,
        end_us=q.end,
        ready_us=q.ready,
        failed=q.failed,
        status=q.status,
        counters=_Counters(*cnt),
        qoe=qoe,
    )
    return QuotaRuns(runs, logs, dropped)


def _nan_eq(x: object, y: object) -> bool:
    if isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y):
        return True
    return x == y


def _record(r: RequestRecord, limited: bool) -> tuple[object, ...]:
    """What must match of a request: all but the in-flight count on a key without a limit
    (SimPy's then depends on the order its processes resume in at one instant)."""
    n = r.inflight_at_arrival if limited else None
    key = (r.t_start_s, r.step, r.order, r.clip, r.attempt)
    return (*key, r.api_key, r.t_arrival_s, r.t_end_s, r.status, r.reason, n)


def divergence(a: RunResult, b: RunResult, limited: tuple[bool, bool]) -> str | None:
    """None when ``b`` (this engine) equals ``a`` (SimPy): every results field, and every
    request (:func:`_record`); else a line naming the first difference."""
    ra, rb = a.row(), b.row()
    for k in ra:
        if k != "world" and not _nan_eq(ra[k], rb[k]):
            return f"classroom {a.classroom}: {k}: simpy {ra[k]!r} | fast_quota {rb[k]!r}"

    def recs(res: RunResult) -> list[tuple[object, ...]]:
        rows = [_record(q, limited[q.step == "tts"]) for q in res.requests_log]
        return sorted(rows, key=lambda t: t[:5])

    la, lb = recs(a), recs(b)
    for x, y in zip(la, lb, strict=False):
        if x != y:
            return f"classroom {a.classroom}: request simpy {x} | fast_quota {y}"
    if len(la) != len(lb):
        return f"classroom {a.classroom}: {len(la)} requests in simpy, {len(lb)} in fast_quota"
    return None


def check_quota_engine(
    scenario: Scenario, config: RunConfig, reps: int, *, seed: int = 0, first_run: int = 0
) -> tuple[int, str | None]:
    """Run ``reps`` runs on SimPy and on this engine (both with request records): the
    requests compared and the first divergence (None: equal run for run, request for
    request)."""
    from .model import simulate_simpy

    cfg = dataclasses.replace(config, records=True)
    a = simulate_simpy(scenario, cfg, reps, seed=seed, first_run=first_run)
    b = simulate_quota(scenario, cfg, reps, seed=seed, first_run=first_run).results()
    limited = (scenario.quota_llm.limited, scenario.quota_tts.limited)
    n = 0
    for x, y in zip(a, b, strict=True):
        n += len(x.requests_log)
        diff = divergence(x, y, limited)
        if diff is not None:
            return n, diff
    return n, None
