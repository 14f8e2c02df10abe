"""The compiled generation-runs engine (sim/runs_nb.py, sim/runs_nb_loop.py): equal to the SimPy
model request for request on random cells where it applies, the one engine rule that picks it,
its lazy draw tables and growing log, and the lock its first compile runs under."""

from __future__ import annotations

import dataclasses
import fcntl

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sim import runs_nb
from sim.dists import Constant
from sim.errors import UserError
from sim.runs import (
    RunsConfig,
    RunsResult,
    RunsSettings,
    check_engines,
    pick_runs_engine,
    results_differ,
    simulate_runs,
)
from sim.runs_nb import NbCell, nb_fits
from sim.runs_world import runs_scenario
from sim.scenario import Scenario, load_scenario

BASE = load_scenario("default", upstream="runs")


def _quota(sc: Scenario, which: str, **kw: object) -> Scenario:
    return sc.replace(**{which: dataclasses.replace(getattr(sc, which), **kw)})


@st.composite
def cells(draw: st.DrawFn) -> tuple[Scenario, RunsConfig, int]:
    """A random cell where the compiled engine applies: capped or open keys (an RPM bucket on
    either key or not) with random 429s, 5xx and faults on either key (resets, truncations,
    stalls past a clip's deadline), deadline ties, the knob, the caps, owners, confirmation
    (auto, countdown, the learner's), agents, the media lane (failures, items past their
    deadline), free-on-give-up and either key's ``disconnect_frees`` (the LLM key's frees its
    slots at a give-up, the TTS key's is never read: clips never go away), Poisson arrivals or
    a replay with ties at one instant."""
    ql = dataclasses.replace(
        BASE.quota_llm,
        max_inflight=draw(st.integers(0, 5)),
        p_429=draw(st.sampled_from([0.0, 0.1])),
        p_5xx=draw(st.sampled_from([0.0, 0.05, 0.3])),
        p_reset=draw(st.sampled_from([0.0, 0.05])),
        p_truncate=draw(st.sampled_from([0.0, 0.03])),
        p_stall=draw(st.sampled_from([0.0, 0.02])),
        stall_s=400.0,
        rpm=draw(st.sampled_from([0.0, 0.0, 30.0, 90.0])),
        rpm_burst=5,
        disconnect_frees=draw(st.sampled_from([False, False, True])),
    )
    qt = dataclasses.replace(
        BASE.quota_tts,
        max_inflight=draw(st.integers(0, 3)),
        p_429=draw(st.sampled_from([0.0, 0.0, 0.1])),
        p_5xx=draw(st.sampled_from([0.0, 0.1])),
        p_reset=draw(st.sampled_from([0.0, 0.0, 0.05])),
        p_truncate=draw(st.sampled_from([0.0, 0.0, 0.03])),
        p_stall=draw(st.sampled_from([0.0, 0.05])),
        stall_s=40.0,
        rpm=draw(st.sampled_from([0.0, 0.0, 12.0, 60.0])),
        rpm_burst=draw(st.sampled_from([1, 3])),
        disconnect_frees=draw(st.sampled_from([False, False, True])),
    )
    sc = BASE.replace(quota_llm=ql, quota_tts=qt, outlines=draw(st.integers(1, 6)))
    if draw(st.booleans()):  # answers exactly at a deadline (30 s clips, 60 s actions)
        sc = sc.replace(tts=Constant(30.0), actions=Constant(60.0))
    runs_settings = RunsSettings(
        confirm=draw(st.sampled_from(["auto", "auto", "countdown", "wait"])),
        review_s=draw(st.sampled_from([10.0, 60.0])),
        agents_mode=draw(st.sampled_from(["auto", "preset"])),
        free_on_give_up=draw(st.booleans()),
        content_deadline_s=draw(st.sampled_from([300.0, 40.0])),
        media_items=draw(st.sampled_from([0, 0, 2])),
        media_p_fail=0.3,
        media_deadline_s=draw(st.sampled_from([300.0, 25.0])),
    )
    common = {
        "concurrency": draw(st.integers(0, 5)),
        "max_concurrent": draw(st.integers(1, 4)),
        "per_owner": draw(st.integers(1, 3)),
        "settings": runs_settings,
    }
    if draw(st.booleans()):
        cfg = RunsConfig(
            runs=draw(st.integers(1, 10)),
            arrival_per_hour=draw(st.sampled_from([30.0, 300.0, 3000.0])),
            owners=draw(st.integers(0, 2)),
            **common,
        )
    else:
        times = draw(st.lists(st.sampled_from([0.0, 0.0, 5.0, 60.0]), min_size=1, max_size=8))
        owners = draw(st.lists(st.integers(0, 2), min_size=len(times), max_size=len(times)))
        cfg = RunsConfig(arrivals=tuple(zip(times, owners, strict=True)), **common)
    return sc, cfg, draw(st.integers(0, 1000))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cells())
def test_compiled_equals_simpy_on_random_cells(cell: tuple[Scenario, RunsConfig, int]) -> None:
    sc, cfg, seed = cell
    assert nb_fits(sc, cfg)
    a = simulate_runs(sc, cfg, seed, "simpy")
    b = simulate_runs(sc, cfg, seed, "compiled")
    assert b.engine == "compiled"
    assert results_differ(a, b) is None


def test_the_check_cells_on_every_engine_that_applies() -> None:
    """The engines' check cells (sim.runs.check_cells): the heap engine and the compiled one
    equal the SimPy model request for request on every one (check_engines compares both);
    the learners' refused confirmations are counted the same."""
    from sim.runs import check_cells

    compiled = []
    for name, sc, cfg, seed in check_cells():
        ok, msg = check_engines(sc, cfg, seed)
        assert ok, f"{name}: {msg}"
        if msg.endswith("(fast, compiled)"):
            compiled.append(name)
    assert compiled == [name for name, *_ in check_cells()]
    _, sc, cfg, seed = next(c for c in check_cells() if c[0] == "wait-confirm")
    assert simulate_runs(sc, cfg, seed, "compiled").confirm_refusals > 0


def test_compiled_equals_simpy_on_many_runs_on_one_key() -> None:
    """Sixty runs at 60/h on a 3-slot LLM key and a 2-slot TTS key, 5xx and resets: the runs
    meet at the keys (429s, retries), every request equal."""
    sc = _quota(BASE.with_quota(llm_inflight=3, tts_inflight=2), "quota_llm", p_reset=0.02)
    cfg = RunsConfig(concurrency=3, runs=60, arrival_per_hour=60.0, run_id=2)
    ok, msg = check_engines(sc, cfg, 5)
    assert ok and msg.endswith("(fast, compiled)"), msg
    res = simulate_runs(sc, cfg, 5, "compiled")
    assert sum(1 for row in res.log if row[6] == 429) > 0  # the key was full at times


def test_the_rule_picks_compiled_where_it_fits_and_the_heap_elsewhere() -> None:
    sc = BASE.with_quota(llm_inflight=3)
    cfg = RunsConfig(concurrency=3, runs=4)
    assert pick_runs_engine(sc, cfg) == "compiled"
    assert simulate_runs(sc, cfg, 1).engine == "compiled"
    outside = [
        (sc, dataclasses.replace(cfg, adaptive="gate")),
        (_quota(sc, "quota_llm", rpm=30.0, rpm_burst=3, rpm_per_second=True), cfg),
        (_quota(sc, "quota_tts", rpd=100), cfg),
    ]
    for s, c in outside:
        assert not nb_fits(s, c)
        assert pick_runs_engine(s, c) == "fast"
        assert simulate_runs(s, c, 1).engine == "fast"
        with pytest.raises(UserError, match="compiled runs engine needs"):
            simulate_runs(s, c, 1, "compiled")
    big = dataclasses.replace(cfg, runs=runs_nb.MAX_RUNS + 1)  # (not run: the rule only)
    assert not nb_fits(sc, big) and pick_runs_engine(sc, big) == "fast"
    with pytest.raises(UserError, match="compiled runs engine needs"):
        pick_runs_engine(sc, big, "compiled")
    assert pick_runs_engine(sc, cfg, "simpy") == "simpy"
    assert pick_runs_engine(sc, cfg, "fast") == "fast"
    with pytest.raises(UserError, match="engine: must be one of"):
        pick_runs_engine(sc, cfg, "numba")


def test_only_the_draws_read_are_drawn(monkeypatch: pytest.MonkeyPatch) -> None:
    """Drawn as the loop asks (a cell too big to draw attempt 1's tables at its start: here
    every cell): without failures or a limit no request is retried, so only attempt 0's tables are
    drawn (and no jitter); with 5xx the retries' tables come as runs reach them."""
    from sim import runs_nb
    from sim.runs_nb_loop import NK

    monkeypatch.setattr(runs_nb, "EARLY_MAX_DRAWS", 0)
    cfg = RunsConfig(concurrency=2, runs=3)
    quiet = _quota(_quota(BASE, "quota_llm", p_5xx=0.0), "quota_tts", p_5xx=0.0)
    cell = NbCell(quiet, cfg, 0)
    cell.run()
    drawn = (cell.OFF.reshape(-1, cell.attempts, NK) >= 0).nonzero()
    assert set(drawn[1].tolist()) == {0}  # attempts
    assert 4 not in set(drawn[2].tolist())  # no jitter table
    noisy = _quota(BASE, "quota_llm", p_5xx=0.3)
    cell = NbCell(noisy, cfg, 0)
    cell.run()
    assert (cell.OFF.reshape(-1, cell.attempts, NK)[:, 1:, :] >= 0).any()
    assert (
        results_differ(simulate_runs(noisy, cfg, 0, "simpy"), simulate_runs(noisy, cfg, 0)) is None
    )


def test_a_cell_draws_attempt_1s_tables_at_its_start(monkeypatch: pytest.MonkeyPatch) -> None:
    """A cell draws attempts 0 and 1 and attempt 0's jitter before its loop runs (every key's
    5xx draws; the outline's 3 attempts, back to back: no jitter; the agents' one attempt):
    its LLM calls retried once need no return to draw. Later attempts come as the loop asks
    (a jitter of attempt 1 or later on a 1-slot key at 30% 5xx brings every later LLM
    attempt's tables at once); the cell equals SimPy's."""
    from sim import runs_nb
    from sim import runs_nb_loop as nl

    monkeypatch.setattr(runs_nb, "_SHAPES", [])  # (no cells alike run before)
    sc = _quota(BASE.with_quota(llm_inflight=1), "quota_llm", p_5xx=0.3)
    cfg = RunsConfig(concurrency=2, runs=3)
    cell = NbCell(runs_scenario(sc), cfg, 0)
    drawn = cell.OFF.reshape(nl.NSTEP, cell.attempts, nl.NK) >= 0
    assert cell.attempts == 6 and drawn[:4, :2][:, :, [0, 2]].all() and drawn[:3, 0, 4].all()
    assert drawn[3, :3][:, [0, 2]].all() and not drawn[3, 3:].any()  # (the outline's 3)
    assert not drawn[:3, 2:].any() and not drawn[:, 1, 4].any() and not drawn[3, :, 4].any()
    assert drawn[4, 0, [0, 2]].all() and not drawn[4, 1:].any() and not drawn[:, :, [1, 3]].any()
    calls: list[int] = []
    run_cell = nl.run_cell
    monkeypatch.setattr(nl, "run_cell", lambda ctx: calls.append(1) or run_cell(ctx))
    monkeypatch.setattr(runs_nb._LOCK, "loaded", True)
    cell.run()
    drawn = cell.OFF.reshape(nl.NSTEP, cell.attempts, nl.NK) >= 0
    assert drawn[0, :, [0, 2]].all() and drawn[0, :5, 4].all()  # (content: all at once)
    assert len(calls) > 1 and int(cell.R[:, nl.RF_RET].sum()) > 0
    assert results_differ(simulate_runs(sc, cfg, 0, "simpy"), simulate_runs(sc, cfg, 0)) is None


def test_cells_alike_that_return_often_draw_every_table(monkeypatch: pytest.MonkeyPatch) -> None:
    """Cells alike (the same settings but the seed and the block) that returned to draw
    often start, from the third, with every table drawn (no return: the loop runs in one
    call) and equal SimPy's; cells alike that never returned keep drawing as the loop asks."""
    from sim import runs_nb_loop as nl

    monkeypatch.setattr(runs_nb, "_SHAPES", [])
    calls: list[int] = []
    run_cell = nl.run_cell
    monkeypatch.setattr(nl, "run_cell", lambda ctx: calls.append(1) or run_cell(ctx))
    monkeypatch.setattr(runs_nb._LOCK, "loaded", True)
    noisy = _quota(BASE.with_quota(llm_inflight=1), "quota_llm", p_5xx=0.3)
    quiet = _quota(_quota(BASE, "quota_llm", p_5xx=0.0), "quota_tts", p_5xx=0.0)
    for sc, every in ((noisy, True), (quiet, False)):
        started = []
        for block in range(4):
            cfg = RunsConfig(concurrency=2, runs=3, run_id=block)
            cell = NbCell(runs_scenario(sc), cfg, 0)
            started.append(
                bool(
                    (cell.OFF.reshape(nl.NSTEP, cell.attempts, nl.NK) >= 0).all(1)[:3, [0, 2]].all()
                )
            )
            calls.clear()
            cell.run()
            assert len(calls) == 1 if started[-1] else every == (len(calls) > 1)
            b = RunsResult(cell.records(), cell.log(), sc, cfg, 0, "compiled")
            b.confirm_refusals = int(cell.W[nl.W_CONFREF])
            assert results_differ(simulate_runs(sc, cfg, 0, "simpy"), b) is None
        assert started == [False, False, every, every]


def test_a_small_log_grows_and_the_cell_resumes() -> None:
    """The loop stops when its log may overflow in a round; the log grows and it goes on:
    the same rows as SimPy's."""
    import numpy as np

    from sim.runs_nb_loop import P_LOGCAP

    sc = BASE.with_quota(llm_inflight=2)
    cfg = RunsConfig(concurrency=3, runs=5, arrival_per_hour=120.0)
    cell = NbCell(runs_scenario(sc), cfg, 3)
    cell.L = np.zeros((16, 9), dtype=np.int64)
    cell.P[P_LOGCAP] = 16
    cell.run()
    a = simulate_runs(sc, cfg, 3, "simpy")
    assert len(cell.L) > 16 and cell.log() == a.log


def test_the_first_use_holds_the_lock_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """The first compiled call of a process runs under an exclusive lock on this checkout's
    lock file (another process waits for it); later calls take no lock."""
    monkeypatch.setattr(runs_nb._LOCK, "loaded", False)
    path = runs_nb._LOCK.path()
    assert path.name.startswith("scenebench-numba-runs-")
    with open(path, "a+b") as other:
        with runs_nb._LOCK.first_use(), pytest.raises(BlockingIOError):
            fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert runs_nb._LOCK.loaded
        with runs_nb._LOCK.first_use():
            fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)  # not held: taken at once
            fcntl.flock(other, fcntl.LOCK_UN)


def test_warm_up_runs_a_cell_through_the_lock(monkeypatch: pytest.MonkeyPatch) -> None:
    """warm_up makes the loop's first call of the process (under the compile lock)."""
    monkeypatch.setattr(runs_nb._LOCK, "loaded", False)
    runs_nb.warm_up()
    assert runs_nb._LOCK.loaded


@pytest.mark.parametrize("name", ["default", "content-heavy", "tts-heavy"])
@pytest.mark.parametrize("keep_log", [True, False])
def test_cell_bytes_bounds_the_arrays_and_a_cell_too_big_goes_to_the_heap(
    name: str, keep_log: bool
) -> None:
    """cell_bytes (what nb_fits bounds) is at least what the loop's arrays take, and not much
    more; a cell over MAX_CELL_BYTES (many outlines, many runs) is the heap engine's under
    auto, and asking for the compiled engine there is a one-line error."""
    sc = runs_scenario(load_scenario(name, upstream="runs"))
    cfg = RunsConfig(concurrency=2, runs=40, arrival_per_hour=30.0, keep_log=keep_log)
    cell = runs_nb.NbCell(sc, cfg, 0)
    actual = sum(getattr(cell, a).nbytes for a in ("C", "B", "H", "R", "L", "Q"))
    assert actual <= runs_nb.cell_bytes(sc, cfg) <= 1.5 * actual + (1 << 16)
    big = RunsConfig(concurrency=2, runs=runs_nb.MAX_RUNS, arrival_per_hour=30.0)
    wide = sc.replace(outlines=300)
    assert runs_nb.cell_bytes(wide, big) > runs_nb.MAX_CELL_BYTES
    assert not nb_fits(wide, big) and pick_runs_engine(wide, big) == "fast"
    with pytest.raises(UserError, match="1 GiB of arrays"):
        pick_runs_engine(wide, big, "compiled")


@pytest.mark.parametrize("start", ["first", "early", "every"])
def test_the_tables_a_cell_starts_with_change_nothing(
    start: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whichever tables a cell draws before its loop runs (attempt 0's alone, as a large cell;
    attempts 0 and 1; every table, as cells alike that returned often: the choice depends on
    the cells run before in the process), its results equal SimPy's on the random cells."""
    monkeypatch.setattr(runs_nb._Shape, "start", lambda self, cell, runs: getattr(self, start))

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(cells())
    def check(cell: tuple[Scenario, RunsConfig, int]) -> None:
        sc, cfg, seed = cell
        a = simulate_runs(sc, cfg, seed, "simpy")
        assert results_differ(a, simulate_runs(sc, cfg, seed, "compiled")) is None

    check()
