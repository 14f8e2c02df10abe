"""The compiled runs engine's records (:meth:`sim.runs_nb.NbCell.records`): every run's
numbers in one compiled call, from the loop's rows.

Per run: its arrival, its wait for a worker, its first scene and its end (seconds from its
arrival), the scenes ready, and what its learner feels — :func:`sim.qoe.qoe_of_run` (the
reference's, the learner model of :mod:`sim.qoe`) re-stated on the run's row: each scene's
playback is the non-speech constant plus the audio of its clips (:meth:`sim.draws.Draws.
playback_table_us`'s integers), the start by the playback's rule, then the waits for the ready
scenes in outline order. The same integers, so the same floats (``x / 1e6`` of an integer
below 2**53 is one rounding, in numpy, numba and Python alike); tests/sim/
test_runs_nb_records.py compares it with :func:`sim.qoe.qoe_us` on random rows.

The learner's rule is stated once here (:func:`_learner_row`, on one run's row of ready and
playback times) and serves the classroom engines too: :func:`learner_ints` gives
:func:`sim.qoe.qoe_us` its integers with ``compiled`` (:mod:`sim.fast_quota`, :mod:`sim.fast`;
tests/sim/test_qoe_compiled.py). One file: numba's on-disk cache is keyed on a function's own
file, so a compiled function calling one from another file would not see it change.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from .compiled import CompileLock
from .compiled import jit as _jit
from .compiled import leaf as _leaf

__all__ = ["NF", "NI", "START_CODES", "learner_ints", "record_cols"]

I64 = NDArray[np.int64]
F64 = NDArray[np.float64]

START_CODES = ("first_scene", "buffer", "all_scenes")  # sim.qoe.START_RULES, K[K_START]
# the settings: K[...] (the loop's columns are passed in: numba freezes globals it reads)
(K_N, K_KMAX, K_READY0, K_CLIPS0, K_ARR, K_CLAIM0, K_END) = range(7)
(K_NONSPEECH, K_START, K_BUFFER) = range(7, 10)
NK = 10
# the outputs: F[run, ...] and I[run, ...]
(O_ARR, O_WAIT, O_FIRST, O_END, O_STARTUP, O_STALL) = range(6)
NF = 6
(O_OK, O_STALLS) = range(2)
NI = 2


@_jit
def record_cols(R: I64, audio: I64, K: I64, F: F64, I: I64, row: I64) -> None:  # noqa: E741
    """Each run's (row of ``R``) numbers into its rows of ``F`` and ``I`` (``audio``: the runs'
    clips' audio, µs, (runs, N * kmax); ``K``: the settings above; ``row``: (2, N) scratch for
    a run's ready times from its arrival and its scenes' playback)."""
    n, kmax = K[K_N], K[K_KMAX]
    ready0, clips0 = K[K_READY0], K[K_CLIPS0]
    non_speech_us, start, buffer_us = K[K_NONSPEECH], K[K_START], K[K_BUFFER]
    nan = math.nan
    for r in range(R.shape[0]):
        t0 = R[r, K[K_ARR]]
        F[r, O_ARR] = t0 / 1e6
        F[r, O_WAIT] = (R[r, K[K_CLAIM0]] - t0) / 1e6
        F[r, O_END] = (R[r, K[K_END]] - t0) / 1e6
        first = R[r, ready0]
        F[r, O_FIRST] = (first - t0) / 1e6 if first >= 0 else nan
        ok = 0
        for k in range(n):  # a scene ready is ready at or after its run's arrival
            t = R[r, ready0 + k]
            ok += t >= 0
            row[0, k] = t - t0 if t >= 0 else -1
            row[1, k] = _play(R, audio, r, k, kmax, clips0, non_speech_us) if t >= 0 else 0
        s, stall_us, stalls, _, _ = _learner_row(row[0], row[1], start, buffer_us)
        F[r, O_STARTUP] = s / 1e6 if s >= 0 else nan
        F[r, O_STALL] = stall_us / 1e6
        I[r, O_OK] = ok
        I[r, O_STALLS] = stalls


@_leaf
def _learner_row(
    ready: I64, play: I64, start: int, buffer_us: int
) -> tuple[int, int, int, int, int]:
    """One run's learner (:func:`sim.qoe.qoe_of_run`) from its row: ``ready`` each scene's
    ready time (-1: never), ``play`` its playback, µs; ``start`` the rule's index in
    :data:`START_CODES`. Its start (-1: no scene ready), stall, stalls, playback and last
    ready scene (-1: none)."""
    last, lowest, s, held = -1, -1, -1, 0
    for k in range(ready.shape[0]):  # the start (sim.qoe._start_of_run)
        t = ready[k]
        if t < 0:
            continue
        last = t if t > last else last
        lowest = t if lowest < 0 or t < lowest else lowest
        if start == 1 and s < 0:
            held += play[k]
            if held >= buffer_us:
                s = t
    if start == 2 or last < 0:
        s = last
    elif start == 0:
        s = lowest
    elif s < 0:
        s = last
    clock, stall, stalls, playback = s, 0, 0, 0
    for k in range(ready.shape[0]):  # the waits for the ready scenes in outline order
        t = ready[k]
        if t < 0:
            continue
        wait = t - clock if t > clock else 0
        stall += wait
        stalls += wait > 0
        clock += wait + play[k]
        playback += play[k]
    return s, stall, stalls, playback, last


@_jit
def _learner_ints(ready: I64, play: I64, start: int, buffer_us: int, out: I64) -> None:
    for r in range(ready.shape[0]):
        s, stall, stalls, playback, last = _learner_row(ready[r], play[r], start, buffer_us)
        out[0, r], out[1, r], out[2, r], out[3, r], out[4, r] = s, stall, stalls, playback, last


_LOCK = CompileLock(Path(__file__), "numba-runs-records")


def learner_ints(ready: I64, play: I64, start: int, buffer_us: int) -> I64:
    """Per run (rows of ``ready`` and ``play``, (runs, N), µs, ready -1 where never), shape
    (5, runs): its start by rule ``start`` (its index in :data:`START_CODES`), stall, stalls,
    playback and last ready scene (-1 where none). Imports numba: the real world, whose clock
    is the wall's, never calls it."""
    ready = np.ascontiguousarray(ready, dtype=np.int64)
    play = np.ascontiguousarray(play, dtype=np.int64)
    out = np.empty((5, ready.shape[0]), dtype=np.int64)
    with _LOCK.first_use():
        _learner_ints(ready, play, int(start), int(buffer_us), out)
    return out


@_leaf
def _play(R: I64, audio: I64, r: int, k: int, kmax: int, clips0: int, non_speech_us: int) -> int:
    """Scene ``k``'s playback of run ``r``: the non-speech constant and its clips' audio."""
    clips = min(R[r, clips0 + k], kmax)
    total = non_speech_us
    for j in range(clips):
        total += audio[r, k * kmax + j]
    return total  # type: ignore[no-any-return]
