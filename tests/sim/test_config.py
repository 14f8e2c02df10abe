"""One run's settings as one value (:class:`sim.RunConfig`), and the model's entry points:
``simulate`` (one classroom, one result), ``simulate_tenants`` (K sharing the keys) and
``simulate_config`` (a ready config)."""

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
    simulate,
    simulate_config,
    simulate_tenants,
)
from sim.limiter import POLICIES
from sim.rules import MAX_CONCURRENCY, Counts
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


def test_config_tts_concurrency_follows_the_profile_rule():
    assert RunConfig.of("serial", 3).tts_for(3, True) == 1
    assert RunConfig.of("pipelined", 3).tts_for(3, True) == 3
    assert RunConfig.of("pipelined", 3).tts_for(3, False) == 1
    assert RunConfig.of("pipelined", 3, tts_concurrency=2).tts_for(3, True) == 2


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


def test_simulate_is_one_classroom_and_points_to_simulate_tenants():
    sc = const_scenario(4, 10.0, 2.0, 1.0, clips=1).with_quota(llm_inflight=3)
    with pytest.raises(ValueError, match="simulate_tenants"):
        simulate(sc, "pipelined", 3, tenants=3)
    with pytest.raises(ValueError, match=r"^tenants: must be >= 1, got 0"):
        simulate(sc, "pipelined", 3, tenants=0)
    one = simulate(sc, "pipelined", 3, seed=2, run_id=4)
    same = [one.to_json()]  # NaN-safe equality
    assert [r.to_json() for r in simulate_tenants(sc, "pipelined", 3, 1, seed=2, run_id=4)] == same
    cfg = RunConfig.of("pipelined", 3)
    assert [r.to_json() for r in simulate_config(sc, cfg, seed=2, run_id=4)] == same


def test_simulate_tenants_ids_and_identity():
    sc = const_scenario(4, 10.0, 2.0, 1.0, clips=1).with_quota(llm_inflight=3)
    res = simulate_tenants(sc, "hybrid", 2, 3, run_id=2)
    # classroom ids run_id * tenants + j
    assert [r.classroom for r in res] == [6, 7, 8]
    assert [(r.tenant, r.tenants) for r in res] == [(0, 3), (1, 3), (2, 3)]
    cfg = RunConfig.of("hybrid", 2, tenants=3)
    again = simulate_config(sc, cfg, run_id=2)
    assert [r.to_json() for r in again] == [r.to_json() for r in res]  # NaN-safe equality


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
        simulate(sc, "turbo", 3, adaptive="fast")
    from runner import run_classroom

    with pytest.raises(ValueError, match=r"^mode: "):
        run_classroom(sc, "turbo", 3, adaptive="fast")
