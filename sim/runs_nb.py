"""The compiled generation-runs engine (issue 24): a runs cell on one compiled event loop.

:mod:`sim.runs_nb_loop` is the reference's loop (:mod:`sim.runs_world` driving
:class:`~sim.run_machine.RunMachine`, :class:`~sim.run_server.ServerMachine` and
:class:`~sim.provider.KeyState`) re-stated over integer arrays and compiled with numba
(compiled on first use under a lock file shared by processes, then loaded from numba's on-disk
cache; nothing compiles at import). This module sets up its arrays — the cell's settings, the
runs' clips, the keyed draws of :class:`~sim.runs_world.RunDraws` as flat tables (every
attempt 0 at once, later attempts and the client's jitter when the loop first asks for them) —
runs it, and turns what it leaves into the same :class:`~sim.runs.RunOutcome` records and
request log as the reference's. :func:`sim.runs.check_engines` proves it equal to the SimPy
model request for request.

Where it applies (:func:`nb_fits`): adaptive ``off`` (every confirmation mode, the media
lane) and keys whose limits are an in-flight cap and an RPM bucket (random 429s, 5xx and
injected faults included; no per-second window, token buckets, shared capacity or issue-21
limits). Slots freed on give-up (``free_on_give_up``, ``disconnect_frees``) are modelled.
Elsewhere the heap engine (:mod:`sim.runs_fast`) runs the cell.
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from .compiled import CompileLock
from .dists import Dist
from .draws import PLAYBACK_KEY, SPEECHES_KEY, seconds_to_us
from .faults import has_limits
from .rules import Outcome, RetryPolicy, outcome_of
from .run_machine import _outline_policy
from .runs_config import RunsConfig, RunsSettings
from .runs_nb_tables import Batch, Need, uniforms_of
from .runs_outcome import REFUSED, RunOutcome
from .runs_world import RunDraws, arrivals_of, runs_scenario
from .scenario import Quota, Scenario

if TYPE_CHECKING:
    from .runs_nb_loop import Ctx

__all__ = [
    "MAX_CELL_BYTES",
    "MAX_RUNS",
    "NbCell",
    "cell_bytes",
    "nb_fits",
    "simulate_nb",
    "warm_up",
]

I64 = NDArray[np.int64]
# runs per cell at most: the cell's draw tables and call rows are held whole (tens of MB per
# 10k runs; the heap engine keeps its draws in bounded blocks for larger cells); the loop's
# keys hold 2**21 runs, 1024 outlines (and media items), 256 clips, 32 attempts
MAX_RUNS = 20_000
MAX_CELL_BYTES = 1 << 30  # the arrays of one cell at most (cell_bytes): 1 GiB
EARLY_MAX_DRAWS = 1 << 18  # a cell's draws at most for attempt 1's tables to be drawn at its start
RETURN_DRAWS = 5000  # draws that cost about as much as one return of the loop to draw
LEARN_CELLS = 2  # cells alike drawn as they ask before every table may be drawn at the start
_FIRST_CAP = 1 << 22  # the draw tables' first size at most (then grown by doubling)
CONFIRMS = ("auto", "countdown", "wait")  # the loop's C_* codes
_STEP_NAMES = {0: "content", 1: "actions", 2: "narration"}


def _plain(q: Quota) -> bool:
    """A key whose admission limits are an in-flight cap and an RPM bucket (or none)."""
    return not (q.rpm_per_second or q.tokens_limited or q.shared or has_limits(q))


def cell_bytes(sc: Scenario, cfg: RunsConfig) -> int:
    """About what the loop's arrays take for this cell (they are made whole, for every run at
    once): per run its calls' slots (``C``), the heap and a round's items (``B``, ``H``), its
    fields, and with ``keep_log`` its log rows; the draw tables (at most a fixed size) aside."""
    n, kmax = sc.outlines, max(1, sc.max_clips)
    slots = 2 + n + kmax
    words = 17 * slots + 9 * (slots + 3) + 44 + 5 * n + 8  # NCF, NB + 2, NRF, Q's (nb_loop)
    if cfg.keep_log:
        words += 9 * n * (4 + kmax)
    return 8 * words * cfg.n_runs + (1 << 16)


def nb_fits(sc: Scenario, cfg: RunsConfig) -> bool:
    """Whether the compiled engine computes this cell: adaptive ``off`` and keys limited by
    in-flight caps and RPM buckets only (every confirmation mode, the media lane), at most
    :data:`MAX_RUNS` runs and :data:`MAX_CELL_BYTES` of arrays (:func:`cell_bytes`; a larger
    cell goes to the heap engine, whose draws are kept in bounded blocks)."""
    return (
        cfg.adaptive == "off"
        and _plain(sc.quota_llm)
        and _plain(sc.quota_tts)
        and cfg.n_runs <= MAX_RUNS
        and sc.outlines < 1024
        and max(1, sc.max_clips) < 256
        and cell_bytes(sc, cfg) <= MAX_CELL_BYTES
    )


def _policies(sc: Scenario, cfg: RunsConfig) -> tuple[RetryPolicy, ...]:
    """The calls' retry policies, in the loop's order (``POL_*``)."""
    cl = sc.client
    one = RetryPolicy(max_retries=0)
    return (
        cl.foreground_retry_llm,
        cl.retry_llm,
        _outline_policy(cfg.settings.outline_attempts),
        one,
    )


def _exp_parts(pols: tuple[RetryPolicy, ...], top: int) -> tuple[I64, NDArray[np.float64]]:
    """Per policy and retry: :meth:`RetryPolicy.delay_us` without jitter (µs), and its
    exponential part capped (ms), computed as the method computes them."""
    us = np.zeros((len(pols), top), dtype=np.int64)
    ms = np.zeros((len(pols), top))
    for p, pol in enumerate(pols):
        cap_ms = pol.max_delay_s * 1000.0 if pol.max_delay_s > 0 else math.inf
        for i in range(pol.max_retries + 1):
            exp_ms = pol.initial_delay_s * pol.backoff_factor**i * 1000.0
            if exp_ms > cap_ms:
                exp_ms = cap_ms
            ms[p, i] = exp_ms
            if not pol.jitter:
                us[p, i] = pol.delay_us(i, None, 0.0)
    return us, ms


_RETRIED = np.array(
    [outcome_of(s) not in (Outcome.OK, Outcome.CLIENT_ERROR) for s in range(-2, 600)],
    dtype=np.int64,
)


def _capacity(runs: int, slots: int) -> int:
    """The heap's and a round's rows' capacity (``H``, ``B``): every item a cell can hold at
    once (per run a timed item per call slot, its arrival, a review, a tick; a few spare). The
    loop checks each append against it (an overflow is an AssertionError: a bug here)."""
    return runs * (slots + 3) + 32


def _floats(
    sc: Scenario, st: RunsSettings, pols: tuple[RetryPolicy, ...], ms: NDArray[np.float64]
) -> NDArray[np.float64]:
    """The loop's floats (``F``): the keys' probabilities and buckets, the policies'."""
    ql, qt = sc.quota_llm, sc.quota_tts
    head = [ql.p_429, qt.p_429, ql.p_5xx, qt.p_5xx]
    head += [q.p_reset + q.p_stall + q.p_truncate for q in (ql, qt)]
    head += [ql.p_reset, qt.p_reset, ql.p_reset + ql.p_stall, qt.p_reset + qt.p_stall]
    head += [sc.client.jitter_u or 0.0, st.media_p_fail]
    head += [q.rpm / 60e6 if q.rpm > 0 else 0.0 for q in (ql, qt)]  # the RPM buckets
    head += [q.bucket_capacity for q in (ql, qt)] * 2  # their capacities, full at first
    for p in pols:
        head += [p.max_delay_s * 1000.0 if p.max_delay_s > 0 else math.inf, p.jitter]
    return np.concatenate([np.array(head, dtype=np.float64), ms.reshape(-1)])


def _lat_dists(sc: Scenario, st: RunsSettings) -> dict[int, Dist | None]:
    """Per step, the one distribution its whole latency table is drawn from (``None``:
    drawn by :meth:`RunDraws.latency_us` itself: content whose scene types differ, or a
    step whose latency adds the decoding of drawn tokens)."""
    # (scene o's type is the (o mod types)th: the first outlines hold every type used)
    kinds = min(sc.outlines, len(sc.scene_types))
    content = {id(d): d for d in map(sc.content_dist, range(kinds))}
    out: dict[int, Dist | None] = {
        0: next(iter(content.values())) if len(content) == 1 else None,
        1: sc.actions,
        2: sc.tts,
        3: st.outline,
        4: st.agents,
        5: st.media,
    }
    for step in (0, 1, 2):
        spec = sc.step_tokens(step)
        if spec is not None and spec.derived:
            out[step] = None
    return out


_ONE = np.ones(1, dtype=np.int64)  # (one draw per run: read only)


def _arrivals(cfg: RunsConfig, seed: int) -> list[tuple[int, int]]:
    """:func:`sim.runs_world.arrivals_of`: Poisson arrivals by its formula
    (:func:`sim.draws.tenant_offsets_us`' exponential gaps) on the same uniforms, drawn by
    :func:`sim.runs_nb_tables.uniforms_of` (its stream's seeding kept: cells of one seed
    and block reuse it); a replay or a single run by it."""
    if cfg.arrivals is not None or cfg.runs <= 1:
        return arrivals_of(cfg, seed)
    assert cfg.arrival_per_hour is not None
    stagger_s = 3600.0 / cfg.arrival_per_hour
    from .seeds_nb import seeded_row  # (numba's, as this module's)

    u = uniforms_of(seeded_row(seed, (97, cfg.run_id)), _ONE, 0, cfg.runs - 1)
    ts: list[int] = [0, *np.cumsum(seconds_to_us(-stagger_s * np.log1p(-u))).tolist()]
    owners = cfg.owners
    return [(t, r if owners == 0 else r % owners) for r, t in enumerate(ts)]


class _Shape:
    """What every cell of one scenario and one set of settings shares: the retry policies,
    the attempts, the loop's constant settings and floats, the latency distributions, and
    the draw tables a cell starts with (:attr:`first`: every attempt 0's admission draws,
    which every run reads; :attr:`early`: those and attempt 1's (the outline's every
    attempt's), and attempt 0's jitter)."""

    def __init__(self, sc: Scenario, cfg: RunsConfig) -> None:
        from .runs_nb_loop import NK, NSTEP

        st = self.settings = cfg.settings
        self.sc = sc
        pols = self.pols = _policies(sc, cfg)
        top = max(p.max_retries for p in pols) + 1
        self.attempts = max(top, st.outline_attempts)
        self.off_n = NSTEP * self.attempts * NK  # the tables
        # per step: its calls' attempts at most (content, actions, TTS; outline; agents)
        self.top = (top, top, top, st.outline_attempts, 1, 1)
        us, ms = _exp_parts(pols, top)
        # P after its settings: the waits, the budgets, the retried statuses
        tail = [us.reshape(-1), np.array([p.max_retries for p in pols]), _RETRIED]
        self.p_tail = np.concatenate(tail).astype(np.int64)
        self.floats = _floats(sc, st, pols, ms)
        # the loop's settings (P) of the keys, the deadlines and agents, the server, the media
        ql, qt = sc.quota_llm, sc.quota_tts
        free = st.free_on_give_up or bool(getattr(ql, "disconnect_frees", 0))
        self.p_keys = [
            free, ql.max_inflight, qt.max_inflight,
            round(ql.stall_s * 1e6), round(qt.stall_s * 1e6), ql.status_5xx, qt.status_5xx,
            sc.client.jitter_u is not None,
            bool(ql.p_429), bool(qt.p_429), bool(ql.p_5xx), bool(qt.p_5xx),
            ql.faulty, qt.faulty,
        ]  # fmt: skip
        dl = ("outline", "agents", "content", "actions", "clip")
        self.p_deadlines = [st.us(f"{d}_deadline_s") for d in dl] + [st.agents_mode == "auto"]
        self.p_server = [CONFIRMS.index(st.confirm), st.us("scan_interval_s")]
        self.p_server += [st.us("countdown_s"), st.us("review_s")]
        self.p_media = [st.media_items, st.us("media_deadline_s")]
        self.dists = _lat_dists(sc, st)
        needs: list[Need] = []
        kinds: dict[int, list[int]] = {}
        for step in (0, 1, 2, 3, 4) if st.agents_mode == "auto" else (0, 1, 2, 3):
            q = sc.quota_tts if step == 2 else sc.quota_llm
            kinds[step] = [0] + [k for k, u in ((1, q.p_429), (2, q.p_5xx), (3, q.faulty)) if u]
            needs += [(step, 0, k) for k in kinds[step]]
        if st.media_items:
            needs += [(5, 0, 0), (5, 0, 3)]  # a media item's latency and its failure's draw
        d = RunDraws(sc, st, 0, 0, 1)
        per = d._per
        # the clips per scene and their audio (the records' playback), with the first tables
        side = ((SPEECHES_KEY, d.n), (PLAYBACK_KEY, d.n * d.kmax))
        self.first = Batch(needs, self.dists, per, self.attempts, side=side)
        early = needs + self._later(kinds, 2)
        self.early = Batch(early, self.dists, per, self.attempts, side=side)
        # per run: the latencies and the uniforms of every table (LT's and U's room)
        every = needs + self._later(kinds, self.attempts)
        self.every = Batch(every, self.dists, per, self.attempts, side=side)
        self._returns: dict[tuple[Any, ...], list[int]] = {}  # per cell: early cells, returns
        self.room = (
            sum(per(step) for step, _, kind in every if kind == 0),
            sum(per(step) for step, _, kind in every if kind != 0),
        )
        self._asked: dict[tuple[tuple[int, ...], bool], Batch] = {}
        self.params: dict[tuple[Any, ...], tuple[I64, int]] = {}  # NbCell._params' per cell

    def _later(self, kinds: dict[int, list[int]], upto: int) -> list[Need]:
        """The tables of the later attempts below ``upto`` (a step's attempts at most,
        :attr:`top`; the outline's all: one draw per run each) and the jitter of each attempt
        but the last (where its policy draws one); the latencies of a distribution
        :class:`RunDraws` draws itself left to when the loop asks."""
        jit = self.sc.client.jitter_u is None
        pols = self.pols
        out: list[Need] = []
        for step, ks in kinds.items():
            top = self.top[step] if step == 3 else min(upto, self.top[step])
            drawn = ks if self.dists[step] is not None else ks[1:]
            for a in range(1, top):
                out += [(step, a, k) for k in drawn]
            pol = (pols[0], pols[1]) if step < 3 else (pols[2],) if step == 3 else ()
            if jit and any(p.jitter for p in pol):
                out += [(step, a, 4) for a in range(top - 1)]
        return out

    def start(self, cell: tuple[Any, ...], runs: int) -> Batch:
        """The tables a cell starts with: :attr:`early` (attempt 0's alone in a large cell),
        or :attr:`every` where the cells alike (``cell``: their settings, but the seed and
        the block) returned to draw so often, on :attr:`early`, that every table costs less
        (a return costs about :data:`RETURN_DRAWS` draws)."""
        early = runs * self.early.per_run()
        if early > EARLY_MAX_DRAWS:
            return self.first
        seen = self._returns.get(cell)
        if seen is None or seen[0] < LEARN_CELLS:
            return self.early
        extra = runs * self.every.per_run() - early
        return self.every if seen[1] * RETURN_DRAWS > seen[0] * extra else self.early

    def learn(self, cell: tuple[Any, ...], returns: int) -> None:
        """A cell started on :attr:`early` returned ``returns`` times to draw."""
        if cell not in self._returns and len(self._returns) >= 4096:
            self._returns.clear()
        seen = self._returns.setdefault(cell, [0, 0])
        seen[0] += 1
        seen[1] += returns

    def ahead(self, rows: tuple[int, ...], small: bool) -> list[Need]:
        """What the loop asked for (``rows``: (step, attempt, kind) after each other) and, for
        a jitter draw of attempt ``a`` (a failed request about to be retried), the admission
        draws of attempt ``a + 1`` (the retry reads them next); for an LLM step from a second
        retry on (``a >= 1``: its calls retry again and again, as on a full key) every later
        attempt's draws at once, and in a ``small`` cell (one that drew attempt 1's tables at
        its start) the other LLM step's from attempt 2 (its key is the same: fewer returns;
        in a large cell the draws cost more than the returns); a TTS step's tables, ``kmax``
        times wider, stay one attempt ahead (measured faster)."""
        needs = [(rows[i], rows[i + 1], rows[i + 2]) for i in range(0, len(rows), 3)]
        out = list(needs)
        sc = self.sc
        for step, att, kind in needs:
            if kind != 4 or att + 1 >= self.attempts:
                continue
            q = sc.quota_tts if step == 2 else sc.quota_llm
            kinds = [0] + [k for k, u in ((1, q.p_429), (2, q.p_5xx), (3, q.faulty)) if u]
            for s in (0, 1) if small and step < 2 and att >= 1 else (step,):
                lo = att + 1 if s == step else 2  # (attempt 1's: drawn at the start)
                top = att + 2 if att == 0 or s == 2 else self.top[s]
                out += [(s, a, k) for a in range(lo, top) for k in kinds]
                out += [(s, a, 4) for a in range(lo - 1 if s != step else lo, top - 1)]
        return out

    def asked(self, rows: tuple[int, ...], small: bool) -> Batch:
        """The batch of :meth:`ahead`'s tables (kept per request: cells ask alike)."""
        got = self._asked.get((rows, small))
        if got is None:
            if len(self._asked) >= 256:
                self._asked.clear()
            per = RunDraws(self.sc, self.settings, 0, 0, 1)._per
            need = self.ahead(rows, small)
            got = self._asked[(rows, small)] = Batch(need, self.dists, per, self.attempts)
        return got


_SHAPES: list[_Shape] = []  # the latest few, the newest last


def _shape(sc: Scenario, cfg: RunsConfig) -> _Shape:
    """The cell's :class:`_Shape`: kept for the latest few scenarios and settings (equal
    ones: a shape is made of their values only)."""
    st = cfg.settings
    for got in reversed(_SHAPES):
        if (got.sc is sc or got.sc == sc) and (got.settings is st or got.settings == st):
            return got
    got = _Shape(sc, cfg)
    _SHAPES.append(got)
    if len(_SHAPES) > 8:
        del _SHAPES[0]
    return got


class NbCell:
    """One cell's arrays for :func:`sim.runs_nb_loop.run_cell`, its draws, and its results."""

    def __init__(self, sc: Scenario, cfg: RunsConfig, seed: int) -> None:
        from . import runs_nb_loop as nl

        self.sc, self.cfg, self.seed = sc, cfg, seed
        self.c = cfg.c  # (the knob, parsed)
        sh = self.shape = _shape(sc, cfg)
        self.arrivals = _arrivals(cfg, seed)
        runs = self.runs = len(self.arrivals)
        self.base = cfg.run_id * runs
        self.d = RunDraws(sc, cfg.settings, seed, self.base, self.base + runs)
        n, kmax = sc.outlines, self.d.kmax
        self.n = n
        self.pols, self.attempts, self.top, self.OFF_N = sh.pols, sh.attempts, sh.top, sh.off_n
        self._dist = sh.dists
        self.OFF = np.full(self.OFF_N, -1, dtype=np.int64)
        lat, unif = (min(runs * k, _FIRST_CAP) for k in sh.room)  # (for those drawn later)
        self.LT, self.U = np.empty(lat, dtype=np.int64), np.empty(unif)
        self.n_lt = self.n_u = 0  # of LT and U in use
        # attempts 0 and 1 (every run reads the first, a retried call the second: a return
        # to draw costs more than these draws), or attempt 0's only in a large cell; every
        # table where cells alike returned often (_Shape.start)
        self._alike: tuple[Any, ...] = (self.c, cfg.max_concurrent, cfg.per_owner, runs)
        self._alike += (cfg.arrival_per_hour, cfg.arrivals, cfg.owners, cfg.keep_log)
        first = sh.start(self._alike, runs)
        self._learn = first is sh.early
        self._small = first is not sh.first  # (attempt 1's tables drawn)
        first.draw(self)
        slots = 2 + n + kmax  # the serial call, the contents, the clips, a media item
        hcap = _capacity(runs, slots)
        owners = sorted({o for _, o in self.arrivals})
        own = {o: i for i, o in enumerate(owners)}
        got = sh.params.get((self._alike, len(owners)))  # (the same for cells alike)
        if got is None:
            if len(sh.params) >= 256:
                sh.params.clear()
            got = sh.params[(self._alike, len(owners))] = self._params(nl, slots, hcap, len(owners))
        self.P, q_end = got[0].copy(), got[1]  # (the loop grows its log's capacity in P)
        self.F = sh.floats.copy()  # (the loop spends its buckets' tokens)
        R = np.zeros((runs, nl.NRF + 5 * n), dtype=np.int64)  # (every field 0 but these)
        R[:, nl.RF_CLAIM0] = -1
        R[:, nl.RF_WAITFOR] = -1
        R[:, nl.RF_SPHASE] = -1
        R[:, nl.RF_DUE] = -1
        R[:, nl.NRF + nl.S_READY * n : nl.NRF + (nl.S_READY + 1) * n] = -1
        R[:, nl.NRF + nl.S_CLIPS * n :] = self.d.speeches()
        R[:, nl.RF_OWNER] = [own[o] for _, o in self.arrivals]
        R[:, nl.RF_ARR] = self._ts = [t for t, _ in self.arrivals]
        self.R = R
        self.H = np.zeros((2, hcap), dtype=np.int64)
        self.Q = np.zeros(q_end, dtype=np.int64)
        self.W = np.zeros(nl.W_NEED0 + 3 * self.OFF_N, dtype=np.int64)  # each table once
        self._arrivals_in(nl)
        self.C = np.zeros((runs, slots, nl.NCF), dtype=np.int64)
        self.B = np.zeros((nl.NB, hcap), dtype=np.int64)
        self.L = np.zeros((max(16, int(self.P[nl.P_LOGCAP])), 9), dtype=np.int64)

    def _params(self, nl: Any, slots: int, hcap: int, owners: int) -> tuple[I64, int]:
        """The loop's settings ``P`` (:meth:`_settings`, then the shape's tables), and the size
        of its queues' array ``Q``: functions of the cell's settings and its count of owners."""
        sc, runs, sh = self.sc, self.runs, self.shape
        capmax = max(1, sc.quota_llm.max_inflight, sc.quota_tts.max_inflight)
        # where P's tables start (the waits, the budgets, the retried statuses; then its end)
        p_at = [nl.NP, nl.NP + sh.p_tail.size - len(self.pols) - _RETRIED.size]
        p_at += [p_at[1] + len(self.pols)]
        # where Q's parts start: the keys' slots, the owners' active runs, the runs waiting
        # for a worker (arrivals and confirmations), the due countdowns, the pending ticks
        q_at = [0, 2 * capmax, 2 * capmax + owners]
        q_at += [q_at[-1] + 2 * runs, q_at[-1] + 3 * runs, q_at[-1] + 4 * runs + 16]
        q_at.append(q_at[-1] + 2)  # the keys' buckets' last refills
        P = np.empty(nl.NP + sh.p_tail.size, dtype=np.int64)
        P[: nl.NP] = self._settings(slots, hcap, sh.top[0], p_at + q_at[:3], q_at[3:6])
        P[nl.NP :] = sh.p_tail
        return P, q_at[-1]

    def _settings(
        self, slots: int, hcap: int, top: int, offsets: list[int], server: list[int]
    ) -> list[int]:
        cfg, sh = self.cfg, self.shape
        logcap = self.runs * self.n * (4 + self.d.kmax) if cfg.keep_log else 0
        return [
            self.runs, self.n, self.d.kmax, slots, self.c, self.attempts, cfg.max_concurrent,
            cfg.per_owner, *sh.p_keys, *sh.p_deadlines, cfg.keep_log, logcap, hcap, hcap, top,
            *offsets, *sh.p_server, *server[:2], *sh.p_media, server[2],
        ]  # fmt: skip

    def _arrivals_in(self, nl: Any) -> None:
        """Every run's arrival as the server's item in the heap."""
        key0 = (3 << nl.SH_STEP) | 0
        H = self.H
        n = self.runs
        # runs are numbered in arrival order (sim.runs_world.arrivals_of): the items are
        # sorted by (time, key), already a heap
        H[0, :n] = self._ts
        H[1, :n] = key0 | (np.arange(n, dtype=np.int64) << nl.SH_RUN)
        self.W[nl.W_HN] = n

    # -- draws ---------------------------------------------------------------------------
    def _add(self, needs: list[Need]) -> None:
        """Draw the tables asked for that are not drawn yet (:class:`sim.runs_nb_tables.Batch`)."""
        OFF = self.OFF
        Batch(needs, self._dist, self.d._per, self.attempts, lambda at: OFF[at] >= 0).draw(self)

    def _add_asked(self, rows: tuple[int, ...]) -> None:
        """The tables the loop asked for (``rows``: (step, attempt, kind) after each other)
        and those :meth:`_Shape.ahead` adds: the shape's batch for the same request, where
        none of its tables is drawn yet (else the tables not drawn)."""
        batch = self.shape.asked(rows, self._small)
        if (self.OFF[batch.ats] < 0).all():
            batch.draw(self)
        else:
            self._add(self.shape.ahead(rows, self._small))

    # -- running -------------------------------------------------------------------------
    def ctx(self) -> Ctx:
        from .runs_nb_loop import Ctx

        return Ctx(
            self.P, self.F, self.OFF, self.LT, self.U, self.R, self.C, self.H, self.B, self.Q,
            self.W, self.L,
        )  # fmt: skip

    def run(self) -> None:
        """The loop to the cell's end, drawing what it asks for, growing its log; an
        AssertionError naming the array if one of its fixed-size arrays overflowed."""
        from . import runs_nb_loop as nl

        run_cell = nl.run_cell
        returns = 0
        while True:
            if _LOCK.loaded:
                code = run_cell(self.ctx())
            else:
                with _LOCK.first_use():
                    code = run_cell(self.ctx())
            if code == nl.DONE:
                if self._learn:
                    self.shape.learn(self._alike, returns)
                return
            if code == nl.OVERFLOW:
                what = nl.ERR_NAMES.get(int(self.W[nl.W_ERR]), f"code {int(self.W[nl.W_ERR])}")
                raise AssertionError(f"runs_nb: {what} overflowed")  # a bug: its size estimate
            if code == nl.NEED:
                k = int(self.W[nl.W_NEEDS])
                rows = self.W[nl.W_NEED0 : nl.W_NEED0 + 3 * k]
                self.W[nl.W_NEEDS] = 0
                self._add_asked(tuple(rows.tolist()))
                returns += 1
            else:
                grown = np.zeros((2 * len(self.L), 9), dtype=np.int64)
                grown[: len(self.L)] = self.L
                self.L = grown
                self.P[nl.P_LOGCAP] = len(grown)

    # -- results -------------------------------------------------------------------------
    def log(self) -> list[tuple[int, ...]]:
        from .runs_nb_loop import W_NLOG

        n = int(self.W[W_NLOG])
        if n > len(self.L):
            raise AssertionError("runs_nb: the request log overflowed")  # a bug: the loop checks
        return list(zip(*self.L[:n].T.tolist(), strict=False)) if n else []  # (9 columns)

    def records(self) -> list[RunOutcome]:
        """Every run's record (:func:`sim.runs.outcomes_block`'s, from the loop's rows): its
        numbers by one compiled call (:func:`sim.runs_nb_records.record_cols`), its fields
        made column by column, the records in one pass."""
        from . import runs_nb_loop as nl
        from . import runs_nb_records as rc

        n, R, runs = self.n, self.R, self.runs
        refused = R[:, nl.RF_REFUSED] != 0
        phase = R[:, nl.RF_PHASE]
        ended = refused | (phase == nl.COMPLETED) | (phase == nl.PAUSED)
        if not ended.all():  # a bug: every run ends
            r = int(np.argmin(ended))
            raise AssertionError(f"run {r} ended in phase {phase[r]}")
        pb = self.sc.playback
        K = np.array(
            [
                n, self.d.kmax, nl.NRF + nl.S_READY * n, nl.NRF + nl.S_CLIPS * n, nl.RF_ARR,
                nl.RF_CLAIM0, nl.RF_END, pb.non_speech_us, rc.START_CODES.index(pb.start),
                pb.buffer_us,
            ],
            dtype=np.int64,
        )  # fmt: skip
        F, I = np.empty((runs, rc.NF)), np.empty((runs, rc.NI), dtype=np.int64)  # noqa: E741
        row = np.empty((2, n), dtype=np.int64)
        if _REC_LOCK.loaded:
            rc.record_cols(R, self.d.audio_us(), K, F, I, row)
        else:
            with _REC_LOCK.first_use():
                rc.record_cols(R, self.d.audio_us(), K, F, I, row)
        arr_s, wait_s, first_s, end_s, startup_s, stall_s = F.T.tolist()
        scenes_ok, stalls = I.T.tolist()
        ends = self._endings(nl, refused, phase)
        counts = R[:, [nl.RF_REQ, nl.RF_429, nl.RF_5XX, nl.RF_RET, nl.RF_TO, nl.RF_MOK]]
        cols: list[list[Any]] = [
            list(range(runs)),
            [o for _, o in self.arrivals],
            arr_s,
            ends[0],
            wait_s,
            first_s,
            end_s,
            *ends[1:3],
            scenes_ok,
            ends[3],
            (R[:, nl.RF_AGENTS_PRESET] != 0).tolist(),
            startup_s,
            stall_s,
            stalls,
            *counts.T.tolist(),
            R[:, nl.RF_MFAIL].tolist(),
        ]
        for r in np.flatnonzero(refused).tolist():
            for col, v in zip(cols[3:], _REFUSED_TAIL, strict=True):
                col[r] = v
        return _outcomes(cols)

    def _endings(
        self, nl: Any, refused: NDArray[np.bool_], phase: I64
    ) -> tuple[list[str], list[str | None], list[int | None], list[tuple[int, ...]]]:
        """The runs' states, the steps they paused at, the statuses and their failed scenes
        (skipped, and the scene a pause stopped at): refused runs' are replaced after."""
        n, R, runs = self.n, self.R, self.runs
        states: list[str] = ["completed"] * runs
        at: list[str | None] = [None] * runs
        status: list[int | None] = [None] * runs
        failed: list[tuple[int, ...]] = [()] * runs
        skip = R[:, nl.NRF + nl.S_SKIP * n : nl.NRF + (nl.S_SKIP + 1) * n]
        rs, ks = np.nonzero(skip & ~refused[:, None])  # (row by row: each run's ascending)
        skipped: dict[int, list[int]] = {}
        for r, k in zip(rs.tolist(), ks.tolist(), strict=True):
            skipped.setdefault(r, []).append(k)
        for r, scenes in skipped.items():
            failed[r] = tuple(scenes)
        paused = np.flatnonzero((phase == nl.PAUSED) & ~refused)
        rows = R[paused][:, [nl.RF_PSTEP, nl.RF_PK, nl.RF_PSTATUS]].tolist()
        for r, (pstep, pk, pst) in zip(paused.tolist(), rows, strict=True):
            states[r] = "paused"
            status[r] = pst
            if pstep == nl.OUTLINE:
                at[r] = "outline"
            else:
                at[r] = f"scene:{pk}:{_STEP_NAMES[pstep]}"
                failed[r] = tuple(sorted({*failed[r], pk}))
        return states, at, status, failed


# a refused run's fields after its run, owner and arrival: as the reference makes them
_REFUSED_TAIL: tuple[Any, ...] = (
    REFUSED, math.nan, math.nan, math.nan, None, None, 0, (), False,
    math.nan, 0.0, 0, 0, 0, 0, 0, 0, 0, 0,
)  # fmt: skip


_NAMES = tuple(f.name for f in dataclasses.fields(RunOutcome))


def _outcomes(cols: list[list[Any]]) -> list[RunOutcome]:
    """The :class:`~sim.runs.RunOutcome` records of fields given column by column: their
    ``__init__`` bypassed (a frozen dataclass's sets each field through
    ``object.__setattr__``; these records are made by the hundred per cell) while it does
    nothing else, else it."""
    if hasattr(RunOutcome, "__post_init__") or hasattr(RunOutcome, "__slots__"):
        return [RunOutcome(*vals) for vals in zip(*cols, strict=True)]
    names = _NAMES
    if len(names) != len(cols):
        raise AssertionError("runs_nb: RunOutcome's fields changed")  # a bug: update records
    new = object.__new__
    out: list[RunOutcome] = []
    add = out.append
    for vals in zip(*cols, strict=True):
        o = new(RunOutcome)
        o.__dict__.update(zip(names, vals, strict=False))  # (as many: checked above)
        add(o)
    return out


def simulate_nb(
    sc: Scenario, cfg: RunsConfig, seed: int
) -> tuple[list[RunOutcome], list[tuple[int, ...]], Scenario, int]:
    """One cell on the compiled engine (where :func:`nb_fits`): the records, the request log
    (empty without ``keep_log``), the scenario as run (the ``runs`` profile) and the learners'
    confirmations refused (``wait`` mode)."""
    from .runs_nb_loop import W_CONFREF

    sc = runs_scenario(sc)
    cell = NbCell(sc, cfg, seed)
    cell.run()
    log = cell.log() if cfg.keep_log else []
    return cell.records(), log, sc, int(cell.W[W_CONFREF])


# the loop's first call in a process: compiled (or loaded) once per machine
_LOCK = CompileLock(Path(__file__).with_name("runs_nb_loop.py"), "numba-runs")
_REC_LOCK = CompileLock(Path(__file__).with_name("runs_nb_records.py"), "numba-runs-records")


def warm_up() -> tuple[float, bool]:
    """Compile the loop (or load it from numba's cache) on a small cell: the seconds it took,
    and whether it was loaded from the cache."""
    from . import runs_nb_loop as nl
    from .scenario import load_scenario

    sc = load_scenario("default", upstream="runs").replace(outlines=2).with_quota(llm_inflight=1)
    t0 = time.perf_counter()
    simulate_nb(sc, RunsConfig(concurrency=2, runs=2, arrival_per_hour=3600.0), 0)
    spent = time.perf_counter() - t0
    stats = getattr(nl.run_cell, "stats", None)
    return spent, bool(stats is not None and stats.cache_hits and not stats.cache_misses)
