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
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

from .compiled import jit as _jit
from .compiled import leaf as _leaf

__all__ = ["NF", "NI", "START_CODES", "record_cols"]

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
def record_cols(R: I64, audio: I64, K: I64, F: F64, I: I64) -> None:  # noqa: E741
    """Each run's (row of ``R``) numbers into its rows of ``F`` and ``I`` (``audio``: the runs'
    clips' audio, µs, (runs, N * kmax); ``K``: the settings above)."""
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
        # the start (sim.qoe._start_of_run): -1 when no scene is ready
        last, lowest, s, held_us, ok = -1, -1, -1, 0, 0
        for k in range(n):
            t = R[r, ready0 + k]
            if t < 0:
                continue
            t -= t0
            ok += 1
            last = t if t > last else last
            lowest = t if lowest < 0 or t < lowest else lowest
            if start == 1 and s < 0:
                held_us += _play(R, audio, r, k, kmax, clips0, non_speech_us)
                if held_us >= buffer_us:
                    s = t
        if start == 2 or last < 0:
            s = last
        elif start == 0:
            s = lowest
        elif s < 0:
            s = last
        # the waits (sim.qoe.qoe_of_run)
        clock_us, stall_us, stalls = s, 0, 0
        for k in range(n):
            t = R[r, ready0 + k]
            if t < 0:
                continue
            t -= t0
            wait_us = t - clock_us if t > clock_us else 0
            stall_us += wait_us
            stalls += wait_us > 0
            clock_us += wait_us + _play(R, audio, r, k, kmax, clips0, non_speech_us)
        F[r, O_STARTUP] = s / 1e6 if s >= 0 else nan
        F[r, O_STALL] = stall_us / 1e6
        I[r, O_OK] = ok
        I[r, O_STALLS] = stalls


@_leaf
def _play(R: I64, audio: I64, r: int, k: int, kmax: int, clips0: int, non_speech_us: int) -> int:
    """Scene ``k``'s playback of run ``r``: the non-speech constant and its clips' audio."""
    clips = min(R[r, clips0 + k], kmax)
    total = non_speech_us
    for j in range(clips):
        total += audio[r, k * kmax + j]
    return total  # type: ignore[no-any-return]
