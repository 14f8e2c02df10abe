"""The learner's metrics with their integers compiled (:func:`sim.runs_nb_records.learner_ints`) are
:func:`sim.qoe.qoe_us`'s own, field for field and bit for bit, NaNs where they are."""

from __future__ import annotations

import numpy as np
import pytest

from sim.qoe import QOE_FIELDS, START_RULES, qoe_us


def _rows(rng: np.random.Generator, runs: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Ready times with scenes never ready (-1), whole rows of them, ties and zeros; playback
    times with zeros among them."""
    ready = rng.integers(0, 5_000_000, size=(runs, n))
    ready[rng.random((runs, n)) < 0.2] = -1
    ready[rng.random(runs) < 0.05] = -1  # no scene ready
    ready[rng.random((runs, n)) < 0.05] = 1_000_000  # ties
    play = rng.integers(0, 2_000_000, size=(runs, n))
    play[rng.random((runs, n)) < 0.05] = 0
    return ready, play


@pytest.mark.parametrize("start", START_RULES)
@pytest.mark.parametrize("buffer_us", [0, 1, 1_500_000, 10**12])
def test_compiled_integers_give_the_same_metrics(start: str, buffer_us: int) -> None:
    rng = np.random.default_rng([START_RULES.index(start), buffer_us % 1000])
    for runs, n in ((2_000, 10), (300, 1), (1, 7), (0, 4)):
        ready, play = _rows(rng, runs, n)
        want = qoe_us(ready, play, start, buffer_us)
        got = qoe_us(ready, play, start, buffer_us, compiled=True)
        for field in QOE_FIELDS:
            a, b = getattr(want, field), getattr(got, field)
            assert a.dtype == b.dtype, field
            np.testing.assert_array_equal(a, b, err_msg=field)


def test_the_rows_exercise_every_branch() -> None:
    """The random rows above reach waits, no waits, runs with nothing ready and the buffer
    rule falling back to the last scene (else the comparison proves little)."""
    ready, play = _rows(np.random.default_rng(0), 2_000, 10)
    q = qoe_us(ready, play, "buffer", 10**12)
    assert np.isnan(q.startup_s).any() and not np.isnan(q.startup_s).all()
    q = qoe_us(ready, play, "first_scene", 0)
    assert (q.stalls > 1).any() and (q.stalls == 0).any()
