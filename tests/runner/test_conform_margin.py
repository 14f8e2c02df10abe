"""Race margins of conform's cases (runner.experiments.conform_margin): model only, no Node.

A case is decidable on a real clock when every admission decision of its model trace at a
limited key is at least RACE_MARGIN_S from the event that would flip it. Every shipped case
must be, under every profile conform can detect and in the run engine; the constant-latency
case 2 conform shipped before was not (two contents sent together ended at one instant).
"""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from runner.experiments import conform as cf
from runner.experiments import conform_runs as cr
from runner.experiments.conform_margin import (
    RACE_MARGIN_S,
    RaceMarginError,
    check_margin,
    races,
)
from runner.experiments.traces import Request, Trace, trace_from_result
from sim import RunConfig, simulate
from sim.scenario import Quota, scenario_from_mapping
from sim.upstream import HISTORY

MINI = Path(__file__).resolve().parents[1] / "fixtures" / "mini_openmaic"
FULL = Quota(max_inflight=2)  # the cases' LLM key
FREE = Quota()


def _model(case: cf.ConformCase) -> Trace:
    """The model's trace of a case, run as conform's port side runs it (serially under a
    profile without the knob)."""
    sc = case.scenario
    c = case.concurrency if sc.client.knob_endpoint is not None else 0
    [res] = simulate(sc, RunConfig.of("pipelined", c, records=True), seed=case.seed)
    return trace_from_result(res)


def _quotas(case: cf.ConformCase | cr.EngineCase) -> dict[str, Quota]:
    return {"llm": case.scenario.quota_llm, "tts": case.scenario.quota_tts}


@pytest.mark.parametrize("profile", list(HISTORY))
def test_every_shipped_case_is_decidable_under_every_profile(profile: str) -> None:
    cases = cf.fixed_cases(list(cf._CASES), upstream=profile)
    for case in cases:
        assert races(_model(case).requests, _quotas(case)) == [], case.name


def test_every_run_engine_case_is_decidable() -> None:
    for case in cr.engine_cases():
        model = cr.model_trace(case)
        reqs = [Request(r[2], r[3], r[4], r[5], r[0], r[1], r[6]) for r in model.rows]
        assert races(reqs, _quotas(case)) == [], case.name


def test_case2_still_races_at_its_key_by_a_clear_margin() -> None:
    # what case 2 is for: the 2-in-flight key refuses contents at c = 2 and 3 (a 429 the
    # loop retries), and each refusal is decided by at least the margin
    for name in ("case2-c2", "case2-c3"):
        (case,) = cf.fixed_cases([name], upstream="pr1039")
        t = _model(case)
        refused = [r for r in t.requests if r.status == 429]
        assert refused and {r.step for r in refused} == {"content"}, name
        assert any(r.attempt > 0 for r in refused), name
        near = races(t.requests, _quotas(case), margin_s=100.0)  # every sensitive decision
        assert near and min(x.margin_s for x in near) >= RACE_MARGIN_S


def _old_case2(c: int) -> cf.ConformCase:
    """Case 2 as conform shipped it before: constant latencies (content 25 s, actions 8 s)."""
    ref = resources.files("runner.experiments").joinpath("conform_cases", "case2.toml")
    data: dict[str, Any] = tomllib.loads(ref.read_text(encoding="utf-8"))
    data["latency"]["content"] = {"dist": "constant", "value_s": 25.0}
    data["latency"]["actions"] = {"dist": "constant", "value_s": 8.0}
    sc = scenario_from_mapping({**data, "client": {**cf.PORT_CLIENT, "upstream": "pr1039"}})
    return cf.ConformCase(f"case2-c{c}", sc, c, 0)


def test_the_old_case2_was_a_tie_at_25_s() -> None:
    # contents 0 and 1 leave together at 0 and both end at 25 s (the constant latency): the
    # next content races the second slot's release, margin 0
    case = _old_case2(3)
    found = races(_model(case).requests, _quotas(case))
    first = found[0]
    assert (first.request, first.t_s, first.margin_s) == (("content", 3, 0, 0), 25.0, 0.0)
    with pytest.raises(RaceMarginError, match=r"^case case2-c3: \d+ admission decision\(s\)"):
        check_margin(case.name, _model(case).requests, _quotas(case))


def test_conform_refuses_an_undecidable_case_before_running_node() -> None:
    # the check runs before esbuild and Node: an exit 2 (a ConformError), not a "differs"
    with pytest.raises(RaceMarginError, match=r"not decidable on a real clock") as e:
        cf.conform(MINI, [_old_case2(2)], upstream="pr1039", cache_dir="/nonexistent")
    assert "\n" not in str(e.value)


# -- the rule on small traces ---------------------------------------------------------------
def _r(step: str, order: int, attempt: int, t: float, end: float, status: int = 200) -> Request:
    return Request(step, order, 0, attempt, t, end, status)


def test_a_refusal_near_a_slot_freeing_is_a_race() -> None:
    base = [_r("content", 0, 0, 0.0, 10.0), _r("content", 1, 0, 0.0, 20.0)]
    near = [*base, _r("content", 2, 0, 9.5, 9.5, 429)]  # 0.5 s before content 0 frees
    (race,) = races(near, {"llm": FULL})
    assert race.margin_s == 0.5 and "content 0/0 frees its slot" in race.what
    far = [*base, _r("content", 2, 0, 8.5, 8.5, 429)]  # 1.5 s before
    assert races(far, {"llm": FULL}) == []
    assert races(near, {"llm": FREE}) == []  # an unlimited key decides nothing


def test_a_request_follows_its_own_answer_but_not_a_tied_one() -> None:
    # actions 0 is sent when content 0 ends: that slot is free on any clock
    one = [
        _r("content", 0, 0, 0.0, 10.0),
        _r("content", 1, 0, 0.0, 20.0),
        _r("actions", 0, 0, 10.0, 15.0),
    ]
    assert races(one, {"llm": FULL}) == []
    # two answers at one instant: either may still hold its slot when the next arrives.
    # Content 2 finds a slot even then; content 3 takes the last one, which it would not
    # find if the answer it does not follow were a moment late
    tied = [
        _r("content", 0, 0, 0.0, 10.0),
        _r("content", 1, 0, 0.0, 10.0),
        _r("content", 2, 0, 10.0, 20.0),
        _r("content", 3, 0, 10.0, 20.0),
    ]
    assert [x.request[1] for x in races(tied, {"llm": FULL})] == [3]


def test_the_rpm_buckets_next_token_is_an_edge() -> None:
    q = Quota(rpm=60.0, rpm_burst=1)  # one token a second, one in the bucket
    near = [_r("content", 0, 0, 0.0, 5.0), _r("content", 1, 0, 0.4, 0.4, 429)]
    (race,) = races(near, {"llm": q})
    assert race.margin_s == pytest.approx(0.6) and race.what == "the bucket's next token"
    far = [_r("content", 0, 0, 0.0, 5.0), _r("content", 1, 0, 2.0, 7.0)]
    assert races(far, {"llm": q}) == []


def test_limits_the_trace_cannot_show_are_refused() -> None:
    with pytest.raises(RaceMarginError, match=r"^race margin: the llm key's limits"):
        races([], {"llm": Quota(tpm=1000)})
