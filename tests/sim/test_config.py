"""One run's settings as one value (:class:`sim.RunConfig`), the model's one entry point
``simulate(scenario, config, ...)`` and its one engine rule (:func:`sim.pick_engine`)."""

import dataclasses
import math
import re

import pytest

from sim import (
    MODES,
    ClockKind,
    Mode,
    Policy,
    RunConfig,
    RunStatus,
    pick_engine,
    simulate,
)
from sim.limiter import POLICIES
from sim.rules import MAX_CONCURRENCY, Counts, tts_concurrency
from sim.timeline import Timeline, run_result
from tests.conftest import const_scenario


def test_enums_equal_their_strings_and_the_old_tuples():
    assert POLICIES == ("off", "halve", "aimd", "gate") == tuple(Policy)
    assert MODES == ("serial", "hybrid", "pipelined") == tuple(Mode)
    assert tuple(ClockKind) == ("wall", "virtual")


def test_config_converts_and_clamps():
    cfg = RunConfig.of("pipelined", 15, adaptive="gate")
    assert cfg.mode is Mode.PIPELINED and cfg.adaptive is Policy.GATE
    assert cfg.mode == "pipelined" and cfg.adaptive == "gate"
    assert cfg.concurrency == MAX_CONCURRENCY  # the knob's clamp
    assert RunConfig.of("serial", -2).concurrency == 0
    unread = RunConfig.of("serial", None)  # the real world reads the provider's knob
    assert unread.concurrency is None and unread.c == 0
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.tenants = 2  # type: ignore[misc]


def test_tts_concurrency_follows_the_profile_rule():
    # (mode, c, asked, the profile has #696's rule): the one rule, under one name
    assert tts_concurrency("serial", 3, None, True) == 1
    assert tts_concurrency("pipelined", 3, None, True) == 3
    assert tts_concurrency("pipelined", 3, None, False) == 1
    assert tts_concurrency("pipelined", 3, 2, True) == 2
    sc = const_scenario(4, 10.0, 2.0, 1.0, clips=2)
    assert simulate(sc, RunConfig.of("pipelined", 3))[0].tts_concurrency == 3
    assert simulate(sc, RunConfig.of("pipelined", 3, tts_concurrency=2))[0].tts_concurrency == 2


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"adaptive": "fast"}, "adaptive: must be one of off, halve, aimd, gate; got 'fast'"),
        ({"stagger_s": -1.0}, "stagger_s: must be a finite number >= 0, got -1.0"),
        ({"stagger_s": math.inf}, "stagger_s: must be a finite number >= 0, got inf"),
        ({"tenants": 0}, "tenants: must be >= 1, got 0"),
        ({"stagger_dist": "poisson"}, "stagger_dist: must be one of constant, exponential"),
    ],
)
def test_config_validation_messages(kw, message):
    with pytest.raises(ValueError, match="^" + re.escape(message)):
        RunConfig.of("pipelined", 3, **kw)
    with pytest.raises(ValueError, match=r"^mode: must be one of serial, hybrid, pipelined"):
        RunConfig("turbo", 3)  # type: ignore[arg-type]


def test_simulate_runs_reps_of_every_tenant_in_order():
    sc = const_scenario(4, 10.0, 2.0, 1.0, clips=1).with_quota(llm_inflight=3)
    with pytest.raises(ValueError, match=r"^tenants: must be >= 1, got 0"):
        simulate(sc, RunConfig.of("pipelined", 3, tenants=0))
    with pytest.raises(ValueError, match=r"^reps: must be >= 1, got 0"):
        simulate(sc, RunConfig.of("pipelined", 3), reps=0)
    with pytest.raises(ValueError, match=r"^seed and run_id: must be >= 0"):
        simulate(sc, RunConfig.of("pipelined", 3), run_id=-1)
    cfg = RunConfig.of("hybrid", 2, tenants=3)
    res = simulate(sc, cfg, run_id=2)
    # classroom ids run_id * tenants + j
    assert [r.classroom for r in res] == [6, 7, 8]
    assert [(r.tenant, r.tenants) for r in res] == [(0, 3), (1, 3), (2, 3)]
    # a batch of runs is its runs one by one (the draws are keyed by classroom)
    batch = simulate(sc, cfg, run_id=1, reps=2)
    alone = simulate(sc, cfg, run_id=1) + res
    assert [r.to_json() for r in batch] == [r.to_json() for r in alone]  # NaN-safe equality


def test_the_engine_rule():
    free = const_scenario(4, 10.0, 2.0, 1.0, clips=1)  # quota-free keys
    tight = free.with_quota(llm_inflight=3)
    one = RunConfig.of("pipelined", 3)
    assert pick_engine(free, one, 200) == "fast"
    assert pick_engine(free, one, 199) == "simpy"  # too few runs to pay for the set-up
    assert pick_engine(tight, one, 1000) == "fast_quota"  # an in-flight limit: lock step
    assert pick_engine(tight, one, 199) == "simpy"
    assert pick_engine(free, RunConfig.of("pipelined", 3, tenants=2), 1000) == "simpy"
    assert pick_engine(free, RunConfig.of("pipelined", 3, adaptive="gate"), 1000) == "simpy"
    assert pick_engine(free, one, 1, "fast") == "fast"  # as asked
    with pytest.raises(ValueError, match=r"^engine: must be one of auto, simpy, fast"):
        pick_engine(free, one, 1, "turbo")
    with pytest.raises(ValueError, match=r"^engine: the vectorised path needs"):
        simulate(tight, one, engine="fast")
    # both engines give the same runs
    a = simulate(free, one, reps=3, seed=4, engine="fast")
    b = simulate(free, one, reps=3, seed=4, engine="simpy")
    assert [r.to_json() for r in a] == [r.to_json() for r in b]


def test_run_result_of_a_timeline():
    sc = const_scenario(3)
    counts = Counts(requests=7, http_429=1, http_5xx=2, retries=3, timeouts=1)
    tl = Timeline([(0, 2_500_000), (2, 9_000_000)], [1], counts, RunStatus.PAUSED, 12_000_000)
    r = run_result(
        sc,
        tl,
        {0: 1_000_000, 2: 1_000_000},
        world="sim",
        mode=Mode.HYBRID,
        concurrency=2,
        tts_concurrency=1,
        seed=5,
        classroom=4,
    )
    assert type(r.mode) is str and r.mode == "hybrid" and r.status == "paused"
    assert (r.makespan_s, r.ttfs_s, r.last_scene_s) == (12.0, 2.5, 9.0)
    assert (r.scenes_ok, r.scenes_failed, r.failed_orders) == (2, 1, (1,))
    assert (r.scene_order, r.scene_ready_s) == ((0, 2), (2.5, 9.0))
    assert (r.requests, r.http_429, r.http_5xx, r.retries, r.timeouts) == (7, 1, 2, 3, 1)
    assert (r.seed, r.classroom, r.tenants, r.tenant, r.requests_log) == (5, 4, 1, 0, ())


def test_a_bad_mode_is_named_first_in_both_worlds():
    # one order for every entry point: the mode, then the policy (the pipeline always did)
    with pytest.raises(ValueError, match=r"^mode: "):
        RunConfig.of("turbo", 3, adaptive="fast")
    sc = const_scenario(4, 10.0, 2.0, 1.0, clips=1)
    with pytest.raises(ValueError, match=r"^mode: "):
        simulate(sc, RunConfig.of("turbo", 3, adaptive="fast"))
    from runner import run

    with pytest.raises(ValueError, match=r"^mode: "):
        run(sc, RunConfig.of("turbo", 3, adaptive="fast", records=True))
