"""The compiled generation-runs engine's loop (:mod:`sim.runs_nb`, issue 24): one whole cell.

The runs of a cell share the provider's keys, so the cell is one event loop (unlike the
browser loop's limited-key engine, :mod:`sim.fast_quota_loop`, whose runs never meet). It is
the reference's loop (:mod:`sim.runs_world`) re-stated over integer arrays and compiled with
numba (``cache=True``: compiled on first use, then loaded from numba's on-disk cache):

* a binary heap of timed items ``(µs, canonical key)``: the items of one instant leave it in
  the canonical order the reference sorts them into (:func:`sim.runs_world._item_key`,
  encoded in one integer: :func:`_key`);
* one instant in *rounds*: the round's answers resolved (logged) in canonical order, each run
  fed its events (runs ascending, each run's in :func:`sim.run_machine.event_key` order), the
  server fed the runs' ends and its arrivals, then the round's requests decided at the keys in
  ``(step, run, order, clip, attempt)`` order; what is due at once is the next round;
* each run's loop (:class:`sim.run_machine.RunMachine`: the outline, the agents, scene 0, the
  content pool, actions, the clips; pauses and their cancels) and each call's retries
  (:class:`sim.rules.CallMachine`, ungated) as functions on the run's row of ``R`` and its
  calls' rows of ``C`` (slot 0 the loop's serial call, ``1 + k`` content ``k``, ``1 + n + j``
  clip ``j``, the last the media item in hand), and the media lane (one item at a time once
  scene 0 is written; a pause or the completion waits for the item in hand);
* the server (:class:`sim.run_server.ServerMachine`): runs waiting for a worker claimed in
  (updated, run) order, the per-owner active limit refusing starts and learners'
  confirmations, countdown confirmations at the scan ticks;
* each key's admission (:class:`sim.provider.KeyState` on a key whose limits are its in-flight
  cap and its RPM bucket): a full key or an empty bucket answers 429 at once, else the keyed
  draws decide a random 429, a 5xx, a fault or a 200; the slot is held to the scheduled end
  (freed at a give-up with ``free_on_give_up``).

Draws are read from tables :mod:`sim.runs_nb` fills from :class:`sim.runs_world.RunDraws` (the
numbers the reference reads). A table not drawn yet is asked for before the phase that may
read it (a round's feeds read the jitter of failed answers, its decisions the admission
draws); the loop then returns, :mod:`sim.runs_nb` draws it, and the loop resumes at that
phase. The loop allocates nothing.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from numpy.typing import NDArray

from .compiled import jit as _jit
from .compiled import leaf as _leaf

__all__ = ["Ctx", "run_cell"]

I64 = NDArray[np.int64]
F64 = NDArray[np.float64]


INF = 2**62
# the loop's return codes
DONE, NEED, LOG_FULL, OVERFLOW = 0, 1, 2, 3
# phases of the loop (W[W_MODE]): next instant, a round's feeds, a round's decisions
M_INSTANT, M_FEED, M_DECIDE = 0, 1, 2
# steps (sim.rules.Step) and the table kinds (latency, then the uniforms)
CONTENT, ACTIONS, TTS, OUTLINE, AGENTS, MEDIA = 0, 1, 2, 3, 4, 5
K_LAT, K_429, K_5XX, K_FAULT, K_JIT = 0, 1, 2, 3, 4
NK = 5
NSTEP = 6
# run phases (sim.run_machine.Phase)
PREPARING, OUTLINING, AWAITING, GENERATING, PAUSED, COMPLETED = 0, 1, 2, 3, 4, 5
# call states; what a call's end does
IDLE, INFLIGHT, SLEEPING = 0, 1, 2
D_OUTLINE, D_AGENTS, D_CONTENT, D_POOL, D_ACTIONS, D_CLIP, D_MEDIA = 0, 1, 2, 3, 4, 5, 6
# retry policies: the first scene's, the later scenes', the outline's, one attempt
POL_FIRST, POL_LATER, POL_OUTLINE, POL_ONE = 0, 1, 2, 3
NPOL = 4
RESET_ST, TRUNC_ST = 1, 2  # sim.provider.RESET, TRUNCATED
CANCELLED = -3

# a run's fields: R[run, field], then per scene: content result (0 pending, 1 ok, 2 failed),
# its failure's status, skipped, when it was written (-1 never), its clips
(RF_PHASE, RF_CLAIM0, RF_AGENTS_PRESET, RF_END, RF_PSTEP, RF_PK, RF_PSTATUS) = range(7)
(RF_REQ, RF_429, RF_5XX, RF_RET, RF_TO) = range(7, 12)
(RF_POOL, RF_PTRIED, RF_PQ, RF_PFREE, RF_PABORT, RF_WAITFOR) = range(12, 18)
(RF_CK, RF_CQ, RF_CN, RF_CPAR, RF_CFREE, RF_CRUN, RF_CFAILED, RF_CFST, RF_CFCLIP) = range(18, 27)
(RF_OWNER, RF_SPHASE, RF_REFUSED, RF_ARR, RF_UPD, RF_DUE) = range(27, 33)
# the media lane (sim.run_machine._Media): started, next item, busy, stopped, ok, failed; a
# pause waiting for the item in hand (its step, scene, status), completion waiting for it
(RF_MEDIA, RF_MNEXT, RF_MBUSY, RF_MSTOP, RF_MOK, RF_MFAIL) = range(33, 39)
(RF_DEFER, RF_DSTEP, RF_DK, RF_DSTATUS, RF_COMPLETING) = range(39, 44)
NRF = 44
S_RES, S_FST, S_SKIP, S_READY, S_CLIPS = 0, 1, 2, 3, 4  # per-scene blocks (times n)
# a call's fields: C[run, slot, field] (the call, then the world's flight of its request)
(CF_STATE, CF_STEP, CF_ORDER, CF_CLIP, CF_ATT, CF_POL, CF_DL, CF_SDL, CF_DONE) = range(9)
(FL_PENDING, FL_ACTIVE, FL_KEY, FL_T, FL_END, FL_ST, FL_PST, FL_GIVEUP) = range(9, 17)
NCF = 17
# the cell's settings: P[...]
(P_RUNS, P_N, P_KMAX, P_SLOTS, P_C, P_A, P_MAXC, P_PEROWN, P_FREELLM) = range(9)
(P_CAP0, P_CAP1, P_STALL0, P_STALL1, P_ST5XX0, P_ST5XX1, P_JITFIX) = range(9, 16)
(P_USE429_0, P_USE429_1, P_USE5XX_0, P_USE5XX_1, P_USEF_0, P_USEF_1) = range(16, 22)
(P_OUTLINE_DL, P_AGENTS_DL, P_CONTENT_DL, P_ACTIONS_DL, P_CLIP_DL) = range(22, 27)
(P_AGENTS_AUTO, P_KEEPLOG, P_LOGCAP, P_HCAP, P_BCAP, P_TOPR) = range(27, 33)
(P_O_EXPUS, P_O_PMAX, P_O_RETRIED, P_O_ENDS, P_O_OWN, P_O_QUEUE) = range(33, 39)
(P_CONFIRM, P_SCAN, P_COUNTDOWN, P_REVIEW, P_O_DUE, P_O_TICKS) = range(39, 45)
(P_MEDIA, P_MEDIA_DL, P_O_LAST) = range(45, 48)  # (Q: each key's bucket's last refill)
NP = 48
C_AUTO, C_COUNTDOWN, C_WAIT = 0, 1, 2  # sim.run_server.Confirm
MAX_CONFIRMS_PER_SCAN = 10
# the floats: F[...], then per policy its cap (ms) and jitter, then its exponential part (ms)
(F_P429_0, F_P429_1, F_P5XX_0, F_P5XX_1, F_PF_0, F_PF_1) = range(6)
(F_PRESET_0, F_PRESET_1, F_PRS_0, F_PRS_1, F_JFIX, F_MEDIA_FAIL) = range(6, 12)
# per key its RPM bucket (sim.provider.KeyState): refill per µs (0: none), capacity, tokens
(F_RATE_0, F_RATE_1, F_BCAP_0, F_BCAP_1, F_TOK_0, F_TOK_1) = range(12, 18)
F_POL = 18  # NPOL * (cap_ms, jitter), then NPOL * TOPR exponential parts
# scalars: W[...]
(W_MODE, W_T, W_HN, W_NCUR, W_NNXT, W_NSENDS, W_NEND, W_NLOG, W_RUNNING) = range(9)
(W_QHEAD, W_QTAIL, W_NEEDS, W_NDUE, W_NTICKS, W_CONFREF) = range(9, 15)
W_ERR = 15  # an append that found its array full (ERR_*): the loop returns OVERFLOW
W_NEED0 = 16  # the needs: rows of (step, attempt, kind)
# what overflowed (W[W_ERR]): each fixed-capacity array the loop appends to, checked at each
# append (the loop is compiled without bounds checks: a write past one would go unseen); the
# item is dropped and the loop returns OVERFLOW at its next phase, where Python raises
ERR_HEAP, ERR_ROUND, ERR_NEXT, ERR_SENDS, ERR_ENDS = 1, 2, 3, 4, 5
ERR_QUEUE, ERR_DUE, ERR_TICKS, ERR_NEEDS, ERR_LOG = 6, 7, 8, 9, 10
ERR_NAMES = {
    ERR_HEAP: "the heap (H)",
    ERR_ROUND: "a round's items (B's current row)",
    ERR_NEXT: "the next round's items (B's next row)",
    ERR_SENDS: "a round's requests (B's sends row)",
    ERR_ENDS: "a round's run ends (B's ends row)",
    ERR_QUEUE: "the runs waiting for a worker (Q)",
    ERR_DUE: "the due countdowns (Q)",
    ERR_TICKS: "the pending scan ticks (Q)",
    ERR_NEEDS: "the draw tables asked for (W)",
    ERR_LOG: "the request log (L)",
}
# buffer rows: B[row, i]
B_CUR, B_NXT, B_SENDS, B_EV, B_EVST, B_EVPST, B_END = 0, 1, 2, 3, 4, 5, 6
NB = 7

# the canonical key of an item, one integer (sim.runs_world._item_key's order): a flag (0 an
# answer, 1 a timer), the attempt, the clip, the order, the run, the step + 1 (0: a claim; a
# server item's rank), and whether it is a run's item (1) or the server's (0)
SH_ATT, SH_CLIP, SH_ORDER, SH_RUN, SH_STEP, SH_TOP = 1, 6, 14, 24, 45, 48
LOW24 = (1 << 24) - 1


class Ctx(NamedTuple):
    """Everything the loop reads and writes."""

    P: I64  # the settings (P_*), then integer tables (P_O_*)
    F: F64  # float settings (F_*)
    OFF: I64  # (steps, attempts, kinds): where a drawn table starts in LT or U (-1: not drawn)
    LT: I64  # the latency tables (runs, columns), end to end
    U: F64  # the uniform tables
    R: I64  # (runs, NRF + 5 n): the runs
    C: I64  # (runs, slots, NCF): the calls and their requests' flights
    H: I64  # (2, heap capacity): the heap's times and keys
    B: I64  # (NB, capacity): a round's items, the next round's, its sends, its events, ends
    Q: I64  # key slots' scheduled ends, owners' active runs, the runs waiting for a worker
    W: I64  # scalars (W_*), then the needs
    L: I64  # (capacity, 9): the request log rows


# -- keys ------------------------------------------------------------------------------


@_leaf
def _key(top: int, step1: int, run: int, order: int, clip: int, att: int, flag: int) -> int:
    return (
        (top << SH_TOP)
        | (step1 << SH_STEP)
        | (run << SH_RUN)
        | (order << SH_ORDER)
        | (clip << SH_CLIP)
        | (att << SH_ATT)
        | flag
    )


@_leaf
def _kstep(k: int) -> int:
    return ((k >> SH_STEP) & 7) - 1


@_leaf
def _krun(k: int) -> int:
    return (k >> SH_RUN) & ((1 << 21) - 1)


@_leaf
def _korder(k: int) -> int:
    return (k >> SH_ORDER) & 1023


@_leaf
def _kclip(k: int) -> int:
    return (k >> SH_CLIP) & 255


@_leaf
def _katt(k: int) -> int:
    return (k >> SH_ATT) & 31


@_leaf
def _slot(x: Ctx, step: int, order: int, clip: int) -> int:
    """A call's slot: 0 the serial call (outline, agents, actions), ``1 + k`` content ``k``,
    ``1 + n + j`` clip ``j``, the last the media item in hand."""
    if step == CONTENT:
        return 1 + order
    if step == TTS:
        return 1 + int(x.P[P_N]) + clip
    if step == MEDIA:
        return int(x.P[P_SLOTS]) - 1
    return 0


# -- the heap and the buffers ----------------------------------------------------------


@_leaf
def _less(H: I64, i: int, j: int) -> bool:
    return bool(H[0, i] < H[0, j] or (H[0, i] == H[0, j] and H[1, i] < H[1, j]))


@_leaf
def _swap(H: I64, i: int, j: int) -> None:
    for row in range(2):
        v = H[row, i]
        H[row, i] = H[row, j]
        H[row, j] = v


@_leaf
def _append(x: Ctx, row: int, count: int, err: int, value: int) -> None:
    """``value`` after the ``W[count]`` entries of ``B``'s row ``row``; a full row sets
    ``err`` instead (the loop returns OVERFLOW at its next phase)."""
    n = x.W[count]
    if n >= x.B.shape[1]:
        x.W[W_ERR] = err
        return
    x.B[row, n] = value
    x.W[count] = n + 1


@_leaf
def _push(x: Ctx, at: int, key: int) -> None:
    H, W = x.H, x.W
    i = W[W_HN]
    if i >= H.shape[1]:
        W[W_ERR] = ERR_HEAP
        return
    W[W_HN] = i + 1
    H[0, i] = at
    H[1, i] = key
    while i > 0:
        p = (i - 1) >> 1
        if not _less(H, i, p):
            break
        _swap(H, i, p)
        i = p


@_leaf
def _pop(x: Ctx) -> int:
    """The heap's first item's key (its time is ``H[0, 0]`` before the call)."""
    H, W = x.H, x.W
    key = H[1, 0]
    n = W[W_HN] - 1
    W[W_HN] = n
    H[0, 0] = H[0, n]
    H[1, 0] = H[1, n]
    i = 0
    while True:
        a = 2 * i + 1
        if a >= n:
            break
        b = a + 1
        m = b if b < n and _less(H, b, a) else a
        if not _less(H, m, i):
            break
        _swap(H, i, m)
        i = m
    return int(key)


@_leaf
def _sort(B: I64, row: int, n: int, rows: int) -> None:
    """Sort ``B[row, :n]`` ascending (Shell's sort; the next ``rows - 1`` rows move along)."""
    gap = 1
    while gap < n // 3:
        gap = 3 * gap + 1
    while gap >= 1:
        for i in range(gap, n):
            j = i
            while j >= gap and B[row, j - gap] > B[row, j]:
                for q in range(rows):
                    v = B[row + q, j]
                    B[row + q, j] = B[row + q, j - gap]
                    B[row + q, j - gap] = v
                j -= gap
        gap //= 3


@_leaf
def _at(x: Ctx, t: int, at: int, key: int) -> None:
    """An item at ``at``: the next round of this instant, or the heap."""
    if at <= t:
        _append(x, B_NXT, W_NNXT, ERR_NEXT, key)
    else:
        _push(x, at, key)


# -- draws -----------------------------------------------------------------------------


@_leaf
def _per(x: Ctx, step: int) -> int:
    if step == MEDIA:
        return int(max(1, x.P[P_MEDIA]))
    return int(x.P[P_N] * x.P[P_KMAX]) if step == TTS else int(x.P[P_N])


@_leaf
def _col(x: Ctx, step: int, order: int, clip: int) -> int:
    """:meth:`sim.draws.Draws.column` of a call (a media item's: its index)."""
    if step == MEDIA:
        return order
    o = order % x.P[P_N]
    if step == TTS:
        return int(o * x.P[P_KMAX] + clip % x.P[P_KMAX])
    return int(o)


@_leaf
def _off(x: Ctx, step: int, att: int, kind: int) -> int:
    return int(x.OFF[(step * x.P[P_A] + att) * NK + kind])


@_leaf
def _ask(x: Ctx, step: int, att: int, kind: int) -> bool:
    """Whether a table is drawn; if not, it is asked for (once)."""
    at = (step * x.P[P_A] + att) * NK + kind
    if x.OFF[at] >= 0:
        return True
    if x.OFF[at] == -1:
        n = x.W[W_NEEDS]
        o = W_NEED0 + 3 * n
        if o + 3 > x.W.shape[0]:
            x.W[W_ERR] = ERR_NEEDS
            return False
        x.OFF[at] = -2
        x.W[o] = step
        x.W[o + 1] = att
        x.W[o + 2] = kind
        x.W[W_NEEDS] = n + 1
    return False


@_leaf
def _uses(x: Ctx, kk: int, kind: int) -> bool:
    """Whether key ``kk``'s admission reads uniforms of ``kind``."""
    return bool(x.P[P_USE429_0 + 2 * (kind - 1) + kk] != 0)


@_leaf
def _uni(x: Ctx, step: int, att: int, kind: int, r: int, col: int) -> float:
    return float(x.U[_off(x, step, att, kind) + r * _per(x, step) + col])


# -- the retry rule --------------------------------------------------------------------


@_leaf
def _round_half_even(v: float) -> int:
    """Python's ``round`` of a float."""
    f = math.floor(v)
    d = v - f
    if d > 0.5:
        return int(f) + 1
    if d < 0.5:
        return int(f)
    return int(f) + (int(f) & 1)


@_leaf
def _delay_us(x: Ctx, pol: int, index: int, u: float) -> int:
    """:meth:`sim.rules.RetryPolicy.delay_us` (no Retry-After) before retry ``index``."""
    jit = x.F[F_POL + 2 * pol + 1]
    if jit == 0.0:
        return int(x.P[x.P[P_O_EXPUS] + pol * x.P[P_TOPR] + index])
    cap = x.F[F_POL + 2 * pol]
    exp_ms = x.F[F_POL + 2 * NPOL + pol * x.P[P_TOPR] + index]
    uc = min(max(u, 0.0), 1.0)
    v = min(cap, exp_ms + math.floor(exp_ms * uc * jit))
    return _round_half_even(v * 1000.0)


@_leaf
def _jitter_needed(x: Ctx, r: int, s: int) -> bool:
    """Whether call ``s`` of run ``r``, answered with a failure now, reads a jitter draw."""
    if x.P[P_JITFIX] != 0:
        return False
    pol = x.C[r, s, CF_POL]
    att = x.C[r, s, CF_ATT]
    return bool(x.F[F_POL + 2 * pol + 1] != 0.0 and att < x.P[x.P[P_O_PMAX] + pol])


@_leaf
def _jitter(x: Ctx, r: int, s: int, index: int) -> float:
    if x.P[P_JITFIX] != 0:
        return float(x.F[F_JFIX])
    step, order, clip = x.C[r, s, CF_STEP], x.C[r, s, CF_ORDER], x.C[r, s, CF_CLIP]
    return _uni(x, step, index, K_JIT, r, _col(x, step, order, clip))


# -- the world: requests, cancels, the log ---------------------------------------------


@_leaf
def _log(x: Ctx, t0: int, key: int, status: int, pstatus: int, t: int) -> None:
    if x.P[P_KEEPLOG] == 0:
        return
    n = x.W[W_NLOG]
    x.W[W_NLOG] = n + 1
    if n >= x.P[P_LOGCAP] or n >= x.L.shape[0]:
        x.W[W_ERR] = ERR_LOG  # (a round stops before when its rows may not fit: LOG_FULL)
        return
    L = x.L
    L[n, 0] = t0
    L[n, 1] = _krun(key)
    L[n, 2] = _kstep(key)
    L[n, 3] = _korder(key)
    L[n, 4] = _kclip(key)
    L[n, 5] = _katt(key)
    L[n, 6] = status
    L[n, 7] = pstatus
    L[n, 8] = t


@_leaf
def _free_slot(x: Ctx, kk: int, end: int, t: int) -> None:
    """A slot held to ``end`` is free from ``t`` (its client gave up; ``free_on_give_up``)."""
    cap = x.P[P_CAP0 + kk]
    if cap == 0 or end <= t:
        return
    o = x.P[P_O_ENDS] + kk * max(1, max(x.P[P_CAP0], x.P[P_CAP1]))
    for i in range(cap):
        if x.Q[o + i] == end:
            x.Q[o + i] = t
            return


@_leaf
def _send(x: Ctx, r: int, s: int, t: int) -> None:
    """The call's next attempt: a request of this round (decided after the feeds)."""
    C = x.C
    step, att = C[r, s, CF_STEP], C[r, s, CF_ATT]
    key = _key(1, step + 1, r, C[r, s, CF_ORDER], C[r, s, CF_CLIP], att, 0)
    dl = t + C[r, s, CF_DL]
    sdl = C[r, s, CF_SDL]
    if sdl >= 0 and sdl < dl:
        dl = sdl
    C[r, s, CF_STATE] = INFLIGHT
    C[r, s, FL_PENDING] = 1
    C[r, s, FL_KEY] = key
    C[r, s, FL_END] = dl  # the deadline until it is decided
    _append(x, B_SENDS, W_NSENDS, ERR_SENDS, key)


@_leaf
def _cancel(x: Ctx, r: int, s: int, t: int) -> None:
    """A pause's Cancel of call ``s``'s request: one sent in this round never reaches the
    provider; one in flight is aborted (logged; its slot freed with ``free_on_give_up``)."""
    C = x.C
    key = C[r, s, FL_KEY]
    if C[r, s, FL_PENDING] != 0:
        C[r, s, FL_PENDING] = 0
        n = x.W[W_NSENDS]
        for i in range(n):
            if x.B[B_SENDS, i] == key:
                x.B[B_SENDS, i] = x.B[B_SENDS, n - 1]
                x.W[W_NSENDS] = n - 1
                break
        return
    if C[r, s, FL_ACTIVE] == 0:
        return
    C[r, s, FL_ACTIVE] = 0
    step = _kstep(key)
    if step != TTS and step != MEDIA and x.P[P_FREELLM] != 0:
        _free_slot(x, 0, C[r, s, FL_END], t)
    _log(x, C[r, s, FL_T], key, CANCELLED, 0, t)


@_leaf
def _admit(x: Ctx, t: int, key: int) -> tuple[int, int]:
    """:class:`sim.provider.KeyState`'s decision on a request: (status, latency µs)."""
    step, r, att = _kstep(key), _krun(key), _katt(key)
    if step == MEDIA:  # no key's admission: the item's latency, failed with media_p_fail
        col = _korder(key)
        lat = int(x.LT[_off(x, step, att, K_LAT) + r * _per(x, step) + col])
        failed = _uni(x, step, att, K_FAULT, r, col) < x.F[F_MEDIA_FAIL]
        return (500 if failed else 200), lat
    kk = 1 if step == TTS else 0
    cap = x.P[P_CAP0 + kk]
    o = x.P[P_O_ENDS] + kk * max(1, max(x.P[P_CAP0], x.P[P_CAP1]))
    free = -1
    if cap > 0:
        n = 0
        for i in range(cap):
            if x.Q[o + i] > t:
                n += 1
            else:
                free = i
        if n >= cap:
            return 429, 0
    if x.F[F_RATE_0 + kk] > 0.0 and not _token(x, kk, t):
        return 429, 0
    col = _col(x, step, _korder(key), _kclip(key))
    lat = int(x.LT[_off(x, step, att, K_LAT) + r * _per(x, step) + col])
    u429 = _uni(x, step, att, K_429, r, col) if _uses(x, kk, K_429) else 1.0
    u5xx = _uni(x, step, att, K_5XX, r, col) if _uses(x, kk, K_5XX) else 1.0
    uf = _uni(x, step, att, K_FAULT, r, col) if _uses(x, kk, K_FAULT) else 1.0
    if u429 < x.F[F_P429_0 + kk]:
        return 429, 0
    status = 200
    if u5xx < x.F[F_P5XX_0 + kk]:
        status = int(x.P[P_ST5XX0 + kk])
    elif uf < x.F[F_PF_0 + kk]:
        if uf < x.F[F_PRESET_0 + kk]:
            status = RESET_ST
        elif uf < x.F[F_PRS_0 + kk]:
            lat = int(x.P[P_STALL0 + kk])
        else:
            status = TRUNC_ST
    if cap > 0:
        x.Q[o + free] = t + lat
    return status, lat


@_leaf
def _token(x: Ctx, kk: int, t: int) -> bool:
    """Key ``kk``'s RPM bucket refilled to ``t`` (capped); a token spent if there is one."""
    F = x.F
    last = x.P[P_O_LAST] + kk
    tokens = F[F_TOK_0 + kk] + (t - x.Q[last]) * F[F_RATE_0 + kk]
    F[F_TOK_0 + kk] = tokens if tokens < F[F_BCAP_0 + kk] else F[F_BCAP_0 + kk]
    x.Q[last] = t
    if F[F_TOK_0 + kk] < 1.0:
        return False
    F[F_TOK_0 + kk] -= 1.0
    return True


@_leaf
def _decide(x: Ctx, t: int, key: int) -> None:
    """A request of the round at its key; its answer (or its deadline's 504) scheduled."""
    r = _krun(key)
    s = _slot(x, _kstep(key), _korder(key), _kclip(key))
    C = x.C
    dl = C[r, s, FL_END]
    status, lat = _admit(x, t, key)
    end = t + lat
    C[r, s, FL_PENDING] = 0
    C[r, s, FL_ACTIVE] = 1
    C[r, s, FL_T] = t
    C[r, s, FL_END] = end
    if end > dl:
        C[r, s, FL_ST] = 504
        C[r, s, FL_PST] = 0
        C[r, s, FL_GIVEUP] = 1
        _at(x, t, dl, key)
    else:
        C[r, s, FL_ST] = -1 if status in (RESET_ST, TRUNC_ST) else status
        C[r, s, FL_PST] = status
        C[r, s, FL_GIVEUP] = 0
        _at(x, t, end, key)


@_leaf
def _resolve(x: Ctx, t: int, key: int) -> bool:
    """An answer item: its request resolves (logged); False when it was cancelled before."""
    r = _krun(key)
    s = _slot(x, _kstep(key), _korder(key), _kclip(key))
    C = x.C
    if C[r, s, FL_ACTIVE] == 0 or C[r, s, FL_KEY] != key:
        return False
    C[r, s, FL_ACTIVE] = 0
    step = _kstep(key)
    if C[r, s, FL_GIVEUP] != 0 and step != TTS and step != MEDIA and x.P[P_FREELLM] != 0:
        _free_slot(x, 0, C[r, s, FL_END], t)
    _log(x, C[r, s, FL_T], key, C[r, s, FL_ST], C[r, s, FL_PST], t)
    return True


# -- a run's loop (sim.run_machine.RunMachine) -----------------------------------------


@_leaf
def _start(x: Ctx, r: int, t: int, step: int, order: int, clip: int, done: int) -> None:
    """A new step call (:class:`sim.run_machine._Call`) and its first request."""
    P, C = x.P, x.C
    s = _slot(x, step, order, clip)
    sdl = -1
    if step == OUTLINE:
        pol, dl = POL_OUTLINE, P[P_OUTLINE_DL]
        sdl = t + dl
    elif step == AGENTS:
        pol, dl = POL_ONE, P[P_AGENTS_DL]
    elif step == MEDIA:
        pol, dl = POL_ONE, P[P_MEDIA_DL]
    else:
        pol = POL_FIRST if order == 0 else POL_LATER
        dl = P[P_CONTENT_DL + step]
    C[r, s, CF_STEP] = step
    C[r, s, CF_ORDER] = order
    C[r, s, CF_CLIP] = clip
    C[r, s, CF_ATT] = 0
    C[r, s, CF_POL] = pol
    C[r, s, CF_DL] = dl
    C[r, s, CF_SDL] = sdl
    C[r, s, CF_DONE] = done
    _send(x, r, s, t)


@_leaf
def _retried(x: Ctx, status: int) -> bool:
    """:meth:`sim.rules.RetryPolicy.retries` of the status's outcome."""
    if status < -2 or status > 599:
        return status > 599
    return bool(x.P[x.P[P_O_RETRIED] + status + 2] != 0)


@_leaf
def _count(x: Ctx, r: int, seen: int, pstatus: int) -> None:
    R = x.R
    if seen == 504 and pstatus == 0:
        R[r, RF_TO] += 1
        return
    R[r, RF_REQ] += 1
    if seen == 429:
        R[r, RF_429] += 1
    elif seen >= 500:
        R[r, RF_5XX] += 1


@_leaf
def _on_answer(x: Ctx, r: int, s: int, status: int, pstatus: int, t: int) -> None:
    """:meth:`sim.run_machine._Call.on_answer` with its ungated ``CallMachine``."""
    C = x.C
    index = C[r, s, CF_ATT]
    C[r, s, CF_ATT] = index + 1
    C[r, s, CF_STATE] = IDLE
    if status == 200:
        x.R[r, RF_REQ] += 1
        _done(x, r, s, True, 200, t)
        return
    seen = 500 if status < 0 else (504 if status == 0 else status)
    _count(x, r, seen, pstatus)
    pol = C[r, s, CF_POL]
    sdl = C[r, s, CF_SDL]
    over = sdl >= 0 and t >= sdl
    if not _retried(x, seen) or index >= x.P[x.P[P_O_PMAX] + pol] or over:
        _done(x, r, s, False, seen, t)
        return
    x.R[r, RF_RET] += 1
    wait = _delay_us(x, pol, index, _jitter(x, r, s, index))
    if wait == 0:
        _send(x, r, s, t)
    else:
        C[r, s, CF_STATE] = SLEEPING
        key = _key(1, C[r, s, CF_STEP] + 1, r, C[r, s, CF_ORDER], C[r, s, CF_CLIP], index + 1, 1)
        _push(x, t + wait, key)


@_leaf
def _release(x: Ctx, r: int, phase: int, t: int) -> None:
    """The execution ended (awaiting its outline's confirmation, paused or completed): the
    server hears of it in this round."""
    x.R[r, RF_PHASE] = phase
    if phase != AWAITING:
        x.R[r, RF_END] = t
    _append(x, B_END, W_NEND, ERR_ENDS, r)


@_jit
def _pool_abort(x: Ctx, r: int, t: int) -> None:
    """The pool's calls stopped: in-flight requests cancelled (ascending scene: the pool's
    order), retry sleeps dropped, nothing queued starts."""
    R, C = x.R, x.C
    R[r, RF_PABORT] = 1
    n = x.P[P_N]
    R[r, RF_PQ] = n
    for k in range(1, n):
        st = C[r, 1 + k, CF_STATE]
        if st == IDLE or C[r, 1 + k, CF_DONE] != D_POOL:
            continue
        if st == INFLIGHT:
            _cancel(x, r, 1 + k, t)
        C[r, 1 + k, CF_STATE] = IDLE


@_jit
def _pause(x: Ctx, r: int, step: int, k: int, status: int, t: int) -> None:
    """A pause: the pool aborted; the media lane stopped gently (the pause waits for the item
    in hand), else committed."""
    R = x.R
    if R[r, RF_POOL] != 0:
        _pool_abort(x, r, t)
    if R[r, RF_MEDIA] != 0:
        R[r, RF_MSTOP] = 1
        if R[r, RF_MBUSY] != 0:
            R[r, RF_DEFER] = 1
            R[r, RF_DSTEP] = step
            R[r, RF_DK] = k
            R[r, RF_DSTATUS] = status
            return
    _commit_pause(x, r, step, k, status, t)


@_leaf
def _commit_pause(x: Ctx, r: int, step: int, k: int, status: int, t: int) -> None:
    R = x.R
    R[r, RF_PSTEP] = step
    R[r, RF_PK] = k
    R[r, RF_PSTATUS] = status
    _release(x, r, PAUSED, t)


@_jit
def _finish(x: Ctx, r: int, t: int) -> None:
    """All scenes passed: paused at the lowest skipped scene, else completed."""
    n = x.P[P_N]
    for k in range(n):
        if x.R[r, NRF + S_SKIP * n + k] != 0:
            _pause(x, r, CONTENT, k, x.R[r, NRF + S_FST * n + k], t)
            return
    if _media_busy(x, r):
        x.R[r, RF_COMPLETING] = 1  # completion waits for every item
        return
    _release(x, r, COMPLETED, t)


@_leaf
def _media_busy(x: Ctx, r: int) -> bool:
    """Whether the media lane has started and is not settled (an item in hand, or items
    left and not stopped)."""
    R = x.R
    if R[r, RF_MEDIA] == 0:
        return False
    left = R[r, RF_MSTOP] == 0 and R[r, RF_MNEXT] < x.P[P_MEDIA]
    return bool(R[r, RF_MBUSY] != 0 or left)


@_leaf
def _media_pump(x: Ctx, r: int, t: int) -> None:
    """The next media item, one at a time in order (one attempt each)."""
    R = x.R
    if R[r, RF_MBUSY] != 0 or R[r, RF_MSTOP] != 0 or R[r, RF_MNEXT] >= x.P[P_MEDIA]:
        return
    i = R[r, RF_MNEXT]
    R[r, RF_MNEXT] = i + 1
    R[r, RF_MBUSY] = 1
    _start(x, r, t, MEDIA, i, 0, D_MEDIA)


@_jit
def _media_done(x: Ctx, r: int, ok: bool, t: int) -> None:
    """A media item ended (counted, never a pause); once the lane is settled a deferred pause
    is committed, or a waiting completion done."""
    R = x.R
    if ok:
        R[r, RF_MOK] += 1
    else:
        R[r, RF_MFAIL] += 1
    R[r, RF_MBUSY] = 0
    _media_pump(x, r, t)
    if _media_busy(x, r):
        return
    if R[r, RF_DEFER] != 0:
        R[r, RF_DEFER] = 0
        _commit_pause(x, r, R[r, RF_DSTEP], R[r, RF_DK], R[r, RF_DSTATUS], t)
    elif R[r, RF_COMPLETING] != 0:
        R[r, RF_COMPLETING] = 0
        _finish(x, r, t)


@_jit
def _pool_pump(x: Ctx, r: int, t: int) -> None:
    R = x.R
    n = x.P[P_N]
    while R[r, RF_PFREE] > 0 and R[r, RF_PQ] < n and R[r, RF_PABORT] == 0:
        k = R[r, RF_PQ]
        R[r, RF_PQ] = k + 1
        R[r, RF_PFREE] -= 1
        _start(x, r, t, CONTENT, k, 0, D_POOL)


@_jit
def _content(x: Ctx, r: int, k: int, t: int) -> None:
    """:meth:`sim.run_machine.RunMachine._content` from scene ``k`` (skips looped over)."""
    R, P = x.R, x.P
    n = P[P_N]
    while True:
        if k >= n:
            _finish(x, r, t)
            return
        if k >= 1 and R[r, RF_PTRIED] == 0:
            R[r, RF_PTRIED] = 1
            if P[P_C] > 1 and n - k > 1:
                R[r, RF_POOL] = 1
                R[r, RF_PQ] = k
                R[r, RF_PFREE] = min(P[P_C], n - k)
                _pool_pump(x, r, t)
        if k >= 1 and R[r, RF_POOL] != 0:
            res = R[r, NRF + S_RES * n + k]
            if res == 0:
                R[r, RF_WAITFOR] = k
                return
            if res == 1:
                _start(x, r, t, ACTIONS, k, 0, D_ACTIONS)
                return
            R[r, NRF + S_SKIP * n + k] = 1
            k += 1
            continue
        _start(x, r, t, CONTENT, k, 0, D_CONTENT)
        return


@_jit
def _clips_pump(x: Ctx, r: int, t: int) -> None:
    """:class:`sim.run_machine._Clips`'s pump; the narration's end when all are done."""
    R = x.R
    k = R[r, RF_CK]
    while R[r, RF_CFREE] > 0 and R[r, RF_CQ] < R[r, RF_CN]:
        j = R[r, RF_CQ]
        R[r, RF_CQ] = j + 1
        R[r, RF_CFREE] -= 1
        R[r, RF_CRUN] += 1
        _start(x, r, t, TTS, k, j, D_CLIP)
    if R[r, RF_CRUN] == 0 and R[r, RF_CQ] >= R[r, RF_CN]:
        if R[r, RF_CFAILED] != 0:
            _pause(x, r, TTS, k, R[r, RF_CFST], t)
            return
        n = x.P[P_N]
        R[r, NRF + S_READY * n + k] = t
        if k == 0 and x.P[P_MEDIA] > 0 and R[r, RF_MEDIA] == 0:
            R[r, RF_MEDIA] = 1  # the course exists: the lane starts before scene 1
            _media_pump(x, r, t)
        _content(x, r, k + 1, t)


@_jit
def _clips(x: Ctx, r: int, k: int, t: int) -> None:
    R = x.R
    n = x.P[P_N]
    nc = R[r, NRF + S_CLIPS * n + k]
    c = x.P[P_C]
    par = c > 1 and nc > 1
    R[r, RF_CK] = k
    R[r, RF_CQ] = 0
    R[r, RF_CN] = nc
    R[r, RF_CPAR] = 1 if par else 0
    R[r, RF_CFREE] = min(c, nc) if par else 1
    R[r, RF_CRUN] = 0
    R[r, RF_CFAILED] = 0
    R[r, RF_CFST] = 0
    R[r, RF_CFCLIP] = nc
    _clips_pump(x, r, t)


@_leaf
def _clip_done(x: Ctx, r: int, j: int, ok: bool, status: int, t: int) -> None:
    R = x.R
    R[r, RF_CRUN] -= 1
    R[r, RF_CFREE] += 1
    if not ok and j < R[r, RF_CFCLIP]:
        R[r, RF_CFAILED] = 1
        R[r, RF_CFST] = status
        R[r, RF_CFCLIP] = j
    if not ok and R[r, RF_CPAR] == 0:
        R[r, RF_CQ] = R[r, RF_CN]
    _clips_pump(x, r, t)


@_jit
def _pool_done(x: Ctx, r: int, k: int, ok: bool, status: int, t: int) -> None:
    R = x.R
    n = x.P[P_N]
    R[r, NRF + S_RES * n + k] = 1 if ok else 2
    if not ok:
        R[r, NRF + S_FST * n + k] = status
    R[r, RF_PFREE] += 1
    _pool_pump(x, r, t)
    if R[r, RF_WAITFOR] == k and R[r, RF_PHASE] != PAUSED and R[r, RF_PHASE] != COMPLETED:
        R[r, RF_WAITFOR] = -1
        if ok:
            _start(x, r, t, ACTIONS, k, 0, D_ACTIONS)
        else:
            R[r, NRF + S_SKIP * n + k] = 1
            _content(x, r, k + 1, t)


@_jit
def _done(x: Ctx, r: int, s: int, ok: bool, status: int, t: int) -> None:
    """A call's end, as the loop's callback for it."""
    C, R = x.C, x.R
    kind = C[r, s, CF_DONE]
    k = C[r, s, CF_ORDER]
    if kind == D_OUTLINE:
        if not ok:
            _pause(x, r, OUTLINE, 0, status, t)
        elif x.P[P_CONFIRM] == C_AUTO:
            R[r, RF_PHASE] = GENERATING
            _agents(x, r, t)
        else:
            _release(x, r, AWAITING, t)
    elif kind == D_AGENTS:
        R[r, RF_AGENTS_PRESET] = 0 if ok else 1
        _content(x, r, 0, t)
    elif kind == D_CONTENT:
        if ok:
            _start(x, r, t, ACTIONS, k, 0, D_ACTIONS)
        else:
            _pause(x, r, CONTENT, k, status, t)
    elif kind == D_POOL:
        _pool_done(x, r, k, ok, status, t)
    elif kind == D_ACTIONS:
        if ok:
            _clips(x, r, k, t)
        else:
            _pause(x, r, ACTIONS, k, status, t)
    elif kind == D_CLIP:
        _clip_done(x, r, C[r, s, CF_CLIP], ok, status, t)
    else:
        _media_done(x, r, ok, t)


@_jit
def _agents(x: Ctx, r: int, t: int) -> None:
    if x.P[P_AGENTS_AUTO] == 0:
        _content(x, r, 0, t)
    else:
        _start(x, r, t, AGENTS, 0, 0, D_AGENTS)


@_leaf
def _claimed(x: Ctx, r: int, t: int) -> None:
    """A worker claimed the run: the outline starts, or (its outline confirmed) the rest."""
    R = x.R
    if R[r, RF_CLAIM0] < 0:
        R[r, RF_CLAIM0] = t
    if R[r, RF_PHASE] == PREPARING:
        R[r, RF_PHASE] = OUTLINING
        _start(x, r, t, OUTLINE, 0, 0, D_OUTLINE)
    else:
        R[r, RF_PHASE] = GENERATING
        _agents(x, r, t)


# -- the server (sim.run_server.ServerMachine, confirm = auto) -------------------------


@_leaf
def _enqueue(x: Ctx, r: int, t: int) -> None:
    """Run ``r`` waits for a worker from ``t`` (its ``updated_at``): the queue stays sorted by
    (updated, run), the scan's order (entries come in time order; ties by run)."""
    Q, W, R = x.Q, x.W, x.R
    q = x.P[P_O_QUEUE]
    i = W[W_QTAIL]
    if i >= x.P[P_O_DUE] - q:
        W[W_ERR] = ERR_QUEUE
        return
    W[W_QTAIL] = i + 1
    R[r, RF_UPD] = t
    while i > W[W_QHEAD]:
        p = Q[q + i - 1]
        if R[p, RF_UPD] < t or (R[p, RF_UPD] == t and p < r):
            break
        Q[q + i] = p
        i -= 1
    Q[q + i] = r


@_leaf
def _arm_tick(x: Ctx, due: int) -> None:
    """A scan tick at the first multiple of the scan interval at or after ``due`` (one
    timer per tick)."""
    scan = x.P[P_SCAN]
    tick = (due + scan - 1) // scan * scan
    o = x.P[P_O_TICKS]
    for i in range(x.W[W_NTICKS]):
        if x.Q[o + i] == tick:
            return
    if x.W[W_NTICKS] >= x.P[P_O_LAST] - o:
        x.W[W_ERR] = ERR_TICKS
        return
    x.Q[o + x.W[W_NTICKS]] = tick
    x.W[W_NTICKS] += 1
    _push(x, tick, _key(0, 1, 0, 0, 0, 0, 0))


@_leaf
def _tick(x: Ctx, t: int) -> None:
    """A scan tick fired: it is no longer pending."""
    o = x.P[P_O_TICKS]
    n = x.W[W_NTICKS]
    for i in range(n):
        if x.Q[o + i] == t:
            x.Q[o + i] = x.Q[o + n - 1]
            x.W[W_NTICKS] = n - 1
            return


@_leaf
def _ended(x: Ctx, r: int, t: int) -> None:
    """A run's execution ended: final (it leaves), or awaiting its outline's confirmation
    (the countdown's tick armed, or the learner's review timer set)."""
    P, R = x.P, x.R
    x.W[W_RUNNING] -= 1
    x.Q[P[P_O_OWN] + R[r, RF_OWNER]] -= 1  # no longer active
    if R[r, RF_PHASE] != AWAITING:
        R[r, RF_SPHASE] = -1
        return
    R[r, RF_SPHASE] = AWAITING
    R[r, RF_UPD] = t
    if P[P_CONFIRM] == C_COUNTDOWN:
        R[r, RF_DUE] = t + P[P_COUNTDOWN]
        if x.W[W_NDUE] >= P[P_O_TICKS] - P[P_O_DUE]:
            x.W[W_ERR] = ERR_DUE
            return
        x.Q[P[P_O_DUE] + x.W[W_NDUE]] = r
        x.W[W_NDUE] += 1
        _arm_tick(x, R[r, RF_DUE])
    else:
        _push(x, t + P[P_REVIEW], _key(0, 2, r, 0, 0, 0, 0))


@_leaf
def _review(x: Ctx, r: int, t: int) -> bool:
    """The learner confirms run ``r``'s outline: refused (429, counted; they try again after
    another review) while its owner has ``per_owner`` active runs, else it waits for a
    worker (a wake)."""
    o = x.P[P_O_OWN] + x.R[r, RF_OWNER]
    if x.Q[o] >= x.P[P_PEROWN]:
        x.W[W_CONFREF] += 1
        _push(x, t + x.P[P_REVIEW], _key(0, 2, r, 0, 0, 0, 0))
        return False
    x.Q[o] += 1
    x.R[r, RF_SPHASE] = GENERATING
    _enqueue(x, r, t)
    return True


@_leaf
def _arrive(x: Ctx, r: int, t: int) -> bool:
    o = x.P[P_O_OWN] + x.R[r, RF_OWNER]
    if x.Q[o] >= x.P[P_PEROWN]:
        x.R[r, RF_REFUSED] = 1
        return False
    x.Q[o] += 1
    x.R[r, RF_SPHASE] = PREPARING
    _enqueue(x, r, t)
    return True


@_jit
def _confirm_due(x: Ctx, t: int) -> None:
    """A scan's countdown confirmations: the due outlines, earliest first (then by run), at
    most :data:`MAX_CONFIRMS_PER_SCAN`; a tick armed for the rest."""
    P, Q, R, W = x.P, x.Q, x.R, x.W
    o = P[P_O_DUE]
    n = W[W_NDUE]
    done = 0
    while n > 0:
        best = 0
        for i in range(1, n):
            a, b = Q[o + i], Q[o + best]
            if R[a, RF_DUE] < R[b, RF_DUE] or (R[a, RF_DUE] == R[b, RF_DUE] and a < b):
                best = i
        r = Q[o + best]
        if R[r, RF_DUE] > t:
            _arm_tick(x, R[r, RF_DUE])
            break
        if done >= MAX_CONFIRMS_PER_SCAN:
            _arm_tick(x, t + 1)
            break
        Q[o + best] = Q[o + n - 1]
        n -= 1
        done += 1
        R[r, RF_DUE] = -1
        R[r, RF_SPHASE] = GENERATING
        Q[P[P_O_OWN] + R[r, RF_OWNER]] += 1
        _enqueue(x, r, t)
    W[W_NDUE] = n


@_leaf
def _serve(x: Ctx, t: int) -> None:
    """The round's server events in :func:`sim.run_server.server_event_key` order (the runs'
    ends, the scan ticks, the learners' reviews, the arrivals) and, on a wake, a scan: due
    countdowns confirmed, then waiting runs claimed in (updated, run) order up to the cap."""
    P, W = x.P, x.W
    wake = W[W_NEND] > 0
    for i in range(W[W_NEND]):
        _ended(x, x.B[B_END, i], t)
    W[W_NEND] = 0
    for i in range(W[W_NCUR]):
        key = x.B[B_CUR, i]
        if key >> SH_TOP != 0:
            break  # the server's items come first
        rank = (key >> SH_STEP) & 7
        if rank == 1:
            _tick(x, t)
            wake = True
        elif rank == 2:
            if _review(x, _krun(key), t):
                wake = True
        elif _arrive(x, _krun(key), t):
            wake = True
    if not wake:
        return
    if W[W_NDUE] > 0:
        _confirm_due(x, t)
    while W[W_RUNNING] < P[P_MAXC] and W[W_QHEAD] < W[W_QTAIL]:
        r = x.Q[P[P_O_QUEUE] + W[W_QHEAD]]
        W[W_QHEAD] += 1
        W[W_RUNNING] += 1
        if x.R[r, RF_SPHASE] == PREPARING:
            x.R[r, RF_SPHASE] = OUTLINING
        _at(x, t, t, _key(1, 0, r, 0, 0, 0, 0))


# -- one round -------------------------------------------------------------------------


@_leaf
def _feed_ready(x: Ctx) -> bool:
    """Whether every jitter draw the round's feeds may read is there (else asked for)."""
    ok = True
    C = x.C
    for i in range(x.W[W_NCUR]):
        key = x.B[B_CUR, i]
        if key >> SH_TOP == 0 or key & 1 != 0 or _kstep(key) < 0:
            continue
        r = _krun(key)
        s = _slot(x, _kstep(key), _korder(key), _kclip(key))
        if C[r, s, FL_ACTIVE] == 0 or C[r, s, FL_KEY] != key or C[r, s, FL_ST] == 200:
            continue
        if _jitter_needed(x, r, s) and not _ask(x, _kstep(key), _katt(key), K_JIT):
            ok = False
    return ok


@_leaf
def _gather(x: Ctx, t: int) -> int:
    """The round's run events (answers resolved and logged on the way), by run then
    canonical order, in the event rows; their count."""
    B, C = x.B, x.C
    nev = 0
    for i in range(x.W[W_NCUR]):
        key = B[B_CUR, i]
        if key >> SH_TOP == 0:
            continue
        step1 = (key >> SH_STEP) & 7
        st, pst = 0, 0
        if step1 != 0 and key & 1 == 0:
            if not _resolve(x, t, key):
                continue
            r = _krun(key)
            s = _slot(x, step1 - 1, _korder(key), _kclip(key))
            st, pst = C[r, s, FL_ST], C[r, s, FL_PST]
        B[B_EV, nev] = (_krun(key) << 27) | (step1 << 24) | (key & LOW24)
        B[B_EVST, nev] = st
        B[B_EVPST, nev] = pst
        nev += 1
    _sort(B, B_EV, nev, 3)
    return nev


@_leaf
def _deliver(x: Ctx, t: int, ev: int, st: int, pst: int) -> None:
    """One event to its run: a claim, a timer, an answer (dropped when the call no longer
    waits for it: aborted by a pause)."""
    r = ev >> 27
    step = ((ev >> 24) & 7) - 1
    if step < 0:
        _claimed(x, r, t)
        return
    order, clip, att = (ev >> SH_ORDER) & 1023, (ev >> SH_CLIP) & 255, (ev >> SH_ATT) & 31
    s = _slot(x, step, order, clip)
    C = x.C
    if ev & 1 != 0:
        if C[r, s, CF_STATE] == SLEEPING and C[r, s, CF_ATT] == att:
            _send(x, r, s, t)
        return
    if C[r, s, CF_STATE] == INFLIGHT and C[r, s, FL_KEY] == _key(
        1, step + 1, r, order, clip, att, 0
    ):
        _on_answer(x, r, s, st, pst, t)


@_leaf
def _feed(x: Ctx) -> int:
    """A round's feeds and the server; NEED / LOG_FULL (nothing done yet) or DONE."""
    W = x.W
    if x.P[P_KEEPLOG] != 0 and x.P[P_LOGCAP] - W[W_NLOG] < W[W_NCUR] * (1 + x.P[P_C]) + 1:
        return LOG_FULL
    if not _feed_ready(x):
        return NEED
    t = W[W_T]
    nev = _gather(x, t)
    for i in range(nev):
        _deliver(x, t, x.B[B_EV, i], x.B[B_EVST, i], x.B[B_EVPST, i])
    _serve(x, t)
    return DONE


@_leaf
def _decide_ready(x: Ctx) -> bool:
    """Whether every admission draw the round's requests may read is there."""
    ok = True
    for i in range(x.W[W_NSENDS]):
        key = x.B[B_SENDS, i]
        step, att = _kstep(key), _katt(key)
        kk = 1 if step == TTS else 0
        if not _ask(x, step, att, K_LAT):
            ok = False
        if step == MEDIA:
            if not _ask(x, step, att, K_FAULT):
                ok = False
            continue
        for kind in (K_429, K_5XX, K_FAULT):
            if _uses(x, kk, kind) and not _ask(x, step, att, kind):
                ok = False
    return ok


@_leaf
def _decide_all(x: Ctx) -> None:
    """The round's requests decided in ``(step, run, order, clip, attempt)`` order; the next
    round's items sorted into the round's row."""
    W, B = x.W, x.B
    n = W[W_NSENDS]
    _sort(B, B_SENDS, n, 1)
    t = W[W_T]
    for i in range(n):
        _decide(x, t, B[B_SENDS, i])
    W[W_NSENDS] = 0
    m = W[W_NNXT]
    for i in range(m):
        B[B_CUR, i] = B[B_NXT, i]
    W[W_NNXT] = 0
    _sort(B, B_CUR, m, 1)
    W[W_NCUR] = m
    W[W_MODE] = M_FEED if m > 0 else M_INSTANT


@_jit
def run_cell(x: Ctx) -> int:
    """Run the cell from where it stands to its end (DONE), or until a draw is missing
    (NEED: the needs listed in ``W``) or the log is full (LOG_FULL); call again after. An
    append to a full array (W[W_ERR]) ends it (OVERFLOW: a bug, not to be resumed)."""
    W, H = x.W, x.H
    while True:
        if W[W_ERR] != 0:
            return OVERFLOW
        mode = W[W_MODE]
        if mode == M_INSTANT:
            if W[W_HN] == 0:
                return DONE
            t = H[0, 0]
            W[W_T] = t
            n = 0
            while W[W_HN] > 0 and H[0, 0] == t:
                if n >= x.B.shape[1]:
                    W[W_ERR] = ERR_ROUND
                    return OVERFLOW
                x.B[B_CUR, n] = _pop(x)
                n += 1
            W[W_NCUR] = n
            W[W_MODE] = M_FEED
        elif mode == M_FEED:
            code = _feed(x)
            if code != DONE:
                return code
            W[W_MODE] = M_DECIDE
        else:
            if not _decide_ready(x):
                return NEED
            _decide_all(x)
