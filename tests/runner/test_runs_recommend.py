"""The two-knob runs rule on small hand-built cells whose answer is derived here."""

from __future__ import annotations

import math

import pytest

from runner.report.runs_recommendation import (
    RUNS_RULE,
    Profile,
    RunsCellStats,
    gate_versus_off,
    knob_sentence,
    pick_default,
    pick_profile,
    recommend_runs,
)


def _x(
    c: int,
    m: int,
    ttfs95: float,
    stall: float = 10.0,
    *,
    q: int = 3,
    load: float = 10.0,
    paused: float = 0.0,
    failed: float = 0.0,
    refused: float = 0.0,
    pol: str = "off",
    preset: str = "",
) -> RunsCellStats:
    return RunsCellStats(
        scenario="s",
        quota=q,
        load_per_h=load,
        concurrency=c,
        max_concurrent=m,
        p_paused=paused,
        p_any_failed=failed,
        p_refused=refused,
        p_bad=paused + failed + refused,  # disjoint in these cells
        ttfs_p50_s=ttfs95 / 2,
        ttfs_p95_s=ttfs95,
        stall_mean_s=stall,
        preset=preset,
        adaptive=pol,
    )


def test_the_sentence_names_both_knobs():
    p = Profile(3, 10.0)
    assert (
        knob_sentence(p, 2, 2)
        == "a 3-in-flight key at 10 runs/hour: c = 2, max concurrent runs = 2"
    )
    assert Profile(0, 2.5).label == "an unlimited key at 2.5 runs/hour"
    assert Profile(0, 10, "openai-tier1").key == "p-openai-tier1@10"


def test_a_pair_that_pauses_runs_is_never_picked_however_fast():
    # baseline (1, 4) pauses 0%; (3, 4) is much faster but pauses 2% > 0% + 1 pp
    cells = [_x(1, 4, 100), _x(2, 4, 80), _x(3, 4, 40, paused=0.02)]
    pk = pick_profile(cells)
    assert pk is not None and (pk.concurrency, pk.max_concurrent) == (2, 4)
    assert pk.admissible == 2 and pk.candidates == 3
    # exactly at the budget (1 pp) is admissible
    cells[2] = _x(3, 4, 40, paused=0.01)
    assert pick_profile(cells).concurrency == 3  # type: ignore[union-attr]


def test_refused_starts_and_failed_scenes_count_as_much_as_pauses():
    cells = [_x(1, 4, 100), _x(2, 1, 50, refused=0.2), _x(3, 4, 60, failed=0.5), _x(2, 4, 90)]
    pk = pick_profile(cells)
    assert pk is not None and pk.pick.pair == (2, 4)


def test_among_the_near_best_the_calmer_then_the_smallest_pair_wins():
    # best p95 60 s; near-best = p95 <= 63 s: (2, 4) 63, (3, 2) 61, (3, 4) 60; (2, 2) 64 is out
    # stalls among them: 20, 5, 5.5 -> least 5: within max(5.25, 5 + 1 s) = 6 s: (3, 2), (3, 4)
    # smallest c then m: (3, 2)
    cells = [
        _x(1, 4, 100, 40),
        _x(2, 2, 64, 1),
        _x(2, 4, 63, 20),
        _x(3, 2, 61, 5),
        _x(3, 4, 60, 5.5),
    ]
    pk = pick_profile(cells)
    assert pk is not None and pk.pick.pair == (3, 2)


def test_a_profile_without_upstreams_defaults_still_has_an_answer_without_a_baseline():
    pk = pick_profile([_x(2, 4, 50)])
    assert pk is not None and pk.pick.pair == (2, 4) and pk.baseline is None
    # every other pair pauses more: upstream's defaults stay
    pk = pick_profile([_x(1, 4, 100), _x(2, 4, 50, paused=0.5)])
    assert pk is not None and pk.pick.pair == (1, 4) and pk.baseline is not None


def test_the_floor_is_the_best_pair_not_upstreams_defaults():
    # upstream's (1, 4) pauses 27% of runs on this key; (1, 2) pauses none but queues longer:
    # the learner is better off waiting than losing the run, so (1, 2) is the pick
    cells = [_x(1, 4, 80, paused=0.27), _x(1, 2, 150), _x(2, 2, 140, paused=0.3)]
    pk = pick_profile(cells)
    assert pk is not None and pk.pick.pair == (1, 2) and pk.admissible == 1
    assert pk.baseline is not None and pk.baseline.pair == (1, 4)


def test_when_no_pair_holds_everywhere_the_default_is_the_least_bad_and_says_so():
    # on q0 only (2, 4) is clean, on q2 only (1, 4): the worst excesses are 0.2 and 0.1
    cells = [
        _x(1, 4, 100, q=0, paused=0.1),
        _x(2, 4, 60, q=0),
        _x(1, 4, 100, q=2),
        _x(2, 4, 60, q=2, paused=0.2),
    ]
    d = pick_default(cells)
    assert (d.concurrency, d.max_concurrent, d.within_budget) == (1, 4, False)
    assert (
        d.worst_excess == pytest.approx(0.1)
        and d.worst_profile == "an unlimited key at 10 runs/hour"
    )
    assert d.blocked == {"1,4": "q0@10", "2,4": "q2@10"}


def test_the_default_holds_on_every_key_of_two_or_more_and_every_load():
    # (3, 4) is best on the unlimited key but pauses on the 2-in-flight key at 20 runs/hour;
    # the 1-in-flight key (where even (2, 4) pauses) and the preset do not block the default.
    cells = []
    for q, load in ((0, 10.0), (2, 10.0), (2, 20.0)):
        cells += [_x(1, 4, 100, q=q, load=load), _x(2, 4, 70, q=q, load=load)]
        bad = q == 2 and load == 20.0
        cells.append(_x(3, 4, 50, q=q, load=load, paused=0.3 if bad else 0.0))
    cells += [_x(1, 4, 100, q=1), _x(2, 4, 70, q=1, paused=0.9), _x(3, 4, 50, q=1, paused=0.9)]
    cells += [_x(1, 4, 100, q=0, preset="p"), _x(2, 4, 70, q=0, preset="p", paused=0.9)]
    d = pick_default(cells)
    assert (d.concurrency, d.max_concurrent) == (2, 4)
    assert d.blocked == {"3,4": "q2@20"}
    assert d.ttfs_p95_geomean_s == pytest.approx(70.0)
    assert [p.key for p in d.profiles] == ["q0@10", "q2@10", "q2@20"]


def test_a_gate_is_judged_against_upstreams_baseline_and_can_raise_the_default():
    off = [_x(1, 4, 100), _x(3, 4, 50, paused=0.2)]
    gate = [_x(3, 4, 52, pol="gate")]  # the gate keeps pauses at 0% at c = 3
    rec = recommend_runs(off + gate)
    assert (rec.defaults["s"]["off"].concurrency, rec.defaults["s"]["gate"].concurrency) == (1, 3)
    (gp,) = rec.by_profile["s"]["gate"]
    assert gp.pick.pair == (3, 4) and gp.baseline is not None and gp.baseline.adaptive == "off"
    d = rec.as_dict()["scenarios"]["s"]
    assert list(d) == ["off", "gate"]
    assert d["off"]["by_profile"][0]["sentence"].endswith("c = 1, max concurrent runs = 4")


def test_nan_shares_are_not_admissible():
    assert pick_profile([_x(1, 4, 100), _x(2, 4, 10, paused=math.nan)]).pick.pair == (1, 4)  # type: ignore[union-attr]
    assert RUNS_RULE.baseline_max_concurrent == 4 and RUNS_RULE.baseline_concurrency == 1


def test_gate_versus_off_reads_the_highest_admissible_pair_of_each_policy():
    # floor 0% (off at (1, 4), gate everywhere but (5, 8)); budget 1 point
    off = [_x(1, 4, 100), _x(2, 4, 80, paused=0.005), _x(3, 8, 50, paused=0.2)]
    gate = [_x(1, 4, 90, pol="gate"), _x(3, 8, 52, pol="gate"), _x(5, 8, 40, pol="gate",
                                                                   paused=0.5)]  # fmt: skip
    cells = off + gate
    vs = gate_versus_off(cells, recommend_runs(cells))
    (x,) = vs["s"]
    assert (x.max_c_off, x.max_m_off) == (2, 4)  # (3, 8) pauses 20% > 0% + 1 pp
    assert (x.max_c_pol, x.max_m_pol) == (3, 8)  # (5, 8) pauses 50%
    assert x.higher_c and x.higher_m and x.off_pair == (2, 4) and x.pol_pair == (3, 8)
    assert x.floor == 0.0 and x.as_dict()["key"] == "q3@10"
    # the same cells under off only: nothing to compare
    assert gate_versus_off(off, recommend_runs(off)) == {}


def test_the_findings_say_yes_not_strictly_or_no():
    from runner.report.runs_report import _gate_default

    off = {"concurrency": 1, "max_concurrent": 2, "within_budget": False, "worst_excess": 0.34,
           "worst_profile": "an unlimited key at 60 runs/hour"}  # fmt: skip
    d = dict(off, concurrency=2, max_concurrent=4, worst_excess=0.025)
    (line,) = _gate_default("gate", d, off)
    assert "safe? Not strictly." in line and "*c* = **2** with *m* = **4**" in line
    assert "2.5 points" in line and "34.0 points" in line
    (line,) = _gate_default("gate", dict(d, within_budget=True), off)
    assert "safe? Yes." in line
    (line,) = _gate_default("gate", dict(d, concurrency=1, max_concurrent=2), off)
    assert "safe? No." in line
