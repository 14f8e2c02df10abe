"""The learner's metrics (sim.qoe): the playback model, keyed audio draws, the [playback]
table, closed forms on constant latencies, and the decision rule."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim import RunConfig, analytic, load_scenario, scenario_from_mapping, simulate
from sim.draws import Draws
from sim.fast import simulate_fast
from sim.qoe import (
    START_RULES,
    Candidate,
    Playback,
    QoERule,
    choose_concurrency,
    qoe_of_run,
    qoe_us,
)
from sim.scenario import ScenarioError

S = 1_000_000  # µs per second


def _one(ready, play, start="first_scene", buffer_s=0.0):
    q = qoe_us(np.array([ready]) * S, np.array([play]) * S, start, round(buffer_s * S))
    return q.row(0)


def test_the_learner_plays_back_to_back_and_waits_for_a_late_scene():
    # scene 0 ready at 10 plays 10-40; scene 1 (ready at 20) plays 40-70; scene 2 is
    # ready at 100: a stall of 100 - 70 = 30 s
    q = _one([10, 20, 100], [30, 30, 30])
    assert q["startup_s"] == 10 and q["stall_s"] == 30 and q["stalls"] == 1
    assert q["playback_s"] == 90 and q["stall_ratio"] == 30 / 90 and q["last_scene_s"] == 100


def test_a_scene_ready_exactly_when_needed_is_no_stall():
    q = _one([10, 40, 70], [30, 30, 30])
    assert q["stall_s"] == 0 and q["stalls"] == 0


def test_a_failed_scene_is_skipped_and_the_wait_for_the_next_counted():
    # scene 1 never ready: after scene 0 (10-40) the learner waits for scene 2 until 100
    q = _one([10, -1, 100], [30, 30, 30])
    assert q["stall_s"] == 60 and q["stalls"] == 1 and q["playback_s"] == 60


def test_no_scene_ready_gives_no_start_and_no_stall():
    q = _one([-1, -1], [30, 30])
    assert math.isnan(q["startup_s"]) and math.isnan(q["stall_ratio"])
    assert math.isnan(q["last_scene_s"]) and q["stall_s"] == 0 and q["stalls"] == 0


def test_start_rules_buffer_and_all_scenes():
    ready, play = [10, 20, 100], [30, 30, 30]
    # 45 s of buffer: scenes 0 and 1 (60 s) are ready at 20; start 20, play to 80, wait 20
    q = _one(ready, play, "buffer", 45.0)
    assert q["startup_s"] == 20 and q["stall_s"] == 20
    q = _one(ready, play, "all_scenes")
    assert q["startup_s"] == 100 and q["stall_s"] == 0 and q["stalls"] == 0
    q = _one(ready, play, "buffer", 1000.0)  # never reached: start when all are ready
    assert q["startup_s"] == 100


def _constant(outlines=4, **playback):
    m = load_scenario("default").to_mapping()
    m["name"] = "constant"
    m["classroom"]["outlines"] = outlines
    m["classroom"]["speech_actions"] = {"dist": "constant", "value": 3}
    m["latency"] = {
        "content": {"dist": "constant", "value_s": 20.0},
        "actions": {"dist": "constant", "value_s": 8.0},
        "tts": {"dist": "constant", "value_s": 2.0},
    }
    m["quota"] = {"llm": {}, "tts": {}}
    m["playback"] = {"clip": {"dist": "constant", "value_s": 4.0}, "non_speech_s": 5.0}
    m["playback"].update(playback)
    return scenario_from_mapping(m)


def test_serial_on_constant_latencies_matches_the_closed_form():
    sc = _constant()
    n, k = sc.outlines, 3
    tail = analytic.scene_tail(8.0, 2.0, k)  # S = A + kT = 14 s
    period = analytic.serial_ttfs(20.0, tail)  # a scene every C + S = 34 s
    play = 5.0 + k * 4.0  # 17 s per scene, so every later scene is late by 34 - 17 s
    r = simulate(sc, RunConfig.of("serial", 1), seed=1)[0]
    assert r.startup_s == pytest.approx(period)
    assert r.stalls == n - 1
    assert r.stall_s == pytest.approx((n - 1) * (period - play))
    assert r.stall_ratio == pytest.approx((n - 1) * (period - play) / (n * play))
    assert r.last_scene_s == pytest.approx(analytic.serial_makespan(n, 20.0, tail))


def test_pipelined_on_constant_latencies_matches_the_closed_form():
    # foreground scene 0 at C + S; then contents all start (c >= N - 1) and scene i >= 1 is
    # ready at (C + S) + C + i*S' with S' = A + ceil(k/c)T (clips c at a time)
    sc = _constant()
    c = 3
    fg = 20.0 + analytic.scene_tail(8.0, 2.0, 3)
    step = analytic.scene_tail(8.0, 2.0, 3, c)  # 10 s: faster than the 17 s of playback
    r = simulate(sc, RunConfig.of("pipelined", c), seed=1)[0]
    ready = [fg] + [fg + 20.0 + i * step for i in range(1, sc.outlines)]
    assert list(r.scene_ready_s) == pytest.approx(ready)
    # scene 1 is ready at fg + 30 while scene 0 ends at fg + 17: one stall of 13 s; then
    # each scene comes 10 s after the previous one and plays 17 s: no more stalls
    assert r.stalls == 1 and r.stall_s == pytest.approx(13.0)


def test_audio_draws_are_keyed_per_classroom_and_paired_across_modes():
    sc = load_scenario("default")
    whole = Draws(sc, 7, 0, 10).audio_us()
    alone = Draws(sc, 7, 4, 5).audio_us()
    np.testing.assert_array_equal(whole[4], alone[0])
    a = simulate(sc, RunConfig.of("serial", 1), seed=7, run_id=4)[0]
    b = simulate(sc, RunConfig.of("pipelined", 3), seed=7, run_id=4)[0]
    assert a.playback_s == b.playback_s  # the same scenes, the same playback


def test_fast_path_and_model_agree_on_the_learner_metrics():
    sc = load_scenario("tts-heavy")
    fast = simulate_fast(sc, RunConfig.of("pipelined", 3), 40, seed=2).results()
    model = simulate(sc, RunConfig.of("pipelined", 3), reps=40, seed=2, engine="simpy")
    fields = ("startup_s", "stall_s", "stalls", "stall_ratio", "last_scene_s", "playback_s")
    for f, m in zip(fast, model, strict=True):
        assert [getattr(f, k) for k in fields] == [getattr(m, k) for k in fields]
    frame = simulate_fast(sc, RunConfig.of("pipelined", 3), 40, seed=2).frame()
    np.testing.assert_array_equal(frame["stall_s"], [m.stall_s for m in model])


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"start": "never"}, "playback.start: must be one of first_scene, buffer, all_scenes"),
        ({"non_speech_s": -1}, "playback.non_speech_s: must be in"),
        ({"clip": {"dist": "lognormal", "median_s": 8}}, "playback.clip.sigma: required"),
        ({"start": "buffer"}, "playback.buffer_s: must be > 0 with start = 'buffer'"),
        ({"speed": 1.0}, "playback.speed: unknown field"),
    ],
)
def test_bad_playback_tables_fail_with_one_line_naming_the_field(table, message):
    m = load_scenario("default").to_mapping()
    m["playback"] = table
    with pytest.raises(ScenarioError) as e:
        scenario_from_mapping(m)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_the_playback_table_round_trips_and_defaults_apply():
    sc = _constant(start="buffer", buffer_s=30.0)
    assert scenario_from_mapping(sc.to_mapping()).playback == sc.playback
    m = sc.to_mapping()
    del m["playback"]
    assert scenario_from_mapping(m).playback == Playback()


def _c(c, fail=0.0, startup=40.0, stall=10.0, last=300.0):
    return Candidate(c, fail, startup, stall, last)


def test_the_rule_rejects_failures_stalls_and_startup_beyond_tolerance():
    rule = QoERule()
    serial = _c(1, fail=0.02, stall=20.0, last=400.0)
    cells = [
        _c(2, fail=0.031, stall=0.0),  # > 1 point more failures
        _c(3, stall=21.5, last=100.0),  # +1.5 s > max(5% of 20, 1 s)
        _c(4, startup=42.5),  # +2.5 s > max(5% of 40, 1 s)
        _c(5, stall=20.9, last=200.0),  # within tolerance
        _c(6, stall=20.9, last=150.0),  # as little stall, earlier last scene
    ]
    ch = choose_concurrency(rule, serial, cells)
    assert ch.why_not == {2: "failures", 3: "stall", 4: "startup"}
    assert ch.admissible == (1, 5, 6)
    assert ch.concurrency == 1  # serial stalls 20 s, 5 and 6 stall 20.9 s: serial wins (c)
    ch = choose_concurrency(rule, serial, [*cells, _c(7, stall=5.0, last=500.0)])
    assert ch.concurrency == 7  # the least stall first, even with a later last scene
    assert "max(5%, 1 s)" in rule.text() and rule.to_dict()["stall_tol_abs_s"] == 1.0


@settings(max_examples=300, deadline=None)
@given(
    cells=st.lists(
        st.tuples(st.one_of(st.just(-1), st.integers(0, 10**9)), st.integers(0, 10**8)),
        min_size=1,
        max_size=12,
    ),
    start=st.sampled_from(START_RULES),
    buffer_us=st.integers(1, 3 * 10**8),
)
def test_one_runs_metrics_in_plain_integers_equal_the_array_form(cells, start, buffer_us):
    # qoe_of_run (one result per classroom, plain ints) against qoe_us on the same row
    ready = [t for t, _ in cells]
    play = [p for _, p in cells]
    want = qoe_us(np.array([ready]), np.array([play]), start, buffer_us).row(0)
    pb = Playback(start=start, buffer_s=buffer_us / S)
    assert pb.buffer_us == buffer_us
    added = [(i, t) for i, t in enumerate(ready) if t >= 0]
    got = qoe_of_run(len(ready), added, dict(enumerate(play)), pb)
    assert got.keys() == want.keys()
    for k, v in want.items():
        assert type(got[k]) is type(v), k
        assert got[k] == v or (math.isnan(v) and math.isnan(got[k])), k
