"""The compiled runs engine's records (sim/runs_nb_records.py): the learner's numbers of every
run equal :func:`sim.qoe.qoe_us`'s (the learner model every world calls), float for float, on
random rows under each start rule; the other numbers are the row's times over 1e6."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sim import runs_nb_records as rc
from sim.qoe import qoe_us


@pytest.mark.parametrize("start", rc.START_CODES)
def test_the_learners_numbers_equal_qoe_us(start: str) -> None:
    """200 runs of 7 scenes (3 clip slots): ready times increasing in outline order, some
    scenes never ready (none at all in some runs), clips 0 to 3 per scene, a buffer of 30 s
    (reached by some runs only)."""
    rng = np.random.default_rng(3)
    runs, n, kmax = 200, 7, 3
    cols = 10 + 2 * n  # (the row's own fields, then ready times, then clips)
    R = np.zeros((runs, cols), dtype=np.int64)
    t0 = rng.integers(0, 10**9, runs)
    ready = t0[:, None] + np.cumsum(rng.integers(0, 40 * 10**6, (runs, n)), axis=1)
    ready[rng.random((runs, n)) < 0.3] = -1
    ready[:20] = -1
    R[:, 0], R[:, 1], R[:, 2] = t0, t0 + 7, t0 + 10**9
    R[:, 10 : 10 + n] = ready
    R[:, 10 + n :] = rng.integers(0, kmax + 1, (runs, n))
    audio = rng.integers(10**6, 20 * 10**6, (runs, n * kmax))
    non_speech, buffer_us = 5 * 10**6, 30 * 10**6
    K = np.zeros(rc.NK, dtype=np.int64)
    K[[rc.K_N, rc.K_KMAX, rc.K_READY0, rc.K_CLIPS0]] = n, kmax, 10, 10 + n
    K[[rc.K_ARR, rc.K_CLAIM0, rc.K_END]] = 0, 1, 2
    K[[rc.K_NONSPEECH, rc.K_START, rc.K_BUFFER]] = non_speech, rc.START_CODES.index(start), 0
    if start == "buffer":
        K[rc.K_BUFFER] = buffer_us
    F, I = np.empty((runs, rc.NF)), np.empty((runs, rc.NI), dtype=np.int64)  # noqa: E741
    rc.record_cols(R, audio, K, F, I, np.empty((2, n), dtype=np.int64))

    rel = np.where(ready >= 0, ready - t0[:, None], -1)
    mask = np.arange(kmax)[None, None, :] < R[:, 10 + n :, None]
    play = non_speech + np.where(mask, audio.reshape(runs, n, kmax), 0).sum(axis=2)
    q = qoe_us(rel, np.where(rel >= 0, play, 0), start, int(K[rc.K_BUFFER]))
    assert F[:, rc.O_STARTUP].tobytes() == q.startup_s.tobytes()
    assert F[:, rc.O_STALL].tobytes() == q.stall_s.tobytes()
    assert I[:, rc.O_STALLS].tolist() == q.stalls.tolist()
    assert I[:, rc.O_OK].tolist() == (rel >= 0).sum(axis=1).tolist()
    assert np.isnan(F[:20, rc.O_STARTUP]).all() and (F[:20, rc.O_STALL] == 0.0).all()
    if start == "buffer":  # (some runs start before their last scene, some at it)
        assert 0 < (q.startup_s < q.last_scene_s).sum() < (q.startup_s <= q.last_scene_s).sum()
    assert F[:, rc.O_ARR].tolist() == (t0 / 1e6).tolist()
    assert F[:, rc.O_WAIT].tolist() == [7 / 1e6] * runs
    assert F[:, rc.O_END].tolist() == [10**9 / 1e6] * runs
    first = [math.nan if t < 0 else t / 1e6 for t in rel[:, 0].tolist()]
    assert repr(F[:, rc.O_FIRST].tolist()) == repr(first)
