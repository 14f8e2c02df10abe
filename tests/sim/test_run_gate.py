"""The key-wide gate across runs (sim/run_gate.py), derived from its rules on tiny cells with
constant latencies: outline 10 s, agents 2 s, content 20 s, actions 5 s, a clip 1 s, two clips
a scene, no random faults. A run's work before its first scene on the LLM key is then
S = 10 + 2 + 20 + 5 = 37 s, and the gate serves it (tier 0) before any run's later scenes.
The other orders the gate was measured with (sim.run_gate.GateOrder, RunsConfig.gate_order)
are derived on one cell."""

from __future__ import annotations

import dataclasses
import itertools

import pytest

from runner.experiments.runs_exact import gate_cells
from sim.dists import Constant, int_dist_from_mapping
from sim.errors import UserError
from sim.keygate import UNLIMITED_CAP
from sim.rules import MAX_429_WAITS, Step
from sim.run_gate import RunGates, gate_rank
from sim.run_machine import LLM_KEY, MEDIA_KEY, TTS_KEY, ReqId
from sim.runs import RunsConfig, RunsSettings, check_engines, simulate_runs
from sim.scenario import Scenario, load_scenario

S = 1_000_000
FIRST_US = (10 + 2 + 20 + 5) * S  # a run's LLM work up to its first scene's narration
FIXED = RunsSettings(outline=Constant(10.0), agents=Constant(2.0))


def _const(llm: int, tts: int = 0) -> Scenario:
    sc = load_scenario("default", upstream="runs").with_quota(llm_inflight=llm, tts_inflight=tts)
    return sc.replace(
        content=Constant(20.0),
        actions=Constant(5.0),
        tts=Constant(1.0),
        speech_actions=int_dist_from_mapping({"dist": "constant", "value": 2}),
        quota_llm=dataclasses.replace(sc.quota_llm, p_5xx=0.0),
        quota_tts=dataclasses.replace(sc.quota_tts, p_5xx=0.0),
    )


def _cfg(n: int, c: int = 2, **kw: object) -> RunsConfig:
    at_once = tuple((0.0, o) for o in range(n))
    return RunsConfig(c, arrivals=at_once, max_concurrent=n, per_owner=n, settings=FIXED, **kw)  # type: ignore[arg-type]


def _sent(log: list[tuple[int, ...]], run: int, step: int, order: int) -> int:
    return min(r[0] for r in log if (r[1], r[2], r[3]) == (run, step, order))


def test_two_runs_on_one_slot_no_429_and_learner_first_order() -> None:
    sc, cfg = _const(1), _cfg(2, adaptive="gate")
    res = simulate_runs(sc, cfg, 1)
    log = res.log
    assert all(r[6] != 429 for r in log)  # the gate never lets a second request reach the key
    llm = sorted((r[0], r[8]) for r in log if r[2] != Step.TTS)
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(llm))  # one at a time
    # run 0 (first by rank at the same arrival) does its whole first scene's LLM work first;
    # run 1's outline passes next, ahead of run 0's content generated ahead (tier 1)
    assert _sent(log, 0, Step.OUTLINE, 0) == 0
    assert _sent(log, 1, Step.OUTLINE, 0) == FIRST_US
    assert _sent(log, 0, Step.CONTENT, 1) == 2 * FIRST_US
    assert [r.state for r in res.records] == ["completed", "completed"]
    off = simulate_runs(sc, dataclasses.replace(cfg, adaptive="off"), 1)
    assert any(r[6] == 429 for r in off.log)  # without the gate the second outline meets 429


def test_a_deadline_starts_when_the_attempt_passes_the_gate() -> None:
    # run 0's content(1) is made once its scene 0 is written (37 s + its two clips at c = 2:
    # 38 s) and passes the gate at 74 s, after run 1's first scene: 36 s of waiting, more
    # than a 21 s content deadline; it is served in 20 s and succeeds
    st = dataclasses.replace(FIXED, content_deadline_s=21.0)
    cfg = dataclasses.replace(_cfg(2, adaptive="gate"), settings=st)
    res = simulate_runs(_const(1), cfg, 1)
    row = next(r for r in res.log if (r[1], r[2], r[3]) == (0, Step.CONTENT, 1))
    assert row[0] == 2 * FIRST_US and row[8] - row[0] == 20 * S and row[6] == 200
    assert all(r[6] != 504 for r in res.log)
    assert [r.state for r in res.records] == ["completed", "completed"]


def test_an_outline_waiting_past_its_step_deadline_answers_504_unsent() -> None:
    # twelve runs at once on one slot: run k's outline passes the gate at k·37 s; the
    # outline's 300 s deadline is the whole step's, from the claim at 0. Run 8's passes at
    # 296 s and answers 504 at 300 s (10 s to go); runs 9..11 are still waiting at 300 s:
    # they never reach the provider. All four pause at the outline at 300 s.
    res = simulate_runs(_const(1), _cfg(12, adaptive="gate"), 1)
    recs = res.records
    expired = [r.run for r in recs if r.paused_at == "outline"]
    limit = 300 * S
    assert expired == [k for k in range(12) if k * FIRST_US + 10 * S > limit]
    for k in expired:
        assert recs[k].end_s == pytest.approx(300.0)
        sent = [r for r in res.log if (r[1], r[2]) == (k, Step.OUTLINE)]
        assert all(r[6] == 504 and r[8] == limit for r in sent)
        assert len(sent) == (1 if k * FIRST_US < limit else 0)


def test_a_429_from_an_rpm_window_requeues_without_spending_the_budget() -> None:
    # 2 requests a minute with a burst of 2: most attempts meet 429; with the gate a call
    # meets more 429s than its whole budget (5 retries) and its run still completes
    sc = _const(0)
    sc = sc.replace(quota_llm=dataclasses.replace(sc.quota_llm, rpm=2.0, rpm_burst=2))
    cfg = _cfg(1, c=1, adaptive="gate")
    res = simulate_runs(sc, cfg, 1)
    per_call: dict[tuple[int, ...], int] = {}
    for r in res.log:
        if r[6] == 429:
            per_call[(r[1], r[2], r[3], r[4])] = per_call.get((r[1], r[2], r[3], r[4]), 0) + 1
    assert max(per_call.values()) > 5
    assert max(per_call.values()) <= MAX_429_WAITS
    assert res.records[0].state == "completed"
    off = simulate_runs(sc, dataclasses.replace(cfg, adaptive="off"), 1)
    assert off.records[0].state == "paused" and off.records[0].pause_status == 429


def test_rank_tiers() -> None:
    # the default order: a run's work before its first scene (tier 0), then by arrival
    arrival = 7
    first = [ReqId(s, 1, 0, 0, 0) for s in (Step.OUTLINE, Step.AGENTS, Step.CONTENT, Step.TTS)]
    later = gate_rank(ReqId(Step.CONTENT, 0, 1, 0, 0), 0)  # an older run's later scene
    assert all(gate_rank(q, arrival) < later for q in first)  # a new run's first scene first
    # inside a run: the scene it plays next (actions, clips) before content generated ahead
    assert gate_rank(ReqId(Step.ACTIONS, 0, 3, 0, 0), 0) < gate_rank(ReqId(0, 0, 4, 0, 0), 0)
    assert gate_rank(ReqId(Step.TTS, 0, 3, 1, 0), 0) < gate_rank(ReqId(0, 0, 4, 0, 0), 0)


def test_rank_need_time() -> None:
    # the need-time order: a run's first scene is needed at its arrival, its scene k at its
    # first scene's time + the playback of the scenes before it; then run, scene, step
    first = [ReqId(s, 1, 0, 0, 0) for s in (Step.OUTLINE, Step.AGENTS, Step.CONTENT, Step.TTS)]
    q1 = ReqId(Step.CONTENT, 0, 1, 0, 0)  # run 0 (arrived at 0, first scene at 20): scene 1
    older = gate_rank(q1, 0, 25, "need", 20)  # needed at 20 + 25 = 45
    assert all(gate_rank(q, 44, 0, "need") < older for q in first)  # arriving at 44: sooner
    assert all(gate_rank(q, 46, 0, "need") > older for q in first)  # arriving at 46: later
    actions, ahead = ReqId(Step.ACTIONS, 0, 3, 0, 0), ReqId(0, 0, 4, 0, 0)
    assert gate_rank(actions, 0, 9, "need", 5) < gate_rank(ahead, 0, 9, "need", 5)
    # need times from the arrival instead (need-arrival), and fifo
    q0 = ReqId(Step.OUTLINE, 1, 0, 0, 0)
    assert gate_rank(q0, 30, 0, "need-arrival") > gate_rank(q1, 0, 25, "need-arrival", 20)
    assert gate_rank(q0, 50, 0, "tiers") < gate_rank(q1, 0, 25, "tiers", 20)
    assert gate_rank(q0, 30, 0, "fifo") > gate_rank(q1, 0, 25, "fifo", 20)


def later_run_cell(order: str) -> tuple[Scenario, RunsConfig]:
    """Run 1 arriving at 50 s behind run 0 (at 0 s) on one slot, the gate in ``order``.
    Three scenes, each playing 5 s + 2 clips × 1 s = 7 s."""
    sc = _const(1).replace(outlines=3)
    sc = sc.replace(playback=dataclasses.replace(sc.playback, clip=Constant(1.0)))
    arrivals = ((0.0, 0), (50.0, 1))
    return sc, RunsConfig(2, arrivals=arrivals, settings=FIXED, adaptive="gate", gate_order=order)


def later_outline_us(log: list[tuple[int, ...]]) -> int:
    """When run 1 sends its outline."""
    return _sent(log, 1, Step.OUTLINE, 0)


LATER_RUN_S = [("need", 63), ("need-arrival", 88), ("tiers", 58), ("fifo", 88)]


@pytest.mark.parametrize("engine", ["simpy", "fast"])
@pytest.mark.parametrize(("order", "sent_s"), LATER_RUN_S)
def test_the_orders_on_a_later_run(order: str, sent_s: int, engine: str) -> None:
    # run 0 writes scene 0 at 38 s (37 s of LLM work, its clips 37..38 s): its learner needs
    # scene 1 at 45 s, scene 2 at 52 s. content(1) and content(2) are made then (c = 2);
    # (1) passes at once (38..58 s), (2) waits. Run 1's outline is made at 50 s (needed
    # then). At 58 s actions(1) is made. need: actions(1) (45 s) at 58 s, then run 1's
    # outline (50 s) ahead of content(2) (52 s) at 63 s. tiers: the outline at 58 s, as soon
    # as the slot frees. need-arrival (scene k needed at 0 + 7k s) and fifo: run 0's
    # actions(1), content(2) (63..83 s) and actions(2) (83..88 s) first: 88 s.
    res = simulate_runs(*later_run_cell(order), 1, engine)
    assert [r.state for r in res.records] == ["completed", "completed"]
    assert later_outline_us(res.log) == sent_s * S


def test_a_bad_gate_order_is_one_user_error() -> None:
    with pytest.raises(UserError, match=r"^--gate-order: must be one of need, need-arrival, ti"):
        RunsConfig(2, adaptive="gate", gate_order="lifo")
    with pytest.raises(UserError, match="needs --adaptive gate"):
        RunsConfig(2, gate_order="need")
    assert RunsConfig(2).gate_order == "tiers"


def test_gates_caps_and_media() -> None:
    g = RunGates(_const(3, 0), [0, 0])
    assert g.gates[LLM_KEY].cap == 3 and g.gates[TTS_KEY].cap == UNLIMITED_CAP
    assert MEDIA_KEY not in g.gates  # no gate for the media key
    q = ReqId(Step.MEDIA, 0, 0, 0, 0)
    assert g.offer(5, q, MEDIA_KEY, 100) is None
    admitted, _ = g.pump(5)
    assert [(a.req, a.deadline_us) for a in admitted] == [(q, 100)]


def test_gate_engines_agree_on_the_gate_cells() -> None:
    for name, sc, cfg, seed in gate_cells():
        ok, why = check_engines(sc, cfg, seed)
        assert ok, f"{name}: {why}"


@pytest.mark.parametrize("order", ["need", "need-arrival", "fifo"])
def test_gate_engines_agree_under_every_order(order: str) -> None:
    # the orders docs/runs.md compares: the fast engine equals the SimPy model under each
    for name, sc, cfg, seed in gate_cells(order=order):
        assert cfg.gate_order == order
        ok, why = check_engines(sc, cfg, seed)
        assert ok, f"{order}, {name}: {why}"


def test_gate_engines_agree_on_random_cells() -> None:
    from runner.experiments.runs_exact import random_cells

    for name, sc, cfg, seed in random_cells(3, 12):
        ok, why = check_engines(sc, dataclasses.replace(cfg, adaptive="gate"), seed)
        assert ok, f"{name}: {why}"


def test_other_policies_are_refused() -> None:
    with pytest.raises(UserError, match="adaptive"):
        RunsConfig(2, adaptive="aimd")
