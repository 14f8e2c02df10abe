"""An exact engine for the browser loop's limited-key cells (issue 24).

With ``tenants == 1`` every run is one classroom on its own provider, so runs never meet:
this engine simulates each run on its own, by a scalar loop compiled with numba
(:mod:`sim.fast_quota_loop`; compiled on first use, then loaded from numba's on-disk cache).
Per run it keeps what SimPy's processes keep — the loop (foreground first scene, then
serial, hybrid or pipelined), the content workers (a FIFO semaphore of ``min(c, pending)``
slots), the within-scene TTS workers — as *callers*: slots that each run one step call —
:class:`sim.rules.CallMachine`'s rules (ungated): the same budgets and delays (each
:class:`~sim.rules.RetryPolicy`'s own parameters and its jitter draws), the outcome of each
status from :func:`sim.rules.outcome_of`; the route's retries inside a client request before
#788; the keyed draws of :mod:`sim.draws` — and each key's in-flight slots
(:class:`sim.provider.KeyState`'s rules: a request holds its slot to its scheduled end; ends
at ``t`` are free for arrivals at ``t``).

One *round* of an instant is SimPy's: every zero-time consequence of the instant's events
(answers, wake-ups, the loop's hand-offs, decisions on keys without a limit) runs first, then
the arrivals on a limited key are decided together in :func:`sim.provider.arrival_order`
(the low-priority batch event of :mod:`sim.model`); answers given at once (429) start the
next round at the same instant. Inside a round nothing depends on the order of events (the
workers are interchangeable, the counters add up), so the order SimPy's processes happen to
resume in is not needed.

The draws are SimPy's (:class:`sim.draws.Draws`), put in flat tables (:class:`_Tables`):
attempt 0 at once, later attempts and the client's jitter as runs reach them (a run waits,
suspended, for the draws its next round reads; :mod:`sim.fast_quota_loop`), whole or at the
waiting runs' cells only, by how many runs wait, and up front where a cell alike read them
densely (:meth:`_Tables.fill`, :meth:`_Tables.first`).

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
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
from numpy.typing import NDArray

from .compiled import CompileLock
from .config import RunConfig
from .draws import (
    KIND_5XX,
    KIND_429,
    KIND_FAULT,
    KIND_JITTER,
    KIND_LATENCY,
    Draws,
)
from .errors import UserError
from .fast import STATUSES, FastRuns, _Counters
from .fast_quota_codes import (
    C_5XX,
    C_OK,
    C_RAND,
    C_RESET,
    C_STALL,
    C_TRUNC,
    RANK_ACTIONS_FIRST,
    RANK_IN_ORDER,
    REASONS,
    RESET,
    TRUNCATED,
    TTS,
)
from .faults import has_limits
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
from .runs_nb_tables import uniforms_at
from .scenario import Quota, Scenario
from .schema import RequestRecord, RunResult, records_from_log
from .upstream import ErrorShape, Handoff

if TYPE_CHECKING:
    from .fast_quota_loop import Ctx

__all__ = [
    "QuotaRuns",
    "check_quota_engine",
    "divergence",
    "quota_fits",
    "simulate_quota",
    "warm_up",
]

I64 = NDArray[np.int64]
B = NDArray[np.bool_]
F64 = NDArray[np.float64]
_KEYS = ("llm-key", "tts-key")
_T = TypeVar("_T", bound=np.generic)
_LOG_ROWS_PER_RUN: int | None = None  # the request log's first size per run (None: a guess)


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


def _drawn(q: Quota) -> bool:
    """Whether a key's attempts draw an outcome (a random 429 or 5xx, a fault)."""
    return bool(q.p_429 or q.p_5xx or q.faulty)


def _status_of(q: Quota) -> I64:
    """Per code, the status the provider answers (a stall answers 200, late)."""
    return np.array([200, 429, q.status_5xx, RESET, 200, TRUNCATED], dtype=np.int64)


def _code_kinds(q: Quota) -> list[int]:
    """The uniforms a key's attempt draws its code from (:func:`_codes_of`'s order)."""
    return [KIND_FAULT] * bool(q.faulty) + [KIND_5XX] * bool(q.p_5xx) + [KIND_429] * bool(q.p_429)


def _codes_of(q: Quota, us: Sequence[F64], code: NDArray[np.generic]) -> None:
    """Each cell's code from its uniforms ``us`` (:func:`_code_kinds`: the fault, 5xx and
    429 uniforms the key draws), as :meth:`KeyState.decide` compares them (a random 429, else
    a 5xx, else a reset, a stall or a truncated body, by the fault uniform's band), written
    into ``code`` (the shape of each ``us``): the lower in that order written first, each
    later one over it."""
    bands: list[tuple[F64, float, int]] = []  # (uniforms, below, code)
    it = iter(us)
    if q.faulty:
        uf = next(it)
        bands += [(uf, q.p_reset + q.p_stall + q.p_truncate, C_TRUNC)]
        bands += [(uf, q.p_reset + q.p_stall, C_STALL), (uf, q.p_reset, C_RESET)]
    if q.p_5xx:
        bands.append((next(it), q.p_5xx, C_5XX))
    if q.p_429:
        bands.append((next(it), q.p_429, C_RAND))
    if not bands:
        code[...] = C_OK
    for i, (u, below, c) in enumerate(bands):
        if i == 0:  # C_OK (0) where not below
            np.multiply(u < below, c, out=code)
        else:
            np.copyto(code, c, where=u < below)


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


def _wait_tables(sets: Sequence[Sequence[RetryPolicy]]) -> tuple[F64, I64, F64, I64]:
    """:meth:`RetryPolicy.delay_us`'s parts per wait set (0 the client's, 1 the route's) and
    policy (``step * 2 + fg``): the exponential part per retry in µs (the method's own wait
    without Retry-After or jitter) and in ms (the jitter's base: as the method computes it,
    checked against the µs); per policy its cap (ms), Retry-After cap (µs) and jitter;
    whether it honours Retry-After, its retries."""
    top = max(p.max_retries for ps in sets for p in ps) + 1
    shape = (len(sets), len(sets[0]))
    exp_ms = np.zeros((*shape, top))
    exp_us = np.zeros((*shape, top), dtype=np.int64)
    wf = np.zeros((*shape, 3))
    wi = np.zeros((*shape, 2), dtype=np.int64)
    for i, ps in enumerate(sets):
        for k, p in enumerate(ps):
            cap_ms = p.max_delay_s * 1000.0 if p.max_delay_s > 0 else math.inf
            for x in range(top):
                exp_us[i, k, x] = p.delay_us(x, None)
                exp_ms[i, k, x] = min(cap_ms, p.initial_delay_s * p.backoff_factor**x * 1000.0)
                if round(float(exp_ms[i, k, x]) * 1000) != exp_us[i, k, x]:
                    raise AssertionError(f"fast_quota: {p} retry {x}: not delay_us's wait")
            wf[i, k] = (cap_ms, p.retry_after_cap_s * 1e6, p.jitter)
            wi[i, k] = (p.honour_retry_after, p.max_retries)
    return exp_ms, exp_us, wf, wi


class _Cell:
    """The cell's fixed shape: the loop's settings, the caller slots, the keys."""

    def __init__(self, sc: Scenario, cfg: RunConfig, d: Draws) -> None:
        client = sc.client
        self.sc = sc
        self.cfg = cfg
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
        self.stall_us = tuple(round(q.stall_s * 1e6) for q in self.quota)
        self.ra_us = tuple(
            -1 if q.retry_after_s is None else round(q.retry_after_s * 1000) * 1000
            for q in self.quota
        )
        self.shape = client.provider_errors
        self.direct = self.shape == ErrorShape.DIRECT
        self.rank = RANK_ACTIONS_FIRST if client.handoff == Handoff.ACTIONS_FIRST else RANK_IN_ORDER
        self.pol = _Delays.of(sc)
        self.waits = _wait_tables((self.pol.client, self.pol.route))
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

    def chains(self) -> bool:
        """Whether a caller can retry at the same instant it was answered (a wait of 0: no
        delay, or an honoured Retry-After of 0): then a round may read attempts beyond the
        next one, and every table is drawn before the runs start."""
        _, exp_us, _, wi = self.waits
        for ws in (0, 1):
            for pid in range(wi.shape[1]):
                if (exp_us[ws, pid, : wi[ws, pid, 1]] == 0).any():
                    return True
        honour = bool((wi[:, :, 0] & (wi[:, :, 1] > 0)).any())
        return honour and 0 in self.ra_us

    def params(self, reps: int, records: bool, logcap: int) -> I64:
        """The settings the compiled loop reads (:data:`sim.fast_quota_loop.P_*`)."""
        shape = {ErrorShape.DIRECT: 0, ErrorShape.ROUTE: 1}.get(self.shape, 2)
        jit = 2 if self.any_jitter else 0  # the client's jitter: none, fixed, drawn
        if self.jitter_fixed is not None:
            jit = 1
        q0, q1 = self.quota
        return np.array(
            [
                self.n, self.kmax, self.s, self.w, reps, self.attempts, self.jitter_attempts,
                self.n, self.n * self.kmax, self.timeout_us, self.fg, self.fg_c, self.tts_c,
                self.first, self.par, self.mode == Mode.HYBRID, self.pauses, self.faulty,
                *self.limited, q0.max_inflight, q1.max_inflight, *self.stall_us, *self.ra_us,
                shape, self.route_retries, self.needs_ra, *self.rank, records, jit,
                self.chains(), _drawn(q0), _drawn(q1), logcap,
            ],
            dtype=np.int64,
        )  # fmt: skip


def _concat(parts: Sequence[NDArray[np.generic]], dtype: type[_T]) -> tuple[NDArray[_T], list[int]]:
    """``parts`` end to end in one array, and where each part starts (and the end)."""
    starts = [0]
    for x in parts:
        starts.append(starts[-1] + x.size)
    out: NDArray[_T] = np.empty(starts[-1], dtype=dtype)
    for x, a, b in zip(parts, starts, starts[1:], strict=False):
        out[a:b] = x.reshape(-1)
    return out, starts


_KEEP_MAX = 1 << 22  # items: a bigger array is not kept (32 MB of int64 or float64)
_KEPT = threading.local()  # per thread, the engine's big arrays by name (:func:`_kept`)


def _kept(name: str, size: int, dtype: type[_T], keep: bool) -> NDArray[_T]:
    """A flat array of ``size`` items, uninitialised. With ``keep``: this thread's array
    ``name`` of the engine's last call when it is big enough (a view of its head), else a
    new one kept for the next call. Only :func:`_run` keeps (one call at a time per thread;
    :func:`simulate_quota` copies out what it returns). The tables are megabytes: new ones
    each call cost the kernel's page faults where the allocator gave the last call's memory
    back, and cold caches, more than filling them."""
    if not keep or size > _KEEP_MAX:
        return np.empty(size, dtype=dtype)
    kept: dict[str, NDArray[Any]] = _KEPT.__dict__.setdefault("arrays", {})
    got = kept.get(name)
    if got is None or got.size < size or got.dtype != dtype:
        got = kept[name] = np.empty(size, dtype=dtype)
    out: NDArray[_T] = got[:size]
    return out


_WHOLE_FROM = 0.25  # content, actions: asked for by this share of the runs or more: whole
_DENSE_DRAWS = 4  # cells at a quarter of a table or more: its uniforms drawn whole by numpy
_DENSE_FROM = 0.4  # a table read at this share of its cells or more is drawn whole up front
# per cell of late (its scenario and settings, compared by equality: a scenario holds dicts),
# the attempts its runs read densely (:meth:`_Tables.dense`), the newest last
_LEARNED: list[tuple[tuple[Scenario, RunConfig], frozenset[tuple[int, int, int]]]] = []
_MAX_LEARNED = 8


def _learned(alike: tuple[Scenario, RunConfig]) -> frozenset[tuple[int, int, int]]:
    for got, dense in reversed(_LEARNED):
        if got == alike:
            return dense
    return frozenset()


def _learn(alike: tuple[Scenario, RunConfig], dense: frozenset[tuple[int, int, int]]) -> None:
    _LEARNED[:] = [x for x in _LEARNED if x[0] != alike][-(_MAX_LEARNED - 1) :]
    _LEARNED.append((alike, dense))


class _Tables:
    """The keyed draws of every attempt as flat tables for the compiled loop, one int64 array
    (``T``: per key the latencies over ``(steps, attempts, runs, columns)``, then each
    attempt's drawn outcome (:func:`_codes_of`), then how each table is drawn) and one float
    array of the client's jitter (``(steps, retries, runs, columns)`` per key) after the
    loop's other floats. A table is drawn whole (SimPy's numbers: :class:`Draws`' own table),
    or cell by cell (the same numbers at those cells: their uniforms from the compiled PCG64,
    :func:`sim.runs_nb_tables.uniforms_at`, their quantiles elementwise): the cells not drawn
    hold -1 (a latency, a code) or NaN (a jitter). Attempt 0 is drawn before the runs start
    (TTS at the clips runs have); later attempts as runs ask for them (:meth:`fill`): content
    and actions whole when a quarter of the runs or more wait for one, else cell by cell, for
    each waiting run its whole row; TTS cell by cell, a waiting run's clips from the waiting
    cell's scene on (a run goes through its scenes in order); every kind of the attempt at
    once; up front, what a cell alike read densely (:meth:`first`)."""

    def __init__(
        self, cell: _Cell, d: Draws, jitter: bool, floats: Sequence[F64], keep: bool = False
    ) -> None:
        self.d = d
        self.keep = keep  # its arrays this thread's kept ones (:func:`_kept`)
        self.cell = cell
        self.steps = ((Step.CONTENT, Step.ACTIONS), (Step.TTS,))
        self.reps = d.hi - d.lo
        a, aj = cell.attempts, cell.jitter_attempts
        self.per = (d.n, d.n * d.kmax)
        self.shape = [(2, a, self.reps, self.per[0]), (a, self.reps, self.per[1])]
        self.jshape = [(2, aj, self.reps, self.per[0]), (aj, self.reps, self.per[1])]
        sizes = [math.prod(s) for s in self.shape]
        codes = [n if _drawn(q) else 0 for n, q in zip(sizes, cell.quota, strict=True)]
        cut = [0, sizes[0], sum(sizes), sum(sizes) + codes[0], sum(sizes) + sum(codes)]
        cut.append(cut[-1] + 3 * 2 * 2 * a)
        self.t_at = cut  # where the latencies, codes and flags start in T
        self.T = _kept("T", cut[-1], np.int64, keep)
        self.lat = [self.T[cut[0] : cut[1]], self.T[cut[1] : cut[2]]]
        self.codes = [self.T[cut[2] : cut[3]], self.T[cut[3] : cut[4]]]
        self.have = self.T[cut[4] : cut[5]].reshape(3, 2, 2, a)
        self.have[...] = 0
        head, at = _concat(floats, np.float64)
        jit = [math.prod(s) if jitter else 0 for s in self.jshape]
        self.f_at = [*at, at[-1] + jit[0], at[-1] + jit[0] + jit[1]]
        self.F = _kept("F", self.f_at[-1], np.float64, keep)
        self.F[: at[-1]] = head
        self.jit = [self.F[self.f_at[-3 + k] : self.f_at[-2 + k]] for k in (0, 1)]
        self.speeches = d.speeches()  # the TTS cells runs have: clip < speeches (:meth:`clips`)
        self.live: I64 | None = None  # the runs that can still read (None: every run)
        self.n_lat = np.zeros((2, 2, a), dtype=np.int64)  # latencies drawn cell by cell

    def view(self, kind: int, key: int, si: int, a: int) -> NDArray[np.generic]:
        """Table ``kind`` (0 latencies, 1 codes, 2 jitter) of ``key``, step ``si`` within the
        key, attempt ``a``: an array of (runs, columns)."""
        arr = (self.lat, self.codes, self.jit)[kind][key]
        shape = (self.jshape if kind == 2 else self.shape)[key]
        whole = arr.reshape(shape)
        out: NDArray[np.generic] = whole[si, a] if key == 0 else whole[a]
        return out

    def kinds(self, key: int, a: int) -> list[int]:
        """The tables attempt ``a`` of a step on ``key`` has (its latencies; its codes where
        the key draws them; the jitter after it where the client draws one)."""
        out = [0, 1] if _drawn(self.cell.quota[key]) else [0]
        return out + [2] * bool(len(self.jit[key]) and a < self.cell.jitter_attempts)

    def whole(self, key: int, si: int, a: int, kinds: Sequence[int] = (0, 1, 2)) -> None:
        """The tables ``kinds`` of (``key``, ``si``, ``a``) whole: :class:`Draws`' own."""
        d, step = self.d, self.steps[key][si]
        for kind in self.kinds(key, a):
            if self.have[kind, key, si, a] == 1 or kind not in kinds:
                continue
            if kind == 0:
                self.view(0, key, si, a)[...] = d.latency_us(step, a)
            elif kind == 1:
                q = self.cell.quota[key]
                us = [d.fault_u(step, a, k) for k in _code_kinds(q)]
                _codes_of(q, us, self.view(1, key, si, a))
            else:
                self.view(2, key, si, a)[...] = d.jitter_u(step, a)
            self.have[kind, key, si, a] = 1

    def cells(self, key: int, si: int, a: int, cells: I64) -> None:
        """The tables of (``key``, ``si``, ``a``) not drawn whole, at ``cells`` (flat: run,
        column; ascending, without repeats). At a quarter of a table or more, numpy draws
        the uniforms whole (quicker than stepping to the cells), and the codes and jitter,
        cheap from there, are taken whole: only the latencies' quantiles are cell by cell."""
        d, step = self.d, self.steps[key][si]
        if cells.size * _DENSE_DRAWS >= self.reps * self.per[key]:
            self.whole(key, si, a, (1, 2))
            if self.have[0, key, si, a] != 1:
                u = d.uniforms((int(step), a, KIND_LATENCY), self.per[key]).reshape(-1)
                self._put(0, key, si, a, cells, d.latency_at(step, a, cells, u[cells]))
            return
        kinds = [k for k in self.kinds(key, a) if self.have[k, key, si, a] != 1]
        q = self.cell.quota[key]
        streams = [KIND_LATENCY] * (0 in kinds) + _code_kinds(q) * (1 in kinds)
        streams += [KIND_JITTER] * (2 in kinds)
        from .seeds_nb import seeded_many  # (numba: imported only then)

        seeded = seeded_many(d.seed, [(int(step), a, k) for k in streams])
        u = uniforms_at(seeded, d.lo * self.per[key], cells)
        if 0 in kinds:
            self._put(0, key, si, a, cells, d.latency_at(step, a, cells, u[0]))
        if 1 in kinds:
            at = 1 if 0 in kinds else 0
            codes = np.empty(cells.size, dtype=np.int64)
            _codes_of(q, list(u[at : at + len(_code_kinds(q))]), codes)
            self._put(1, key, si, a, cells, codes)
        if 2 in kinds:
            self._put(2, key, si, a, cells, u[-1])

    def _put(self, kind: int, key: int, si: int, a: int, cells: I64, x: NDArray[Any]) -> None:
        """``x`` at ``cells`` of a table drawn cell by cell; the others hold "not drawn" (-1,
        NaN) in the rows of the runs that can still read it (:attr:`live`: those suspended
        when it was begun; a run that has ended reads nothing more)."""
        table = self.view(kind, key, si, a)
        if self.have[kind, key, si, a] == 0:  # not drawn: at the rows that can still be read
            if self.live is None:
                table[...] = np.nan if kind == 2 else -1
            else:
                table[self.live] = np.nan if kind == 2 else -1
            self.have[kind, key, si, a] = 3
        table.reshape(-1)[cells] = x
        if kind == 0:
            self.n_lat[key, si, a] += cells.size

    def first(self, everything: bool, dense: frozenset[tuple[int, int, int]]) -> None:
        """What the loop reads without asking: attempt 0 (TTS: at the clips runs have), and
        the jitter after it (every caller's round asks for it); with ``everything`` (waits of
        0: :meth:`_Cell.chains`), every table whole. Also whole: the later attempts
        ``dense`` names, (key, step within key, attempt): those the runs of a cell alike
        read densely last time (:meth:`dense`; results cannot change, only which tables
        exist before the runs ask)."""
        cell = self.cell
        for a in range(cell.attempts if everything else 1):
            for key, steps in enumerate(self.steps):
                for si in range(len(steps)):
                    if everything or key == 0:
                        self.whole(key, si, a)
                    else:
                        self.tts_at_clips(a)
        for key, si, a in sorted(dense):
            self.whole(key, si, a)

    def clips(self, rows: I64) -> B:
        """Runs ``rows``' TTS cells (rows, columns): whether the run has that clip."""
        got: B = np.arange(self.d.kmax)[None, None, :] < self.speeches[rows][:, :, None]
        return got.reshape(len(rows), self.per[1])

    def tts_at_clips(self, a: int) -> None:
        """:meth:`cells` of TTS attempt ``a`` at every clip runs have, as :meth:`cells` draws
        many cells (the uniforms, codes and jitter whole, the latencies' quantiles at the
        clips), the clips gathered and put by :mod:`sim.clips_nb` (no mask, no fancy index)."""
        from .clips_nb import at_clips, put_clips_us

        d, per = self.d, self.per[1]
        spec = d.scenario.step_tokens(Step.TTS)
        many = np.minimum(self.speeches, d.kmax).sum() * _DENSE_DRAWS >= self.reps * per
        if not many or (spec is not None and spec.derived) or self.have[0, 1, 0, a] != 0:
            self.cells(1, 0, a, np.flatnonzero(self.clips(np.arange(self.reps))))
            return
        self.whole(1, 0, a, (1, 2))
        u = d.uniforms((int(Step.TTS), a, KIND_LATENCY), per)
        buf = _kept("clips", u.size, np.float64, self.keep)
        x = d.quantile(d.scenario.tts, at_clips(u, self.speeches, d.kmax, buf))
        lat: I64 = self.lat[1].reshape(self.shape[1])[a].reshape(-1)
        put_clips_us(x, self.speeches, d.kmax, lat)
        self.have[0, 1, 0, a] = 3

    def dense(self) -> frozenset[tuple[int, int, int]]:
        """The attempts beyond 0, (key, step within key, attempt), drawn whole or read at
        :data:`_DENSE_FROM` of their cells or more."""
        out = []
        for key, si, a in zip(*np.nonzero(self.have[0]), strict=True):
            flag = self.have[0, key, si, a]
            size = self.reps * self.per[int(key)]
            if a > 0 and (flag == 1 or self.n_lat[key, si, a] >= _DENSE_FROM * size):
                out.append((int(key), int(si), int(a)))
        return frozenset(out)

    def fill(self, needs: I64) -> None:
        """Draw what suspended runs wait for (rows: table, key, step within key, attempt,
        flat cell of a latency table): per (key, step, attempt) asked for, content's and
        actions' whole if a quarter of the runs or more wait for it, else at the waiting runs'
        cells (:meth:`cells`: their rows; TTS: their clips from the waiting scene on)."""
        a_top = self.cell.attempts
        key, si, a, at = needs[:, 1], needs[:, 2], needs[:, 3], needs[:, 4]
        group = (key * 2 + si) * a_top + a
        for g in np.unique(group).tolist():
            k, s_, a_ = g // a_top // 2, g // a_top % 2, g % a_top
            per = self.per[k]
            rel = at[group == g] - (s_ * a_top + a_) * self.reps * per
            runs = np.unique(rel // per)
            if k == 0 and runs.size >= _WHOLE_FROM * self.reps:
                self.whole(k, s_, a_)
            elif k == 0:
                self.cells(k, s_, a_, (runs[:, None] * per + np.arange(per)).reshape(-1))
            else:
                self.cells(k, s_, a_, self.rest_of_runs(rel))

    def rest_of_runs(self, cells: I64) -> I64:
        """For TTS ``cells`` (flat: run, column) of one attempt, every cell of their runs from
        the earliest of their scenes on at a clip the run has: what those runs can read of
        that attempt from now on (a run's scenes come in order)."""
        per, kmax = self.per[1], self.d.kmax
        runs = cells // per
        start = np.full(self.reps, per, dtype=np.int64)
        np.minimum.at(start, runs, cells % per // kmax * kmax)  # the scene's first column
        rows = np.unique(runs)
        cols = np.arange(per, dtype=np.int64)
        mask = (cols[None, :] >= start[rows][:, None]) & self.clips(rows)
        out: I64 = (rows[:, None] * per + cols[None, :])[mask]
        return out


def _ctx(cell: _Cell, tb: _Tables, d: Draws, records: bool, logcap: int) -> Ctx:
    """The compiled loop's arrays for the runs of ``cell`` (:class:`sim.fast_quota_loop.Ctx`)."""
    from . import fast_quota_loop as fl

    reps, s, n = tb.reps, cell.s, cell.n
    _, exp_us, _, wi = cell.waits
    status_of = np.stack(cell.status_of)
    ints = [exp_us, wi, status_of, _RETRIED.astype(np.int64), _RATE.astype(np.int64)]
    capmax = max(1, *(q.max_inflight for q in cell.quota))
    ncap = 3 * s * reps
    head = np.zeros(fl.NP, dtype=np.int64)
    P, p_at = _concat([head, *ints], np.int64)
    P[: fl.P_CAPMAX] = cell.params(reps, records, logcap)
    P[fl.P_CAPMAX : fl.P_NCAP + 1] = (capmax, exp_us.shape[1], exp_us.shape[2], ncap)
    P[fl.P_OT0 : fl.P_OT5 + 1] = tb.t_at
    P[fl.P_OF1 : fl.P_OF5 + 1] = tb.f_at[1:6]
    P[fl.P_OP1 : fl.P_OP6 + 1] = p_at[1:7]
    cols = fl.NR + 4 * n + 2 * capmax
    R = _kept("R", reps * cols, np.int64, tb.keep).reshape(reps, cols)
    R[...] = 0
    R[:, fl.NR + 3 * n : fl.NR + 4 * n] = d.speeches()
    W = _kept("W", 4 + 7 * s + 5 * ncap, np.int64, tb.keep)
    W[...] = 0
    return fl.Ctx(
        P=P,
        F=tb.F,
        T=tb.T,
        S=_kept("S", reps * s * fl.NF, np.int64, tb.keep).reshape(reps, s, fl.NF),
        R=R,
        W=W,
        L=np.empty((max(1, logcap), 10), dtype=np.int64),
    )


def _fresh() -> None:
    from .fast_quota_loop import recompile_if_stale

    recompile_if_stale()  # a code changed since the cache was written: compiled again


# the loop's first call in a process: compiled (or loaded) once per machine, its codes checked
_LOCK = CompileLock(Path(__file__).with_name("fast_quota_loop.py"), "numba", before=_fresh)


def _run(cell: _Cell, d: Draws, records: bool) -> Ctx:
    """Every run to its end: the compiled loop over the runs, again over those suspended
    for draws once they are drawn; with ``records``, again from the start if the log was
    too small."""
    from .fast_quota_loop import CT_ERR, CT_LOG, CT_NEEDS, all_drawn, run_runs

    jitter = cell.jitter_fixed is None and cell.any_jitter
    exp_ms, _, wf, _ = cell.waits
    fixed = np.array([cell.jitter_fixed or 0.0])
    tb = _Tables(cell, d, jitter, [fixed, exp_ms, wf], keep=True)
    alike = (cell.sc, cell.cfg)
    tb.first(cell.chains(), _learned(alike))
    reps, s = tb.reps, cell.s
    per_run = _LOG_ROWS_PER_RUN or cell.n * (4 + cell.kmax)
    logcap = reps * per_run if records else 0
    while True:
        C = _ctx(cell, tb, d, records, logcap)
        W = C.W
        todo = np.arange(reps, dtype=np.int64)
        tb.live = None
        while len(todo):
            W[CT_NEEDS] = 0
            with _LOCK.first_use():  # the suspended ones overwrite the list's head
                k = run_runs(*C, todo, todo)
            if W[CT_ERR]:
                raise AssertionError("fast_quota: a draw was read before it was drawn")
            todo = todo[:k].copy()
            tb.live = todo  # (a run that ended reads no more: tables begun now skip its row)
            needs = W[4 + 7 * s :].reshape(-1, 5)[: W[CT_NEEDS]]
            tb.fill(needs)
            if not all_drawn(C.P, C.F, C.T, needs):  # else the runs would ask again, for ever
                raise AssertionError("fast_quota: a draw asked for was not drawn")
        if W[CT_LOG] <= logcap:
            _learn(alike, tb.dense())
            return C
        logcap = int(W[CT_LOG]) + 1024


def _warm_helpers() -> None:
    """Each compiled helper the engine calls, called once on small arrays (a small cell need
    not reach them all): compiled, or loaded from numba's cache, now."""
    from . import fast_quota_loop as fl
    from .clips_nb import at_clips, put_clips_us, sum_clips_us
    from .ndtri import ndtri
    from .runs_nb_records import learner_ints
    from .seeds_nb import seeded_many

    seeded = seeded_many(0, [(0, 0, 0)])
    u = uniforms_at(seeded, 0, np.arange(1024, dtype=np.int64))[0]
    ndtri(u)
    speeches = np.ones((1, 2), dtype=np.int64)
    x = at_clips(u[:4], speeches, 2)
    put_clips_us(x, speeches, 2, np.empty(4, dtype=np.int64))
    sum_clips_us(x, speeches, 2, 0)
    learner_ints(speeches, speeches, 0, 0)
    fl.all_drawn(
        np.zeros(fl.NP, np.int64), np.zeros(1), np.zeros(1, np.int64), np.zeros((0, 5), np.int64)
    )


def warm_up() -> tuple[float, bool]:
    """Compile the loop (or load it from numba's cache) on a small cell, and the engine's
    other compiled helpers (:func:`_warm_helpers`): the seconds it took, and whether the loop
    was loaded from the cache."""
    from . import fast_quota_loop as fl
    from .scenario import load_scenario

    sc = load_scenario("default")
    sc = sc.replace(outlines=2, quota_llm=dataclasses.replace(sc.quota_llm, max_inflight=1))
    t0 = time.perf_counter()
    simulate_quota(sc, RunConfig.of("pipelined", 2, records=True), 2)
    _warm_helpers()
    spent = time.perf_counter() - t0
    stats = getattr(fl.run_runs, "stats", None)
    return spent, bool(stats is not None and stats.cache_hits and not stats.cache_misses)


def _logs(C: Ctx, reps: int, first_run: int) -> list[list[RequestRecord]]:
    """Each run's requests in the provider's log order (by decision time, then the order
    the instant decided them), as :func:`sim.schema.records_from_log` makes them."""
    from .fast_quota_loop import CT_LOG

    rows = C.L[: C.W[CT_LOG]]
    srt = np.lexsort((np.arange(len(rows)), rows[:, 5], rows[:, 0]))
    out: list[list[tuple[object, ...]]] = [[] for _ in range(reps)]
    for r, step, order, clip, att, t, end, status, nin, reason in rows[srt].tolist():
        out[r].append(
            (
                first_run + r, step, order, clip, att, _KEYS[1] if step == TTS else _KEYS[0],
                t, t, end, status, nin, REASONS[reason],
            )
        )  # fmt: skip
    return [records_from_log(rows) for rows in out]


def _from_simpy(
    cols: tuple[I64, B, NDArray[np.int8], I64, I64],
    runs: list[int],
    sc: Scenario,
    cfg: RunConfig,
    seed: int,
    lo: int,
) -> list[RunResult]:
    """Runs ``runs`` (indices) computed by SimPy, their columns (ready, failed, status, end,
    counters) put in place."""
    from .model import simulate_simpy

    ready, failed, status, end, cnt = cols
    names = [str(s) for s in STATUSES]
    out = []
    for j in runs:
        (res,) = simulate_simpy(sc, cfg, 1, seed=seed, first_run=lo + j)
        ready[j] = -1
        for o, t_s in zip(res.scene_order, res.scene_ready_s, strict=True):
            ready[j, o] = round(t_s * 1e6)
        failed[j] = False
        failed[j, list(res.failed_orders)] = True
        status[j] = names.index(res.status)
        end[j] = round(res.makespan_s * 1e6)
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
    from . import fast_quota_loop as fl

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
    C = _run(cell, draws, config.records)
    R, n = C.R, cell.n
    status = R[:, fl.R_STATUS].astype(np.int8)
    end = R[:, fl.R_END].copy()
    ready = R[:, fl.NR + n : fl.NR + 2 * n].copy()
    failed = R[:, fl.NR + 2 * n : fl.NR + 3 * n] != 0
    cnt = np.zeros((5, reps), dtype=np.int64)
    cnt[:4] = R[:, [fl.R_REQ, fl.R_429, fl.R_5XX, fl.R_RET]].T
    dropped = np.flatnonzero(R[:, fl.R_STAGE] == fl.ST_DROPPED).tolist()
    cols = (ready, failed, status, end, cnt)
    simpy = _from_simpy(cols, dropped, scenario, config, seed, first_run)
    logs = _logs(C, reps, first_run) if config.records else None
    if logs is not None:
        for j, res in zip(dropped, simpy, strict=True):
            logs[j] = list(res.requests_log)
    pb = scenario.playback
    qoe = qoe_us(ready, draws.playback_table_us(), pb.start, pb.buffer_us, compiled=True)
    runs = FastRuns(
        scenario=scenario,
        mode=str(config.mode),
        concurrency=config.c,
        tts_concurrency=cell.tts_c,
        seed=seed,
        first_run=first_run,
        end_us=end,
        ready_us=ready,
        failed=failed,
        status=status,
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
