"""sim.qoe.qoe_us's learner (a running max over the ready scenes) against the scene-by-scene
model written out here: the learner, free at ``clock`` (at first the start), waits for each
ready scene in outline order and plays it, ``clock = max(clock, ready) + play``."""

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.qoe import START_RULES, qoe_us


def _stepwise(ready, play, s):
    """Per run: the stall (µs) and the number of waits, scene by scene."""
    out = []
    for row_r, row_p, start in zip(ready, play, s, strict=True):
        clock, stall, stalls = start, 0, 0
        for t, p in zip(row_r, row_p, strict=True):
            if t < 0:
                continue
            wait = max(t - clock, 0)
            stall += wait
            stalls += wait > 0
            clock += wait + p
        out.append((stall, stalls))
    return out


@settings(max_examples=300, deadline=None)
@given(
    rows=st.lists(
        st.lists(
            st.tuples(st.one_of(st.just(-1), st.integers(0, 10**9)), st.integers(0, 10**8)),
            min_size=6,
            max_size=6,
        ),
        min_size=1,
        max_size=5,
    ),
    start=st.sampled_from(START_RULES),
    buffer_us=st.integers(1, 3 * 10**8),
)
def test_the_running_max_equals_the_scene_by_scene_learner(rows, start, buffer_us):
    ready = np.array([[t for t, _ in r] for r in rows], dtype=np.int64)
    play = np.array([[p for _, p in r] for r in rows], dtype=np.int64)
    q = qoe_us(ready, play, start, buffer_us)
    # the start: startup_s is s / 1e6 (NaN when no scene is ready, then s = -1)
    s = [-1 if math.isnan(x) else round(x * 1e6) for x in q.startup_s.tolist()]
    want = _stepwise(ready.tolist(), play.tolist(), s)
    assert q.stalls.dtype == np.int64
    assert q.stalls.tolist() == [n for _, n in want]
    assert q.stall_s.tolist() == [st_us / 1e6 for st_us, _ in want]
