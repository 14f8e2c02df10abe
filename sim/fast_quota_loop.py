"""The limited-key engine's compiled loop (:mod:`sim.fast_quota`, issue 24): one run at a time.

With ``tenants == 1`` runs never meet, so each run is simulated on its own by a scalar loop
compiled with numba (``cache=True``: compiled on first use, then loaded from numba's on-disk
cache). Per run it keeps what SimPy's processes keep — the loop, the content workers, the
within-scene TTS workers — as *callers* (slots of ``Ctx.S``): slot 0 the loop's own calls,
slots ``1 .. w`` the content workers, the rest the TTS workers. Each run goes through SimPy's
*rounds* of an instant: every zero-time consequence of the instant's events first (passes over
the callers due now, in slot order), then the arrivals on a limited key decided together in
:func:`sim.provider.arrival_order`; answers given at once (429) make the next round at the
same instant. :mod:`sim.fast_quota` documents the rules; this module only runs them.

Draws are read from tables :mod:`sim.fast_quota` fills from :class:`sim.draws.Draws` (the same
numbers SimPy reads), each drawn whole or cell by cell (a cell not drawn holds -1, or NaN for
a jitter: :func:`_drawn_at`). Draws beyond attempt 0 are made as runs reach them: before each
round a run checks that every draw the round may read is there (without zero-time retry chains,
a caller reads at most its next attempt and its next jitter in one round); if one is missing
the run is *suspended* (its state stays in :class:`Ctx`), the missing draws are listed there
(table, key, step, attempt, cell), and the run resumes at that round once
:mod:`sim.fast_quota` has drawn them.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import NDArray

from .compiled import jit as _jit
from .compiled import leaf as _leaf
from .fast_quota_codes import (
    ACTIONS,
    C_5XX,
    C_RAND,
    C_RESET,
    C_STALL,
    C_TRUNC,
    COMPLETED,
    CONTENT,
    FIRST_FAILED,
    PAUSED,
    RESET,
    RS_5XX,
    RS_INFL,
    RS_OK,
    RS_RAND,
    RS_RESET,
    RS_STALL,
    RS_TRUNC,
    TRUNCATED,
    TTS,
)

__all__ = ["Ctx", "all_drawn", "codes_compiled_in", "recompile_if_stale", "run_runs"]

I64 = NDArray[np.int64]
F64 = NDArray[np.float64]


INF = 2**62
# caller phases
IDLE, ARRIVE, FLIGHT, SLEEP, RSLEEP = 0, 1, 2, 3, 4
# the loop's states, and the kind of call its own caller runs
L_CALL, L_TTS, L_AWAIT, L_HYB, L_DONE = 0, 1, 2, 3, 4
K_FGC, K_SERC, K_ACT = 0, 1, 2
# run stages
ST_NEW, ST_RUN, ST_DONE, ST_DROPPED = 0, 1, 2, 3
SHAPE_DIRECT, SHAPE_ROUTE, SHAPE_STATUS = 0, 1, 2
JIT_ZERO, JIT_FIXED, JIT_TABLE = 0, 1, 2
# tables (``Ctx.have``'s first index) and a need's row: kind, key, step within key, attempt, cell
T_LAT, T_CODE, T_JIT = 0, 1, 2

# a caller's fields: Ctx.S[run, slot, field]
(F_PH, F_WAKE, F_STEP, F_ORDER, F_CLIP, F_PID, F_ATT, F_USED, F_FIRST, F_DL, F_DBASE) = range(11)
(F_DST, F_DRA, F_PREQ, F_P429, F_P5XX, F_PRET) = range(11, 17)
NF = 17
# a run's fields: Ctx.R[run, field]
(R_STAGE, R_NOW, R_LST, R_LKIND, R_LI, R_CNEXT, R_TNEXT, R_TBUSY, R_TOK) = range(9)
(R_STATUS, R_END, R_CFAIL, R_PAUSED, R_REQ, R_429, R_5XX, R_RET, R_WOKEN) = range(9, 18)
NR = 18
# the cell's settings: Ctx.P[...]
(P_N, P_KMAX, P_S, P_W, P_REPS, P_A, P_AJ, P_PER0, P_PER1, P_TIMEOUT) = range(10)
(P_FG, P_FGC, P_TTSC, P_FIRST, P_PAR, P_HYB, P_PAUSES, P_FAULTY) = range(10, 18)
(P_LIM0, P_LIM1, P_CAP0, P_CAP1, P_STALL0, P_STALL1, P_RA0, P_RA1) = range(18, 26)
(P_SHAPE, P_ROUTE, P_NEEDS_RA, P_RANK0, P_RANK1, P_RANK2, P_RECORDS, P_JIT) = range(26, 34)
(P_CHAIN, P_DRAWN0, P_DRAWN1, P_LOGCAP) = range(34, 38)
(P_CAPMAX, P_NPOL, P_TOP, P_NCAP) = range(38, 42)
# where the arrays below start: in T (latencies and codes per key, drawn tables), in F (the
# fixed jitter, the waits' parts, the jitter draws per key), in P (after the settings: the
# waits' parts, per key and code the status answered, per status + 2 (-2 .. 599) whether
# RetryPolicy.retries its outcome and whether it is a rate limit); each ends where the next
# starts
(P_OT0, P_OT1, P_OT2, P_OT3, P_OT4, P_OT5) = range(42, 48)
(P_OF1, P_OF2, P_OF3, P_OF4, P_OF5) = range(48, 53)
(P_OP1, P_OP2, P_OP3, P_OP4, P_OP5, P_OP6) = range(53, 59)
NP = 59
# W[0:3] (CT_*): rows logged (may pass the log's capacity: then sim.fast_quota runs again
# with more), needs listed, a draw read before it was drawn (a bug: sim.fast_quota raises);
# then scratch, then the needs (rows: table, key, step within key, attempt, flat cell)
CT_LOG, CT_NEEDS, CT_ERR = 0, 1, 2
# a wait set's policy fields (set 0 the client's, 1 the route's; policy step * 2 + fg)
WF_CAP_MS, WF_RA_CAP_US, WF_JITTER = 0, 1, 2
WI_HONOUR, WI_MAX = 0, 1


class Ctx(NamedTuple):
    """Everything the loop reads and writes, in seven arrays (every compiled function takes
    them as its first arguments: few arguments keep numba's calls and compile time small)."""

    P: I64  # the cell's settings (P_*), then integer tables (P_OP*)
    F: F64  # float tables (P_OF*)
    T: I64  # the draw tables (P_OT*): latencies (TTS: -1 not drawn), codes, drawn flags
    S: I64  # (runs, slots, NF): the callers
    R: I64  # (runs, NR + 4 outlines + 2 max cap): the runs; per outline its content (0
    # pending, 1 ok, 2 failed: parallel loops), when the scene was added (-1 never), failed,
    # speech clips; per key and in-flight slot its scheduled end
    W: I64  # counters, scratch, needs (CT_*)
    L: I64  # (capacity, 10): the requests logged (run, step, order, clip, attempt, t, end,
    # status, in flight at arrival, reason)


# -- draws ------------------------------------------------------------------------------


@_leaf
def _key(step: int) -> int:
    return 1 if step == TTS else 0


@_leaf
def _si(step: int) -> int:
    """The step's index within its key's tables."""
    return 0 if step == TTS else step


@_leaf
def _stride(P: I64, F: F64, T: I64, S: I64, R: I64, W: I64, L: I64, key: int) -> int:
    return int(P[P_REPS] * (P[P_PER1] if key else P[P_PER0]))


@_leaf
def _flag(P: I64, kind: int, key: int, si: int, a: int) -> int:
    """Where table (``kind``, ``key``, ``si``, ``a``)'s flag is in T: 0 not drawn, 1 drawn
    whole, 3 drawn cell by cell (:func:`_drawn_at`)."""
    return int(P[P_OT4] + ((kind * 2 + key) * 2 + si) * P[P_A] + a)


@_leaf
def _jit_of(P: I64, key: int, si: int, at: int) -> int:
    """The jitter table's flat index of cell ``at`` (a latency table's: the same run,
    column and attempt): the actions' jitter has fewer attempts before it than its
    latencies."""
    if key == 0 and si == 1:
        return int(at - (P[P_A] - P[P_AJ]) * P[P_REPS] * P[P_PER0])
    return at


@_leaf
def _drawn_at(P: I64, F: F64, T: I64, kind: int, key: int, si: int, a: int, at: int) -> bool:
    """Whether cell ``at`` (flat, in a latency table's layout) of table (``kind``, ``key``,
    ``si``, ``a``) is drawn: the table whole, or cell by cell and this cell (a latency or a
    code not negative, a jitter not NaN)."""
    f = T[_flag(P, kind, key, si, a)]
    if f != 3:
        return bool(f == 1)
    if kind == T_LAT:
        return bool(T[P[P_OT0 + key] + at] >= 0)
    if kind == T_CODE:
        return bool(T[P[P_OT2 + key] + at] >= 0)
    x = F[P[P_OF3 + key] + _jit_of(P, key, si, at)]
    return bool(x == x)


@_leaf
def _ask(
    P: I64,
    F: F64,
    T: I64,
    S: I64,
    R: I64,
    W: I64,
    L: I64,
    kind: int,
    key: int,
    si: int,
    a: int,
    at: int,
) -> bool:
    """Whether cell ``at`` of table (``kind``, ``key``, ``si``, ``a``) is drawn; if not, it is
    asked for (a need: table, key, step within key, attempt, cell)."""
    if _drawn_at(P, F, T, kind, key, si, a, at):
        return True
    n = W[CT_NEEDS]
    if n < P[P_NCAP]:
        o = 4 + 7 * P[P_S] + n * 5
        W[o] = kind
        W[o + 1] = key
        W[o + 2] = si
        W[o + 3] = a
        W[o + 4] = at
    W[CT_NEEDS] = n + 1
    return False


@_leaf
def _wi(P: I64, ws: int, pid: int, field: int) -> int:
    """A wait set's policy field (WI_*)."""
    return int(P[P[P_OP2] + (ws * P[P_NPOL] + pid) * 2 + field])


@_leaf
def _round_draws(P: I64, F: F64, T: I64, S: I64, R: I64, W: I64, L: I64, r: int, m: int) -> bool:
    """Whether every draw the round may read is there (else they are asked for): the ``m``
    callers due now are listed in ``W`` (:func:`_run`)."""
    ok = True
    for i in range(m):
        j = W[4 + 5 * P[P_S] + i]
        ph = S[r, j, F_PH]
        if ph == IDLE:
            continue
        step = S[r, j, F_STEP]
        key, si = _key(step), _si(step)
        base = S[r, j, F_DBASE]
        stride = _stride(P, F, T, S, R, W, L, key)
        if ph != FLIGHT:  # decided this round at its next attempt
            a = S[r, j, F_ATT]
            at = base + a * stride
            if not _ask(P, F, T, S, R, W, L, T_LAT, key, si, a, at):
                ok = False
            drawn = P[P_DRAWN0 + key] != 0
            if drawn and not _ask(P, F, T, S, R, W, L, T_CODE, key, si, a, at):
                ok = False
        used = S[r, j, F_USED]
        if P[P_JIT] != JIT_TABLE or used >= _wi(P, 0, S[r, j, F_PID], WI_MAX):
            continue  # no jitter draw, or no retry left to read one
        if not _ask(P, F, T, S, R, W, L, T_JIT, key, si, used, base + used * stride):
            ok = False
    return ok


@_jit
def _attempt(
    P: I64, F: F64, T: I64, S: I64, R: I64, W: I64, L: I64, r: int, j: int, key: int
) -> tuple[int, int]:
    """Caller ``j``'s next attempt: its drawn latency and code."""
    step = S[r, j, F_STEP]
    a = S[r, j, F_ATT]
    at = S[r, j, F_DBASE] + a * _stride(P, F, T, S, R, W, L, key)
    if not _drawn_at(P, F, T, T_LAT, key, _si(step), a, at):
        W[CT_ERR] = 1
    lat = T[P[P_OT1] + at] if key else T[P[P_OT0] + at]
    code = 0
    if P[P_DRAWN0 + key] != 0:
        if not _drawn_at(P, F, T, T_CODE, key, _si(step), a, at):
            W[CT_ERR] = 1
        code = T[P[P_OT3] + at] if key else T[P[P_OT2] + at]
        if code == C_STALL:
            lat = P[P_STALL0 + key]
    return int(lat), int(code)


@_leaf
def _jitter(
    P: I64, F: F64, T: I64, S: I64, R: I64, W: I64, L: I64, r: int, j: int, used: int
) -> float:
    mode = P[P_JIT]
    if mode == JIT_FIXED:
        return float(F[0])
    if mode == JIT_ZERO:
        return 0.0
    step = S[r, j, F_STEP]
    key = _key(step)
    at = S[r, j, F_DBASE] + used * _stride(P, F, T, S, R, W, L, key)
    if not _drawn_at(P, F, T, T_JIT, key, _si(step), used, at):
        W[CT_ERR] = 1
    return float(F[P[P_OF3 + key] + _jit_of(P, key, _si(step), at)])


@_leaf
def _wait(
    P: I64,
    F: F64,
    T: I64,
    S: I64,
    R: I64,
    W: I64,
    L: I64,
    ws: int,
    pid: int,
    index: int,
    ra: int,
    rate: bool,
    u: float,
) -> int:
    """:meth:`RetryPolicy.delay_us` of policy ``pid`` of wait set ``ws`` (0 the client's, 1
    the route's) before retry ``index``, after a Retry-After of ``ra`` µs (-1 none)."""
    exp_us = int(P[P[P_OP1] + (ws * P[P_NPOL] + pid) * P[P_TOP] + index])
    out = exp_us
    jit = F[P[P_OF2] + (ws * P[P_NPOL] + pid) * 3 + WF_JITTER]
    if jit != 0:
        exp_ms = F[P[P_OF1] + (ws * P[P_NPOL] + pid) * P[P_TOP] + index]
        uc = min(max(u, 0.0), 1.0)
        jj = min(
            F[P[P_OF2] + (ws * P[P_NPOL] + pid) * 3 + WF_CAP_MS],
            exp_ms + math.floor(exp_ms * uc * jit),
        )
        out = int(np.rint(jj * 1000.0))
    honour = P[P[P_OP2] + (ws * P[P_NPOL] + pid) * 2 + WI_HONOUR] != 0 and rate and ra >= 0
    if honour and (ra < F[P[P_OF2] + (ws * P[P_NPOL] + pid) * 3 + WF_RA_CAP_US] or ra < exp_us):
        out = ra
    return out


# -- callers ----------------------------------------------------------------------------


@_leaf
def _arrive(P: I64, F: F64, T: I64, S: I64, R: I64, W: I64, L: I64, r: int, j: int, t: int) -> None:
    """Caller ``j`` reaches the provider at ``t`` (now): on a key without a limit it is due
    at once; on a limited key it waits for the round's batch."""
    S[r, j, F_PH] = ARRIVE
    if P[P_LIM0 + _key(S[r, j, F_STEP])] != 0:
        S[r, j, F_WAKE] = INF
        n = W[3 + 0]
        W[3 + 1 + n] = j
        W[3 + 0] = n + 1
    else:
        S[r, j, F_WAKE] = t


@_jit
def _start(
    P: I64,
    F: F64,
    T: I64,
    S: I64,
    R: I64,
    W: I64,
    L: I64,
    r: int,
    j: int,
    step: int,
    order: int,
    clip: int,
    fg: int,
) -> None:
    """Caller ``j`` begins a step call (attempt 0, a fresh retry budget)."""
    S[r, j, F_STEP] = step
    S[r, j, F_ORDER] = order
    S[r, j, F_CLIP] = clip
    S[r, j, F_PID] = 2 * step + fg
    S[r, j, F_ATT] = 0
    S[r, j, F_USED] = 0
    if step == TTS:
        S[r, j, F_DBASE] = r * P[P_PER1] + order * P[P_KMAX] + clip
    else:
        S[r, j, F_DBASE] = (step * P[P_A] * P[P_REPS] + r) * P[P_PER0] + order
    _request(P, F, T, S, R, W, L, r, j)


@_leaf
def _request(P: I64, F: F64, T: I64, S: I64, R: I64, W: I64, L: I64, r: int, j: int) -> None:
    """Caller ``j`` sends a new client request now (its own deadline and counts)."""
    t = R[r, R_NOW]
    S[r, j, F_DL] = t + P[P_TIMEOUT]
    if P[P_ROUTE] != 0:
        S[r, j, F_FIRST] = S[r, j, F_ATT]
        for f in range(F_PREQ, F_PRET + 1):
            S[r, j, f] = 0
    _arrive(P, F, T, S, R, W, L, r, j, t)


@_leaf
def _idle(P: I64, F: F64, T: I64, S: I64, R: I64, W: I64, L: I64, r: int, j: int) -> None:
    S[r, j, F_PH] = IDLE
    S[r, j, F_WAKE] = INF


@_leaf
def _reason(code: int) -> int:
    if code == C_RAND:
        return RS_RAND
    if code == C_5XX:
        return RS_5XX
    if code == C_RESET:
        return RS_RESET
    if code == C_STALL:
        return RS_STALL
    if code == C_TRUNC:
        return RS_TRUNC
    return RS_OK


@_leaf
def _log(
    P: I64,
    F: F64,
    T: I64,
    S: I64,
    R: I64,
    W: I64,
    L: I64,
    r: int,
    j: int,
    end: int,
    status: int,
    nin: int,
    reason: int,
) -> None:
    n = W[CT_LOG]
    if n < P[P_LOGCAP]:
        row = L[n]
        row[0] = r
        row[1] = S[r, j, F_STEP]
        row[2] = S[r, j, F_ORDER]
        row[3] = S[r, j, F_CLIP]
        row[4] = S[r, j, F_ATT]
        row[5] = R[r, R_NOW]
        row[6] = end
        row[7] = status
        row[8] = nin
        row[9] = reason
    W[CT_LOG] = n + 1


@_jit
def _settle(
    P: I64,
    F: F64,
    T: I64,
    S: I64,
    R: I64,
    W: I64,
    L: I64,
    r: int,
    j: int,
    key: int,
    lat: int,
    code: int,
    nin: int,
    over: bool,
) -> None:
    """Caller ``j``'s attempt decided (:meth:`KeyState.decide`'s rules): in flight to its
    end; a request the client would give up on hands the run to SimPy."""
    status = P[P[P_OP3] + key * 6 + code]
    if over:
        status = 429
    adm = not over and code != C_RAND
    if not adm:
        lat = 0
    t = R[r, R_NOW]
    end = t + lat
    if adm and end > S[r, j, F_DL]:
        R[r, R_STAGE] = ST_DROPPED
    if P[P_RECORDS] != 0:
        _log(P, F, T, S, R, W, L, r, j, end, status, nin, RS_INFL if over else _reason(code))
    S[r, j, F_ATT] += 1
    S[r, j, F_DST] = status
    if P[P_NEEDS_RA] != 0:
        S[r, j, F_DRA] = P[P_RA0 + key] if status == 429 else -1
    S[r, j, F_PH] = FLIGHT
    S[r, j, F_WAKE] = end


@_leaf
def _decide_open(
    P: I64, F: F64, T: I64, S: I64, R: I64, W: I64, L: I64, r: int, j: int, key: int
) -> None:
    """An arrival on a key without a limit, decided on arrival."""
    lat, code = _attempt(P, F, T, S, R, W, L, r, j, key)
    _settle(P, F, T, S, R, W, L, r, j, key, lat, code, -1, False)


@_leaf
def _canon(P: I64, F: F64, T: I64, S: I64, R: I64, W: I64, L: I64, r: int, j: int) -> int:
    """:func:`sim.provider.arrival_order` within one run, as one number."""
    step = S[r, j, F_STEP]
    out = (P[P_RANK0 + step] * 100_000 + S[r, j, F_ORDER]) * 10_000 + S[r, j, F_CLIP]
    return int(out * 100_000 + S[r, j, F_ATT])


@_leaf
def _batch(
    P: I64, F: F64, T: I64, S: I64, R: I64, W: I64, L: I64, r: int, key: int, js: I64, m: int
) -> None:
    """The ``m`` arrivals ``js`` on limited key ``key`` at one instant, in arrival order:
    each sees the slots the earlier ones took; an arrival below the cap takes one unless a
    random 429; it holds it to its end (ends at ``t`` are free for arrivals at ``t``)."""
    keys = W[4 + 4 * P[P_S] : 4 + 5 * P[P_S]]  # free while a batch is decided
    for a in range(m):
        keys[a] = _canon(P, F, T, S, R, W, L, r, js[a])
    for a in range(1, m):  # insertion sort by arrival order (a few callers; a total order)
        x = js[a]
        cx = keys[a]
        b = a - 1
        while b >= 0 and keys[b] > cx:
            js[b + 1] = js[b]
            keys[b + 1] = keys[b]
            b -= 1
        js[b + 1] = x
        keys[b + 1] = cx
    cap = P[P_CAP0 + key]
    t = R[r, R_NOW]
    n0 = 0
    for k in range(cap):
        if R[r, NR + 4 * P[P_N] + key * P[P_CAPMAX] + k] > t:
            n0 += 1
    inc_before = 0
    for a in range(m):
        j = js[a]
        lat, code = _attempt(P, F, T, S, R, W, L, r, j, key)
        inc = code != C_RAND and lat > 0
        nin = min(cap, n0 + inc_before)
        if inc and nin < cap:
            for k in range(cap):  # the first free slot
                if R[r, NR + 4 * P[P_N] + key * P[P_CAPMAX] + k] <= t:
                    R[r, NR + 4 * P[P_N] + key * P[P_CAPMAX] + k] = t + lat
                    break
        if inc:
            inc_before += 1
        _settle(P, F, T, S, R, W, L, r, j, key, lat, code, nin, nin >= cap)


# -- the client -------------------------------------------------------------------------


@_jit
def _client(
    P: I64, F: F64, T: I64, S: I64, R: I64, W: I64, L: I64, r: int, j: int, status: int, ra: int
) -> bool:
    """:meth:`CallMachine.step` (ungated) on caller ``j``'s failed request: it retries after
    its wait (False) or its call failed (True)."""
    pid = S[r, j, F_PID]
    used = S[r, j, F_USED]
    if not (
        P[P[P_OP4] + status + 2] != 0 and used < P[P[P_OP2] + (0 * P[P_NPOL] + pid) * 2 + WI_MAX]
    ):
        return True
    u = _jitter(P, F, T, S, R, W, L, r, j, used)
    w = _wait(P, F, T, S, R, W, L, 0, pid, used, ra, P[P[P_OP5] + status + 2] != 0, u)
    S[r, j, F_USED] = used + 1
    R[r, R_RET] += 1
    S[r, j, F_PH] = SLEEP
    S[r, j, F_WAKE] = R[r, R_NOW] + w
    return False


@_leaf
def _add_request(P: I64, F: F64, T: I64, S: I64, R: I64, W: I64, L: I64, r: int, j: int) -> None:
    """A request's counts (its route's attempts) join the run's."""
    R[r, R_REQ] += S[r, j, F_PREQ]
    R[r, R_429] += S[r, j, F_P429]
    R[r, R_5XX] += S[r, j, F_P5XX]
    R[r, R_RET] += S[r, j, F_PRET]


@_leaf
def _route(
    P: I64, F: F64, T: I64, S: I64, R: I64, W: I64, L: I64, r: int, j: int, seen: int
) -> bool:
    """The route's retries (profiles before #788) of caller ``j``'s failed attempt: it sleeps
    (True; or times out: SimPy's), or the request ends and its counts are added (False)."""
    pid = S[r, j, F_PID]
    index = S[r, j, F_ATT] - 1 - S[r, j, F_FIRST]
    if P[P[P_OP4] + seen + 2] != 0 and index < P[P[P_OP2] + (1 * P[P_NPOL] + pid) * 2 + WI_MAX]:
        w = _wait(
            P, F, T, S, R, W, L, 1, pid, index, S[r, j, F_DRA], P[P[P_OP5] + seen + 2] != 0, 0.0
        )
        t = R[r, R_NOW]
        if t + w >= S[r, j, F_DL]:
            R[r, R_STAGE] = ST_DROPPED
        S[r, j, F_PRET] += 1
        S[r, j, F_PH] = RSLEEP
        S[r, j, F_WAKE] = t + w
        return True
    _add_request(P, F, T, S, R, W, L, r, j)
    return False


@_leaf
def _route_status(
    P: I64, F: F64, T: I64, S: I64, R: I64, W: I64, L: I64, step: int, seen: int
) -> int:
    """:func:`sim.upstream.route_status`."""
    shape = P[P_SHAPE]
    if shape == SHAPE_DIRECT:
        return seen
    if shape == SHAPE_ROUTE:
        return 500
    if step == TTS:
        return 429 if seen == 429 else 500
    return seen if 400 <= seen <= 599 else 500


@_leaf
def _answer(P: I64, F: F64, T: I64, S: I64, R: I64, W: I64, L: I64, r: int, j: int) -> int:
    """Caller ``j`` got its answer now: the route's and the client's retry rules. Returns 1
    (its call ended ok), 2 (its call failed) or 0 (it retries)."""
    st = S[r, j, F_DST]
    route = P[P_ROUTE] != 0
    if st == 200:
        R[r, R_REQ] += 1
        if route:  # with the request's route-retried attempts
            _add_request(P, F, T, S, R, W, L, r, j)
        return 1
    if P[P_FAULTY] != 0 and st in (RESET, TRUNCATED):
        R[r, R_REQ] += 1  # the client learns of one request
        seen = -1 if st == RESET else -2
        return 2 if _client(P, F, T, S, R, W, L, r, j, seen, -1) else 0
    if route:  # the request's counts wait for its end (or its timeout)
        S[r, j, F_PREQ] += 1
        S[r, j, F_P429] += st == 429
        S[r, j, F_P5XX] += st >= 500
        if _route(P, F, T, S, R, W, L, r, j, st):
            return 0
    else:  # one attempt per request: its end
        R[r, R_REQ] += 1
        R[r, R_429] += st == 429
        R[r, R_5XX] += st >= 500
    ra = S[r, j, F_DRA] if P[P_SHAPE] == SHAPE_DIRECT else -1
    return (
        2
        if _client(
            P, F, T, S, R, W, L, r, j, _route_status(P, F, T, S, R, W, L, S[r, j, F_STEP], st), ra
        )
        else 0
    )


# -- the loop ---------------------------------------------------------------------------


@_leaf
def _finish(P: I64, F: F64, T: I64, S: I64, R: I64, W: I64, L: I64, r: int, status: int) -> None:
    R[r, R_STATUS] = status
    R[r, R_END] = R[r, R_NOW]
    R[r, R_LST] = L_DONE


@_leaf
def _finish_parallel(P: I64, F: F64, T: I64, S: I64, R: I64, W: I64, L: I64, r: int) -> None:
    """:func:`sim.rules.final_status`: paused, or a content failed and that pauses."""
    paused = R[r, R_PAUSED] != 0 or (R[r, R_CFAIL] != 0 and P[P_PAUSES] != 0)
    _finish(P, F, T, S, R, W, L, r, PAUSED if paused else COMPLETED)


@_jit
def _next_serial(P: I64, F: F64, T: I64, S: I64, R: I64, W: I64, L: I64, r: int, i: int) -> None:
    if i >= P[P_N]:
        _finish(P, F, T, S, R, W, L, r, COMPLETED)
        return
    R[r, R_LI] = i
    R[r, R_LKIND] = K_SERC
    R[r, R_LST] = L_CALL
    _start(P, F, T, S, R, W, L, r, 0, CONTENT, i, 0, 0)


@_jit
def _loop_start(P: I64, F: F64, T: I64, S: I64, R: I64, W: I64, L: I64, r: int) -> None:
    """The loop over the pending outlines begins (after the foreground scene)."""
    first = P[P_FIRST]
    if P[P_PAR] == 0:
        _next_serial(P, F, T, S, R, W, L, r, first)
        return
    w = P[P_W]
    for j in range(w):
        _start(P, F, T, S, R, W, L, r, 1 + j, CONTENT, first + j, 0, 0)
    R[r, R_CNEXT] = first + w
    R[r, R_LI] = first
    R[r, R_LST] = L_HYB if P[P_HYB] != 0 else L_AWAIT
    R[r, R_WOKEN] = 1


@_jit
def _scene_end(P: I64, F: F64, T: I64, S: I64, R: I64, W: I64, L: I64, r: int, ok: bool) -> None:
    """Scene ``li`` is added (``ok``) or failed; the loop goes on."""
    li = R[r, R_LI]
    if ok:
        R[r, NR + P[P_N] + li] = R[r, R_NOW]
    else:
        R[r, NR + 2 * P[P_N] + li] = True
    if P[P_FG] != 0 and li == 0:
        if ok:
            _loop_start(P, F, T, S, R, W, L, r)
        else:
            _finish(P, F, T, S, R, W, L, r, FIRST_FAILED)
        return
    if P[P_PAR] != 0:
        if ok:
            R[r, R_LI] = li + 1
            R[r, R_LST] = L_AWAIT
            R[r, R_WOKEN] = 1
        else:
            R[r, R_PAUSED] = 1
            _finish_parallel(P, F, T, S, R, W, L, r)
    elif ok:
        _next_serial(P, F, T, S, R, W, L, r, li + 1)
    else:
        _finish(P, F, T, S, R, W, L, r, PAUSED)


@_leaf
def _start_tts(P: I64, F: F64, T: I64, S: I64, R: I64, W: I64, L: I64, r: int) -> None:
    """Scene ``li``'s clips on ``min(c, clips)`` workers (one when a scene has one clip or
    the within-scene concurrency is 1)."""
    li = R[r, R_LI]
    fg = 1 if P[P_FG] != 0 and li == 0 else 0
    clips = R[r, NR + 3 * P[P_N] + li]
    if clips == 0:
        _scene_end(P, F, T, S, R, W, L, r, True)
        return
    tc = P[P_FGC] if fg else P[P_TTSC]
    w = 1 if tc <= 1 or clips == 1 else min(tc, clips)
    R[r, R_LST] = L_TTS
    R[r, R_TNEXT] = w
    R[r, R_TBUSY] = w
    R[r, R_TOK] = 1
    for k in range(w):
        _start(P, F, T, S, R, W, L, r, 1 + P[P_W] + k, TTS, li, k, fg)


@_leaf
def _loop_ended(P: I64, F: F64, T: I64, S: I64, R: I64, W: I64, L: I64, r: int, ok: bool) -> None:
    """The loop's own call ended (``ok``): the next step, the scene's clips, or the end."""
    kind = R[r, R_LKIND]
    li = R[r, R_LI]
    _idle(P, F, T, S, R, W, L, r, 0)
    if kind == K_ACT:
        if ok:
            _start_tts(P, F, T, S, R, W, L, r)
        else:
            _scene_end(P, F, T, S, R, W, L, r, False)
    elif ok:  # the content: then the actions
        fg = 1 if P[P_FG] != 0 and li == 0 and kind == K_FGC else 0
        R[r, R_LKIND] = K_ACT
        _start(P, F, T, S, R, W, L, r, 0, ACTIONS, li, 0, fg)
    elif kind == K_FGC:  # the foreground content failed: the run ends
        R[r, NR + 2 * P[P_N] + 0] = True
        _finish(P, F, T, S, R, W, L, r, FIRST_FAILED)
    else:
        R[r, NR + 2 * P[P_N] + li] = True
        _finish(P, F, T, S, R, W, L, r, PAUSED)


@_leaf
def _all_content(P: I64, R: I64, r: int) -> bool:
    """Whether every pending outline's content has ended (the hybrid loop's barrier)."""
    for i in range(P[P_FIRST], P[P_N]):  # noqa: SIM110 (a loop: numba)
        if R[r, NR + i] == 0:
            return False
    return True


@_jit
def _advance(P: I64, F: F64, T: I64, S: I64, R: I64, W: I64, L: I64, r: int) -> None:
    """The parallel loop's await goes on where it can (zero time)."""
    if P[P_PAR] == 0 or R[r, R_WOKEN] == 0:
        return
    R[r, R_WOKEN] = 0
    n = P[P_N]
    if R[r, R_LST] == L_HYB and _all_content(P, R, r):
        R[r, R_LST] = L_AWAIT
    if R[r, R_LST] != L_AWAIT:
        return
    while True:
        li = R[r, R_LI]
        if li >= n:
            _finish_parallel(P, F, T, S, R, W, L, r)
            return
        got = R[r, NR + li]
        if got == 2:
            R[r, NR + 2 * P[P_N] + li] = True
            R[r, R_CFAIL] = 1
            R[r, R_LI] = li + 1
            continue
        if got == 1:
            R[r, R_LKIND] = K_ACT
            R[r, R_LST] = L_CALL
            _start(P, F, T, S, R, W, L, r, 0, ACTIONS, li, 0, 0)
        return


@_leaf
def _content_ended(
    P: I64, F: F64, T: I64, S: I64, R: I64, W: I64, L: I64, r: int, j: int, ok: bool
) -> None:
    """Content worker ``j``'s call ended: its outline's content is known; the next one."""
    R[r, NR + S[r, j, F_ORDER]] = 1 if ok else 2
    R[r, R_WOKEN] = 1
    nxt = R[r, R_CNEXT]
    R[r, R_CNEXT] = nxt + 1
    if nxt < P[P_N]:
        _start(P, F, T, S, R, W, L, r, j, CONTENT, nxt, 0, 0)
    else:
        _idle(P, F, T, S, R, W, L, r, j)


@_leaf
def _tts_ended(
    P: I64,
    F: F64,
    T: I64,
    S: I64,
    R: I64,
    W: I64,
    L: I64,
    r: int,
    js: I64,
    oks: I64,
    lo: int,
    hi: int,
) -> None:
    """TTS workers ``js[lo:hi]`` ended their calls: their next clips, or the scene's end."""
    for a in range(lo, hi):
        if not oks[a]:
            R[r, R_TOK] = 0
    li = R[r, R_LI]
    stops = 0
    for a in range(lo, hi):
        j = js[a]
        nxt = R[r, R_TNEXT]
        R[r, R_TNEXT] = nxt + 1
        if nxt < R[r, NR + 3 * P[P_N] + li]:
            _start(P, F, T, S, R, W, L, r, j, TTS, li, nxt, S[r, j, F_PID] & 1)
        else:
            _idle(P, F, T, S, R, W, L, r, j)
            stops += 1
    if stops:
        R[r, R_TBUSY] -= stops
        if R[r, R_TBUSY] == 0:
            _scene_end(P, F, T, S, R, W, L, r, R[r, R_TOK] != 0)


@_leaf
def _ended(
    P: I64, F: F64, T: I64, S: I64, R: I64, W: I64, L: I64, r: int, js: I64, oks: I64, m: int
) -> None:
    """Calls of callers ``js[:m]`` (ascending) ended: the content workers go on, then the
    TTS workers, then the loop; then the parallel loop's await."""
    w = P[P_W]
    lo = m
    for a in range(m):
        j = js[a]
        if j > w:
            lo = min(lo, a)
        elif j >= 1:
            _content_ended(P, F, T, S, R, W, L, r, j, oks[a])
    if lo < m:
        _tts_ended(P, F, T, S, R, W, L, r, js, oks, lo, m)
    if m and js[0] == 0:
        _loop_ended(P, F, T, S, R, W, L, r, oks[0])
    _advance(P, F, T, S, R, W, L, r)


# -- time -------------------------------------------------------------------------------


@_leaf
def _pass(P: I64, F: F64, T: I64, S: I64, R: I64, W: I64, L: I64, r: int, now: int, m: int) -> None:
    """One pass of the instant's zero-time work on the ``m`` callers due (``due``: slots,
    then their phases as the pass began): arrivals on keys without a limit decided, sleepers
    sent, answers taken."""
    sj = W[4 + P[P_S] : 4 + 4 * P[P_S]]
    sok = W[4 + 4 * P[P_S] : 4 + 5 * P[P_S]]
    s = P[P_S]
    for key in range(2):
        for a in range(m):
            j = W[4 + 5 * P[P_S] + a]
            if W[4 + 5 * P[P_S] + s + a] == ARRIVE and _key(S[r, j, F_STEP]) == key:
                _decide_open(P, F, T, S, R, W, L, r, j, key)
    for a in range(m):
        if W[4 + 5 * P[P_S] + s + a] == SLEEP:
            _request(P, F, T, S, R, W, L, r, W[4 + 5 * P[P_S] + a])
        elif W[4 + 5 * P[P_S] + s + a] == RSLEEP:
            _arrive(P, F, T, S, R, W, L, r, W[4 + 5 * P[P_S] + a], now)
    js = sj[:s]  # the callers whose calls ended, and how
    oks = sok
    k = 0
    for a in range(m):
        if W[4 + 5 * P[P_S] + s + a] == FLIGHT:
            j = W[4 + 5 * P[P_S] + a]
            got = _answer(P, F, T, S, R, W, L, r, j)
            if got:
                js[k] = j
                oks[k] = got == 1
                k += 1
    if R[r, R_STAGE] == ST_DROPPED:
        return
    if k:
        _ended(P, F, T, S, R, W, L, r, js, oks, k)


@_leaf
def _round(
    P: I64, F: F64, T: I64, S: I64, R: I64, W: I64, L: I64, r: int, now: int, due: int
) -> None:
    """One round at ``now``: the zero-time work, then the batch of arrivals on limited keys
    in arrival order (answers given at once, 429s, make the next round at the same instant).
    ``due`` >= 0: the first pass's callers are listed in ``W`` (:func:`_run`)."""
    sj = W[4 + P[P_S] : 4 + 4 * P[P_S]]
    s = P[P_S]
    while R[r, R_STAGE] == ST_RUN:
        m = 0
        if due >= 0:
            m = due
            due = -1
            for a in range(m):
                W[4 + 5 * P[P_S] + s + a] = S[r, W[4 + 5 * P[P_S] + a], F_PH]
        else:
            for j in range(s):
                if S[r, j, F_WAKE] == now:
                    W[4 + 5 * P[P_S] + m] = j
                    W[4 + 5 * P[P_S] + s + m] = S[r, j, F_PH]
                    m += 1
        if m == 0:
            break
        _pass(P, F, T, S, R, W, L, r, now, m)
    n = W[3 + 0]
    W[3 + 0] = 0
    if n == 0 or R[r, R_STAGE] != ST_RUN:
        return
    js = sj[s : 2 * s]
    for a in range(n):
        js[a] = W[4 + a]
    mine = sj[2 * s :]
    for key in range(2):
        m = 0
        for a in range(n):
            if _key(S[r, js[a], F_STEP]) == key:
                mine[m] = js[a]
                m += 1
        if m and R[r, R_STAGE] == ST_RUN:
            _batch(P, F, T, S, R, W, L, r, key, mine, m)


@_leaf
def _begin(P: I64, F: F64, T: I64, S: I64, R: I64, W: I64, L: I64, r: int) -> None:
    """Time 0: the run's state, then the foreground first scene's content, or the loop (the
    rest of time 0 is :func:`_run`'s first round)."""
    cdone = R[:, NR : NR + P[P_N]]
    ready = R[:, NR + P[P_N] : NR + 2 * P[P_N]]
    failed = R[:, NR + 2 * P[P_N] : NR + 3 * P[P_N]]
    ends = R[:, NR + 4 * P[P_N] : NR + 4 * P[P_N] + 2 * P[P_CAPMAX]]
    S[r, :, :] = 0
    S[r, :, F_WAKE] = INF
    R[r, :NR] = 0
    R[r, R_TOK] = 1
    R[r, R_STAGE] = ST_RUN
    cdone[r, :] = 0
    ready[r, :] = -1
    failed[r, :] = 0
    ends[r, :] = 0
    W[3 + 0] = 0
    if P[P_FG] != 0:
        R[r, R_LKIND] = K_FGC
        R[r, R_LST] = L_CALL
        _start(P, F, T, S, R, W, L, r, 0, CONTENT, 0, 0, 1)
    else:
        _loop_start(P, F, T, S, R, W, L, r)
    _advance(P, F, T, S, R, W, L, r)


@_jit
def _run(P: I64, F: F64, T: I64, S: I64, R: I64, W: I64, L: I64, r: int) -> bool:
    """Run ``r`` from where it stands to its end (True), or to a round that needs draws not
    drawn yet (False: suspended, the draws listed)."""
    fresh = R[r, R_STAGE] == ST_NEW
    if fresh:
        _begin(P, F, T, S, R, W, L, r)
    s = P[P_S]
    while R[r, R_STAGE] == ST_RUN:
        if fresh:  # the rest of time 0 (its draws, attempt 0, are all there)
            fresh = False
            _round(P, F, T, S, R, W, L, r, 0, -1)
            continue
        now = INF
        m = 0
        for j in range(s):  # the next instant, and the callers due then (in slot order)
            wake = S[r, j, F_WAKE]
            if wake < now:
                now = wake
                m = 0
            if wake == now:
                W[4 + 5 * P[P_S] + m] = j
                m += 1
        if now >= INF:
            R[r, R_STAGE] = ST_DONE
            break
        R[r, R_NOW] = now
        if P[P_CHAIN] == 0 and not _round_draws(P, F, T, S, R, W, L, r, m):
            return False
        _round(P, F, T, S, R, W, L, r, now, m)
    return True


@_jit
def run_runs(
    P: I64, F: F64, T: I64, S: I64, R: I64, W: I64, L: I64, todo: I64, suspended: I64
) -> int:
    """Runs ``todo`` (indices), each to its end or its suspension; the suspended ones are
    written to ``suspended``; returns their count."""
    k = 0
    for r in todo:
        if not _run(P, F, T, S, R, W, L, r):
            suspended[k] = r
            k += 1
    return k


@_jit
def all_drawn(P: I64, F: F64, T: I64, needs: I64) -> bool:
    """Whether every draw ``needs`` lists (rows as the loop asks: table, key, step within
    key, attempt, cell) is there now (:func:`_drawn_at`)."""
    for i in range(needs.shape[0]):
        kind, key, si, a, at = needs[i, 0], needs[i, 1], needs[i, 2], needs[i, 3], needs[i, 4]
        if not _drawn_at(P, F, T, kind, key, si, a, at):
            return False
    return True


@_jit
def codes_compiled_in() -> tuple[int, ...]:
    """The codes this module reads from :mod:`sim.fast_quota_codes`, as the compiled loop has
    them: numba freezes globals when it compiles, and its on-disk cache is keyed on this file
    only. Its Python version (``codes_compiled_in.py_func``) gives them as they are now."""
    return (
        ACTIONS, C_5XX, C_RAND, C_RESET, C_STALL, C_TRUNC, COMPLETED, CONTENT, FIRST_FAILED,
        PAUSED, RESET, RS_5XX, RS_INFL, RS_OK, RS_RAND, RS_RESET, RS_STALL, RS_TRUNC,
        TRUNCATED, TTS,
    )  # fmt: skip


def recompile_if_stale(dispatchers: list[Any] | None = None) -> bool:
    """Whether the cached loop was compiled with other codes than :mod:`sim.fast_quota_codes`
    holds now (one of them changed since); if so, ``dispatchers`` (default: every compiled
    function of this module) are compiled afresh, their cache replaced. Called under the
    compile lock, before the loop's first call in a process."""
    if codes_compiled_in() == codes_compiled_in.py_func():  # type: ignore[attr-defined]
        return False
    import numba

    found = [v for v in globals().values() if isinstance(v, numba.core.dispatcher.Dispatcher)]
    for d in found if dispatchers is None else dispatchers:
        d.recompile()
    return True
