"""The fast generation-runs engine (sim/runs_fast.py) on random cells: equal to the SimPy model
request for request, and the run machine's invariants hold on what it drives.

The invariants (runs-spec §3, docs/runs.md): a run never has more than max(c, 1) content
requests in flight (scene 0 alone, then the pool of min(c, pending) slots, or inline when
c <= 1); it sends actions(k) only after every earlier actions call succeeded and ended; every
request sent is resolved exactly once (an answer, a deadline's 504 or a pause's cancel), and
none is left in flight at the end."""

from __future__ import annotations

import dataclasses
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sim.rules import Step
from sim.run_machine import ReqId
from sim.runs import RunsConfig, RunsSettings, check_engines
from sim.runs_fast import FastWorld
from sim.runs_world import CANCELLED
from sim.scenario import Scenario, load_scenario

BASE = load_scenario("default", upstream="runs")


@st.composite
def cells(draw: st.DrawFn) -> tuple[Scenario, RunsConfig, int]:
    """A small random runs cell: keys, faults, the knob, caps, arrivals, confirmation."""
    ql = dataclasses.replace(
        BASE.quota_llm,
        max_inflight=draw(st.integers(0, 5)),
        p_429=draw(st.sampled_from([0.0, 0.1])),
        p_5xx=draw(st.sampled_from([0.0, 0.05, 0.3])),
        p_reset=draw(st.sampled_from([0.0, 0.05])),
        p_stall=draw(st.sampled_from([0.0, 0.02])),
        stall_s=400.0,
        rpm=draw(st.sampled_from([0.0, 30.0, 90.0])),
        rpm_burst=5,
    )
    if ql.rpm and draw(st.booleans()):  # a per-second window: the generic Provider.decide path
        ql = dataclasses.replace(ql, rpm_per_second=True)
    qt = dataclasses.replace(
        BASE.quota_tts,
        max_inflight=draw(st.integers(0, 3)),
        p_5xx=draw(st.sampled_from([0.0, 0.1])),
    )
    sc = BASE.replace(quota_llm=ql, quota_tts=qt, outlines=draw(st.integers(1, 6)))
    runs_settings = RunsSettings(
        confirm=draw(st.sampled_from(["auto", "countdown", "wait"])),
        free_on_give_up=draw(st.booleans()),
        content_deadline_s=draw(st.sampled_from([300.0, 40.0])),
        media_items=draw(st.sampled_from([0, 2])),
        media_p_fail=0.3,
    )
    cfg = RunsConfig(
        concurrency=draw(st.integers(0, 5)),
        runs=draw(st.integers(1, 6)),
        arrival_per_hour=draw(st.sampled_from([30.0, 300.0, 3000.0])),
        max_concurrent=draw(st.integers(1, 4)),
        per_owner=draw(st.integers(1, 3)),
        owners=draw(st.integers(0, 2)),
        settings=runs_settings,
    )
    return sc, cfg, draw(st.integers(0, 1000))


FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(cells())
def test_fast_equals_simpy_on_random_cells(cell: tuple[Scenario, RunsConfig, int]) -> None:
    ok, msg = check_engines(*cell)
    assert ok, msg


class _Spy(FastWorld):
    """The fast engine, remembering every request it decided (in decision order)."""

    def __init__(self, *a: Any) -> None:
        self.sent: list[tuple[int, ReqId]] = []
        super().__init__(*a)

    def _decide_req(self, t: int, req: tuple[int, int, int, int, int], dl: int) -> None:
        self.sent.append((t, ReqId(*req)))
        super()._decide_req(t, req, dl)


def _max_overlap(spans: list[tuple[int, int]]) -> int:
    """Most requests in flight at once; one ending at t is gone for one sent at t."""
    ev = sorted([(a, 1) for a, _ in spans] + [(b, -1) for _, b in spans])
    n = top = 0
    for _, d in ev:
        n += d
        top = max(top, n)
    return top


@FAST
@given(cells())
def test_run_machine_invariants_on_the_fast_engine(cell: tuple[Scenario, RunsConfig, int]) -> None:
    sc, cfg, seed = cell
    w = _Spy(sc, cfg, seed)
    w.run()
    assert not w.flight  # nothing left in flight
    # every request sent is resolved exactly once, and only requests sent are resolved
    sent = sorted((q.run, q.step, q.order, q.clip, q.attempt) for _, q in w.sent)
    logged = sorted(tuple(row[1:6]) for row in w.log)
    assert sent == logged
    assert len(set(sent)) == len(sent)
    by_run: dict[int, list[tuple[int, ...]]] = {}
    for row in w.log:
        by_run.setdefault(row[1], []).append(row)
    for rows in by_run.values():
        content = [(r[0], r[8]) for r in rows if r[2] == Step.CONTENT]
        assert _max_overlap(content) <= max(cfg.c, 1)
        actions = sorted((r for r in rows if r[2] == Step.ACTIONS), key=lambda r: (r[3], r[5]))
        for k in sorted({r[3] for r in actions}):
            first_send = min(r[0] for r in actions if r[3] == k)
            for earlier in {r[3] for r in actions if r[3] < k}:
                last = max((r for r in actions if r[3] == earlier), key=lambda r: r[5])
                assert last[6] == 200 and last[8] <= first_send  # it succeeded, and before
    assert all(row[6] != CANCELLED or row[2] != Step.TTS for row in w.log)  # clips never


def test_small_blocks_of_draws_give_the_same_cells(monkeypatch: Any) -> None:
    """Blocks of 3 runs, 2 kept at once (dropped and drawn again while runs still need them):
    the same request logs and records as the SimPy model."""
    from sim.runs import check_cells

    monkeypatch.setattr(FastWorld, "chunk", 3)
    monkeypatch.setattr(FastWorld, "keep", 2)
    cells = [(sc, cfg, seed) for _, sc, cfg, seed in check_cells()]
    busy = BASE.with_quota(llm_inflight=4, tts_inflight=2)
    cells.append((busy, RunsConfig(concurrency=3, runs=30, arrival_per_hour=400.0), 7))
    for sc, cfg, seed in cells:
        ok, msg = check_engines(sc, cfg, seed)
        assert ok, msg
