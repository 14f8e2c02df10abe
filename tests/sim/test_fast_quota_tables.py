"""The limited-key engine's draw tables (sim.fast_quota._Tables): a table drawn at some cells
holds the numbers the whole table holds there (SimPy's: sim.draws.Draws), and every way the
engine may choose to draw them (whole, cell by cell, up front from what a cell alike read)
gives SimPy's runs request for request."""

from __future__ import annotations

import numpy as np
import pytest

import sim.fast_quota as fq
from sim import Quota, RunConfig, load_scenario
from sim.draws import Draws
from sim.fast_quota import check_quota_engine, simulate_quota
from sim.scenario import Scenario


def _faulty(name: str) -> Scenario:
    """A scenario whose keys draw every code (random 429 and 5xx, resets, stalls, truncated
    bodies) and whose client draws its jitter."""
    q = Quota(max_inflight=2, p_429=0.2, p_5xx=0.1, p_reset=0.05, p_truncate=0.05, p_stall=0.02)
    return load_scenario(name).replace(quota_llm=q, quota_tts=q)


def _tables(sc: Scenario, reps: int) -> fq._Tables:
    d = Draws(sc, 11, 3, 3 + reps)
    cell = fq._Cell(sc, RunConfig.of("pipelined", 3), d)
    assert cell.any_jitter and cell.jitter_fixed is None
    return fq._Tables(cell, d, True, [np.zeros(1)])


@pytest.mark.parametrize("share", [20, 2])
@pytest.mark.parametrize("name", ["content-heavy", "output-tpm"])
def test_a_table_drawn_at_some_cells_holds_the_whole_tables_numbers_there(
    name: str, share: int
) -> None:
    """content-heavy draws each outline's content from its scene type's distribution;
    output-tpm derives latencies from drawn output tokens: both cell by cell too. At a
    twentieth of a table its uniforms come from the compiled PCG64; at a half, from numpy
    whole, the codes and jitter whole with them (only latencies cell by cell)."""
    sc = _faulty(name)
    whole, part = _tables(sc, 40), _tables(sc, 40)
    rng = np.random.default_rng(share)
    for key, steps in enumerate(whole.steps):
        for si in range(len(steps)):
            for a in range(2):
                whole.whole(key, si, a)
                size = whole.view(0, key, si, a).size
                cells = np.unique(rng.integers(0, size, size // share))
                part.cells(key, si, a, cells)
                for kind in whole.kinds(key, a):
                    by_cell = kind == 0 or share == 20
                    assert part.have[kind, key, si, a] == (3 if by_cell else 1)
                    got = part.view(kind, key, si, a).reshape(-1)
                    want = whole.view(kind, key, si, a).reshape(-1)
                    np.testing.assert_array_equal(got[cells], want[cells])
                    rest = np.setdiff1d(np.arange(size), cells)
                    if not by_cell:
                        np.testing.assert_array_equal(got[rest], want[rest])
                    elif kind == 2:
                        assert np.isnan(got[rest]).all()
                    else:
                        assert (got[rest] == -1).all()
    assert {k for x in (0, 1) for k in whole.kinds(x, 0)} == {0, 1, 2}  # every kind was seen


def _cells() -> list[tuple[Scenario, RunConfig]]:
    base = load_scenario("default")
    q = Quota(max_inflight=2, p_429=0.05, p_5xx=0.03, p_reset=0.02)
    sc = base.replace(outlines=5, quota_llm=q, quota_tts=Quota(max_inflight=2, p_429=0.1))
    return [(sc, RunConfig.of("serial", 1)), (sc, RunConfig.of("pipelined", 4))]


@pytest.mark.parametrize("cell", [0, 1])
@pytest.mark.parametrize("how", ["whole", "cells", "learned"])
def test_every_way_of_drawing_the_tables_gives_simpys_runs(
    monkeypatch: pytest.MonkeyPatch, how: str, cell: int
) -> None:
    """Forced: every table asked for drawn whole; every one cell by cell (TTS always is);
    every attempt drawn whole before the runs start (as if a cell alike had read them all)."""
    sc, cfg = _cells()[cell]
    monkeypatch.setattr(fq, "_LEARNED", [])
    if how == "whole":
        monkeypatch.setattr(fq, "_WHOLE_FROM", 0.0)
    if how == "cells":
        monkeypatch.setattr(fq, "_WHOLE_FROM", 2.0)
    if how == "learned":
        every = frozenset((k, si, a) for k in (0, 1) for si in (0, 1)[: 2 - k] for a in range(1, 6))
        monkeypatch.setattr(fq, "_learned", lambda alike: every)
    n, diff = check_quota_engine(sc, cfg, 40, seed=7)
    assert diff is None, diff
    assert n > 40 * 20  # requests were compared


def test_a_cell_alike_starts_with_the_tables_its_runs_read_densely(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """After a cell whose runs all retry their content, the next call of it draws those
    attempts before the runs start: fewer suspensions for draws, the same runs."""
    monkeypatch.setattr(fq, "_LEARNED", [])
    base = load_scenario("default")
    sc = base.replace(outlines=4, quota_llm=Quota(max_inflight=1, p_429=0.6))
    cfg = RunConfig.of("pipelined", 3)
    fills: list[int] = []
    fill = fq._Tables.fill

    def counted(self: fq._Tables, needs: np.ndarray) -> None:  # type: ignore[type-arg]
        fills.append(1)
        fill(self, needs)

    monkeypatch.setattr(fq._Tables, "fill", counted)
    first = simulate_quota(sc, cfg, 60, seed=2).runs.frame()
    before = len(fills)
    dense = fq._learned((sc, cfg))
    assert (0, 0, 1) in dense  # content's first retry: read by every run
    again = simulate_quota(sc, cfg, 60, seed=2).runs.frame()
    assert len(fills) - before < before
    assert first.equals(again)
