"""Generation runs through the engines (sim/runs.py): the issue's "done when" rules, derived
here from upstream's constants, and the fast engine against the SimPy model."""

from __future__ import annotations

import dataclasses
import math

import pytest

from sim.dists import Constant
from sim.errors import UserError
from sim.rules import Step
from sim.run_machine import Phase
from sim.run_server import (
    ACTIVE_RUN_LIMIT,
    Arrive,
    Claim,
    Confirm,
    Ended,
    Refuse,
    ServerMachine,
    ServerSpec,
    ServerTimer,
    SetServerTimer,
)
from sim.runs import RunsConfig, RunsSettings, check_cells, simulate_runs
from sim.scenario import Scenario, load_scenario

S = 1_000_000


def _const(**kw: float) -> Scenario:
    """Constant latencies (content 20 s, actions 5 s, clip 1 s; outline 10 s, agents 2 s), two
    clips a scene, no random faults."""
    sc = load_scenario("default", upstream="runs")
    q0 = dataclasses.replace(sc.quota_llm, p_5xx=0.0)
    q1 = dataclasses.replace(sc.quota_tts, p_5xx=kw.pop("tts_p_5xx", 0.0))
    from sim.dists import int_dist_from_mapping

    return sc.replace(
        content=Constant(20.0),
        actions=Constant(5.0),
        tts=Constant(1.0),
        speech_actions=int_dist_from_mapping({"dist": "constant", "value": 2}),
        quota_llm=q0,
        quota_tts=q1,
        **kw,
    )


FIXED = RunsSettings(outline=Constant(10.0), agents=Constant(2.0))


@pytest.mark.parametrize(
    ("u", "sleeps_ms"),
    [
        (0.0, 1000 + 2000 + 4000 + 8000 + 16000),
        # floor(exp·0.5·0.2) added, the 5th capped at 16 s
        (0.5, 1100 + 2200 + 4400 + 8800 + 16000),
    ],
)
def test_a_content_slower_than_its_deadline_gives_six_attempts_then_pauses(
    u: float, sleeps_ms: int
) -> None:
    # 2 scenes: no pool (|pending| = 1), scene 1's content inline with SCENE_MAX_RETRIES = 5
    sc = (
        _const()
        .replace(
            outlines=2, scene_types=("slide", "quiz"), content_by_type={"quiz": Constant(400.0)}
        )
        .with_client(jitter_u=u)
    )
    res = simulate_runs(sc, RunsConfig(concurrency=3, arrivals=((0.0, 0),), settings=FIXED))
    rows = [e for e in res.log if (e[2], e[3]) == (Step.CONTENT, 1)]
    assert [e[5] for e in rows] == list(range(6)) and {e[6] for e in rows} == {504}
    start = rows[0][0]
    assert start == (10 + 2 + 20 + 5 + 1) * S  # outline, agents, scene 0 (its 2 clips at once)
    r = res.records[0]
    assert r.state == "paused" and r.paused_at == "scene:1:content" and r.pause_status == 504
    assert round(r.end_s * S) == start + 6 * 300 * S + sleeps_ms * 1000
    assert r.timeouts == 6 and r.failed_scenes == (1,)


def test_six_runs_together_with_a_cap_of_four_the_fifth_starts_when_the_first_ends() -> None:
    sc = _const().replace(outlines=3)
    arr = tuple((0.0, o) for o in range(6))  # six learners at once
    res = simulate_runs(
        sc, RunsConfig(concurrency=2, arrivals=arr, max_concurrent=4, settings=FIXED)
    )
    recs = res.records
    assert [r.wait_s for r in recs[:4]] == [0.0] * 4
    ends = sorted(r.end_s for r in recs[:4])
    # the first to end frees the slot for the oldest waiting run (run 4), within a scan
    assert ends[0] <= recs[4].wait_s <= ends[0] + FIXED.scan_interval_s
    assert recs[4].wait_s == ends[0]  # a run's end wakes the runner at once
    assert recs[5].wait_s == ends[1]
    assert all(r.state == "completed" for r in recs)


def test_a_third_active_run_of_one_owner_is_refused_with_429() -> None:
    sc = _const().replace(outlines=2)
    # owner 0 asks three times at once, then again long after the first two completed
    arr = ((0.0, 0), (0.0, 0), (0.0, 0), (0.0, 1), (5000.0, 0))
    res = simulate_runs(sc, RunsConfig(concurrency=2, arrivals=arr, per_owner=2, settings=FIXED))
    assert [r.state for r in res.records] == [
        "completed",
        "completed",
        "refused",
        "completed",
        "completed",
    ]
    assert res.summary()["refused"] == 1
    s = ServerMachine(ServerSpec(per_owner=2))
    cmds = s.feed(0, [Arrive(0, 9), Arrive(1, 9), Arrive(2, 9)])
    assert Refuse(2, 0) in cmds and Refuse(2, 0).status == 429
    assert Refuse(2, 0).code == ACTIVE_RUN_LIMIT == "ACTIVE_RUN_LIMIT"


def test_a_clip_that_fails_after_its_retries_pauses_the_run_at_that_scene() -> None:
    # every TTS attempt answers 500: scene 0's first clip fails after 3 attempts (2 retries)
    sc = _const(tts_p_5xx=1.0).replace(outlines=3).with_client(jitter_u=0.0)
    res = simulate_runs(sc, RunsConfig(concurrency=0, arrivals=((0.0, 0),), settings=FIXED))
    r = res.records[0]
    assert r.state == "paused" and r.paused_at == "scene:0:narration" and r.scenes_ok == 0
    start = (10 + 2 + 20 + 5) * S
    assert round(r.end_s * S) == start + 3 * 1 * S + (1000 + 2000) * 1000  # serial, stops
    assert math.isnan(r.first_scene_s)


def test_a_waiting_run_counts_as_active_and_a_paused_one_does_not() -> None:
    s = ServerMachine(ServerSpec(max_concurrent=1, per_owner=2))
    assert s.feed(0, [Arrive(0, 5), Arrive(1, 5)]) == [Claim(0, 0)]  # run 1 waits, counted
    assert s.feed(1, [Arrive(2, 5)]) == [Refuse(2, 1)]
    assert s.feed(2, [Ended(0, Phase.PAUSED)]) == [Claim(1, 2)]
    assert s.feed(3, [Arrive(3, 5)]) == [] and s.active(5) == 2  # run 3 queued behind run 1


def test_a_countdown_is_confirmed_at_the_first_scan_tick_after_2_5_s() -> None:
    s = ServerMachine(ServerSpec(confirm=Confirm.COUNTDOWN, scan_us=S))
    s.feed(0, [Arrive(0, 0)])
    cmds = s.feed(1_300_000, [Ended(0, Phase.AWAITING)])  # due 3.8 s → tick at 4 s
    assert cmds == [SetServerTimer(4 * S, ServerTimer(0, 0))]
    assert s.feed(4 * S, [ServerTimer(0, 0)]) == [Claim(0, 4 * S)]


def test_the_check_cells_exercise_what_they_claim() -> None:
    got = {name: simulate_runs(sc, cfg, seed) for name, sc, cfg, seed in check_cells()}
    assert got["refused"].summary()["refused"] >= 1
    assert got["deadlines"].summary()["timeouts"] >= 1
    assert any(r.wait_s > 0 for r in got["arrivals-cap"].records)
    assert got["arrivals-cap"].summary()["media_failed"] >= 1
    assert sum(r.media_ok for r in got["arrivals-cap"].records) >= 1
    assert got["limited-key"].summary()["http_429"] > 0
    assert got["countdown"].summary()["completed"] + got["countdown"].summary()["paused"] == 6
    assert got["wait-confirm"].summary()["confirm_refusals"] >= 1


def test_same_seed_same_cell_and_another_seed_another() -> None:
    _, sc, cfg, _ = check_cells()[0]
    a, b = simulate_runs(sc, cfg, 7), simulate_runs(sc, cfg, 7)
    assert a.log == b.log and repr(a.records) == repr(b.records)
    assert simulate_runs(sc, cfg, 8).log != a.log


def test_a_provider_that_frees_slots_on_give_up_admits_sooner() -> None:
    # one in-flight slot; the outline stalls past its deadline (300 s): with the slot kept,
    # the next run's outline is refused (429) until the stalled request ends at 900 s
    sc = _const().replace(outlines=1).with_quota(llm_inflight=1)
    slow = dataclasses.replace(FIXED, outline=Constant(900.0), outline_attempts=1)
    arr = ((0.0, 0), (301.0, 1))
    keep = simulate_runs(sc, RunsConfig(arrivals=arr, settings=slow))
    free = simulate_runs(
        sc, RunsConfig(arrivals=arr, settings=dataclasses.replace(slow, free_on_give_up=True))
    )
    k1 = [e for e in keep.log if e[1] == 1 and e[2] == Step.OUTLINE]
    f1 = [e for e in free.log if e[1] == 1 and e[2] == Step.OUTLINE]
    assert k1[0][6] == 429 and f1[0][6] in (200, 504)


def test_bad_config_is_one_line_user_error() -> None:
    with pytest.raises(UserError, match="max_concurrent"):
        RunsConfig(max_concurrent=0)
    with pytest.raises(UserError, match="arrival_per_hour"):
        RunsConfig(arrival_per_hour=-1.0)
    with pytest.raises(UserError, match="engine"):
        simulate_runs(_const(), RunsConfig(runs=1), engine="warp")


def test_a_replay_file_and_a_runs_table_are_read_or_refused_in_one_line(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from sim.rules import ScenarioError
    from sim.runs_config import load_arrivals, runs_settings_from_mapping

    f = tmp_path / "a.csv"
    f.write_text("t_s,owner\n# two learners\n0,3\n12.5\n", encoding="utf-8")
    assert load_arrivals(f) == ((0.0, 3), (12.5, 1))  # no owner: one of its own
    f.write_text("soon,3\n", encoding="utf-8")
    with pytest.raises(UserError, match="line 1"):
        load_arrivals(f)
    st = runs_settings_from_mapping(
        {"confirm": "countdown", "outline": {"dist": "constant", "value_s": 7.0}}
    )
    assert st.confirm == "countdown" and st.us("countdown_s") == 2_500_000
    with pytest.raises(ScenarioError, match=r"runs\.confirm"):
        runs_settings_from_mapping({"confirm": "later"})
    with pytest.raises(ScenarioError, match=r"runs\.speed"):
        runs_settings_from_mapping({"speed": 1})


def _peak(spans: list[tuple[int, int]]) -> int:
    """Most intervals [start, end) open at once (an end at t frees before a start at t)."""
    edges = sorted([(e, -1) for _, e in spans] + [(s, 1) for s, _ in spans])
    peak = now = 0
    for _, d in edges:
        now += d
        peak = max(peak, now)
    return peak


@pytest.mark.parametrize(("c", "seed"), [(0, 1), (2, 2), (3, 3), (5, 4)])
def test_caps_hold_in_random_cells(c: int, seed: int) -> None:
    # upstream's bounds: per run at most c contents ahead + 1 main-loop LLM request, at most
    # max(c, 1) clips; per server at most max_concurrent executions (auto: claim to end)
    sc = load_scenario("default", upstream="runs").with_quota(llm_inflight=6, tts_inflight=4)
    cfg = RunsConfig(concurrency=c, runs=12, arrival_per_hour=90.0, max_concurrent=3, owners=4)
    res = simulate_runs(sc, cfg, seed)
    for r in range(12):
        rows = [e for e in res.log if e[1] == r and e[8] > e[0]]
        llm = [(e[0], e[8]) for e in rows if e[2] != Step.TTS]
        tts = [(e[0], e[8]) for e in rows if e[2] == Step.TTS]
        assert _peak(llm) <= max(c, 1) + 1 and _peak(tts) <= max(c, 1)
    started = [x for x in res.records if not x.refused]
    spans = [
        (round((x.arrival_s + x.wait_s) * S), round((x.arrival_s + x.end_s) * S)) for x in started
    ]
    assert _peak(spans) <= 3
    assert all(x.state in ("completed", "paused") for x in started)


def test_a_confirmed_run_is_claimed_behind_runs_touched_before_its_confirmation() -> None:
    # one slot; A's outline is ready at 5 s (countdown due 7.5 s → confirmed at the 8 s tick,
    # updated_at 8 s); C arrived at 6 s (updated_at 6 s), so when B ends, C goes first
    s = ServerMachine(ServerSpec(max_concurrent=1, per_owner=5, confirm=Confirm.COUNTDOWN))
    assert s.feed(0, [Arrive(0, 0)]) == [Claim(0, 0)]
    assert s.feed(1 * S, [Arrive(1, 1)]) == []
    cmds = s.feed(5 * S, [Ended(0, Phase.AWAITING)])
    assert cmds == [SetServerTimer(8 * S, ServerTimer(0, 0)), Claim(1, 5 * S)]
    assert s.feed(6 * S, [Arrive(2, 2)]) == []
    assert s.feed(8 * S, [ServerTimer(0, 0)]) == []  # confirmed, no free slot
    assert s.feed(20 * S, [Ended(1, Phase.COMPLETED)]) == [Claim(2, 20 * S)]
    assert s.feed(30 * S, [Ended(2, Phase.PAUSED)]) == [Claim(0, 30 * S)]


def test_a_countdown_run_is_claimed_again_at_the_scan_after_2_5_s() -> None:
    sc = _const().replace(outlines=1)
    cd = dataclasses.replace(FIXED, confirm="countdown")
    res = simulate_runs(sc, RunsConfig(concurrency=2, arrivals=((0.3, 0),), settings=cd))
    r = res.records[0]
    # outline ready at 10.3 s → due 12.8 s → the 13 s tick (scans every 1 s from 0) → claimed;
    # then agents 2 s, content 20 s, actions 5 s, both clips at once 1 s
    assert round(r.first_scene_s * S) == (13 + 2 + 20 + 5 + 1) * S - 300_000
