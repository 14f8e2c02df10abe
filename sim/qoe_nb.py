"""The integers of :func:`sim.qoe.qoe_us` compiled, for the engines that step many classrooms
at once (:mod:`sim.fast_quota`, :mod:`sim.fast`): per run its start, its stall, the scenes it
waited for, its playback and its last ready scene, in one pass over its row instead of a
dozen whole-array passes. The rule is :func:`sim.qoe.qoe_of_run`'s (the start by the
playback's rule, then the waits for the ready scenes in outline order), so the integers are
those :func:`sim.qoe.qoe_us` makes; its seconds and ratios are then taken from them by the
same numpy expressions (tests/sim/test_qoe_nb.py compares the two on random rows). Imports
numba: the real world, whose clock is the wall's, never calls it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from .compiled import CompileLock
from .compiled import jit as _jit
from .compiled import leaf as _leaf

__all__ = ["learner_ints"]

I64 = NDArray[np.int64]

# the outputs: a row of ``out`` per quantity, a column per run
(Q_START, Q_STALL, Q_STALLS, Q_PLAYBACK, Q_LAST) = range(5)
NQ = 5


@_leaf
def _start_and_last(ready: I64, play: I64, r: int, start: int, buffer_us: int) -> tuple[int, int]:
    """Run ``r``'s start (-1: no scene ready) by rule ``start`` (its index in
    :data:`sim.qoe.START_RULES`), and its last ready time."""
    last, lowest, s, held = -1, -1, -1, 0
    for k in range(ready.shape[1]):
        t = ready[r, k]
        if t < 0:
            continue
        last = t if t > last else last
        lowest = t if lowest < 0 or t < lowest else lowest
        if start == 1 and s < 0:
            held += play[r, k]
            if held >= buffer_us:
                s = t
    if start == 2 or last < 0:
        return last, last
    if start == 0:
        return lowest, last
    return (s if s >= 0 else last), last


@_jit
def _learner_ints(ready: I64, play: I64, start: int, buffer_us: int, out: I64) -> None:
    for r in range(ready.shape[0]):
        s, last = _start_and_last(ready, play, r, start, buffer_us)
        clock, stall, stalls, playback = s, 0, 0, 0
        for k in range(ready.shape[1]):
            t = ready[r, k]
            if t < 0:
                continue
            wait = t - clock if t > clock else 0
            stall += wait
            stalls += wait > 0
            clock += wait + play[r, k]
            playback += play[r, k]
        out[Q_START, r], out[Q_STALL, r], out[Q_STALLS, r] = s, stall, stalls
        out[Q_PLAYBACK, r], out[Q_LAST, r] = playback, last


_LOCK = CompileLock(Path(__file__), "numba-qoe")


def learner_ints(ready: I64, play: I64, start: int, buffer_us: int) -> I64:
    """Per run (rows of ``ready`` and ``play``, (runs, N), µs, ready -1 where never), shape
    (5, runs): its start by rule ``start`` (its index in :data:`sim.qoe.START_RULES`), stall,
    stalls, playback and last ready scene (-1 where none)."""
    ready = np.ascontiguousarray(ready, dtype=np.int64)
    play = np.ascontiguousarray(play, dtype=np.int64)
    out = np.empty((NQ, ready.shape[0]), dtype=np.int64)
    with _LOCK.first_use():
        _learner_ints(ready, play, int(start), int(buffer_us), out)
    return out
