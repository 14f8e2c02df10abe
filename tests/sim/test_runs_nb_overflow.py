"""The compiled runs engine's fixed-size arrays (sim/runs_nb_loop.py is compiled without bounds
checks): an append to a full one stops the loop and Python raises an AssertionError naming it,
and nothing past the array is written."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.typing import NDArray

from sim import runs_nb
from sim import runs_nb_loop as nl
from sim.runs import RunsConfig
from sim.runs_nb import NbCell
from sim.runs_world import runs_scenario
from sim.scenario import load_scenario

GUARD = -123_456_789
SPARE = 64


def _guarded(a: NDArray[np.int64]) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """A copy of ``a`` (C-contiguous, as the loop is compiled for) laid in a buffer with
    :data:`SPARE` guard words after it: the copy, and the guard words."""
    buf = np.full(a.size + SPARE, GUARD, dtype=np.int64)
    out = buf[: a.size].reshape(a.shape)
    out[...] = a
    return out, buf[a.size :]


def test_a_heap_estimate_too_small_fails_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    """The heap's capacity estimate made too small (two items over the arrivals): six runs a
    second apart, each with a content pool of three, hold more timed items at once than
    that; the push that finds the heap full stops the cell, the error names the heap, and the
    words after it are untouched (no push wrote past it)."""
    runs = 6
    monkeypatch.setattr(runs_nb, "_capacity", lambda n, slots: n + 2)
    sc = runs_scenario(load_scenario("default", upstream="runs").with_quota(llm_inflight=0))
    cfg = RunsConfig(
        arrivals=tuple((float(i), i) for i in range(runs)), concurrency=3, max_concurrent=runs
    )
    cell = NbCell(sc, cfg, 0)
    assert cell.H.shape == (2, runs + 2) and cell.B.shape == (nl.NB, runs + 2)
    cell.H, guard = _guarded(cell.H)
    with pytest.raises(AssertionError, match=r"runs_nb: the heap \(H\) overflowed"):
        cell.run()
    assert cell.W[nl.W_ERR] == nl.ERR_HEAP
    assert cell.W[nl.W_HN] == runs + 2  # full, not past
    assert (guard == GUARD).all()


def test_a_round_wider_than_its_rows_fails_loudly() -> None:
    """Eight runs arrive at one instant; a round's rows made four wide: popping the instant's
    fifth item stops the cell with an error naming the round's row, nothing written past B."""
    sc = runs_scenario(load_scenario("default", upstream="runs"))
    cfg = RunsConfig(arrivals=tuple((0.0, i) for i in range(8)), concurrency=2, max_concurrent=8)
    cell = NbCell(sc, cfg, 0)
    cell.B, guard = _guarded(np.zeros((nl.NB, 4), dtype=np.int64))
    with pytest.raises(AssertionError, match=r"a round's items \(B's current row\) overflowed"):
        cell.run()
    assert (guard == GUARD).all()
    assert cell.W[nl.W_HN] == 8 - 4  # the four popped before it stopped


def test_every_overflow_code_has_a_name() -> None:
    codes = [getattr(nl, n) for n in dir(nl) if n.startswith("ERR_") and n != "ERR_NAMES"]
    assert sorted(codes) == sorted(nl.ERR_NAMES) == list(range(1, len(codes) + 1))
