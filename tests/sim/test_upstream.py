"""Upstream profiles and the decision core (sim.rules, sim.upstream)."""

import dataclasses
import itertools
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sim import (
    PROFILES,
    Quota,
    RunConfig,
    ScenarioError,
    load_scenario,
    parse_knob,
    profile,
    simulate,
)
from sim.rules import Outcome, RetryPolicy, after_attempt, final_status, tts_concurrency
from sim.scenario import scenario_from_mapping
from sim.upstream import (
    CLIENT_RETRY,
    DEFAULT_PROFILE,
    FOREGROUND_RETRY,
    HISTORY,
    ErrorShape,
    Handoff,
    RetryLayer,
    profile_names,
    route_status,
)
from tests.conftest import const_scenario


@pytest.mark.parametrize(
    ("raw", "want"),
    [
        ("3", 3),
        ("3abc", 3),
        ("1e1", 1),
        ("inf", 0),
        ("Infinity", 0),
        ("", 0),
        ("abc", 0),
        ("-2", 0),
        ("0", 0),
        (" 4", 4),
        ("15", 10),
        ("+5", 5),
        (3.7, 3),
        (None, 0),
        (12, 10),
    ],
)
def test_the_knob_is_parsed_as_upstreams_parseint_then_clamped(raw, want):
    assert parse_knob(raw) == want


def _upstream_delay_ms(attempt_1based: int, base_ms: int, cap_ms: int, u: float) -> int:
    """withGenerationRetry's delay, written out from its definition (the issue's formula)."""
    exp = min(cap_ms, base_ms * 2 ** max(0, attempt_1based - 1))
    return min(cap_ms, exp + math.floor(exp * max(0.0, min(u, 1.0)) * 0.2))


@given(st.integers(min_value=0, max_value=7), st.floats(min_value=0.0, max_value=0.999999))
def test_client_retry_delay_is_upstreams_formula(n, u):
    got = CLIENT_RETRY.delay_us(n, None, u)
    assert got == _upstream_delay_ms(n + 1, 1000, 16000, u) * 1000
    # Retry-After is ignored by the client's policy
    assert CLIENT_RETRY.delay_us(n, 90_000_000, u) == got


def test_jitter_half_gives_the_recorded_gaps():
    gaps = [CLIENT_RETRY.delay_us(n, None, 0.5) / 1e6 for n in range(5)]
    assert gaps == [1.1, 2.2, 4.4, 8.8, 16.0]


def test_the_ai_sdk_policy_honours_retry_after_below_60_s():
    sdk = PROFILES["v0.2.1"].retry_llm
    assert [sdk.delay_us(n, None) for n in range(2)] == [2_000_000, 4_000_000]
    assert sdk.delay_us(0, 1_000_000) == 1_000_000
    assert sdk.delay_us(0, 90_000_000) == 2_000_000


def test_after_attempt_is_the_retry_state_machine():
    p = RetryPolicy(max_retries=2, initial_delay_s=1.0, honour_retry_after=False)
    assert after_attempt(p, 0, Outcome.OK).done
    assert after_attempt(p, 0, Outcome.CLIENT_ERROR).fail
    assert after_attempt(p, 2, Outcome.SERVER_ERROR).fail
    v = after_attempt(p, 1, Outcome.RATE_LIMITED, 5_000_000)
    assert not v.done and not v.fail and v.wait_us == 2_000_000
    for o in (Outcome.TIMEOUT, Outcome.NETWORK, Outcome.BAD_BODY):
        assert after_attempt(p, 0, o).wait_us == 1_000_000


def test_profiles_follow_upstream_mains_history():
    names = ("v0.2.1", "pr660", "pr788", "pr696", "pr1039")
    assert profile_names() == list(names) and list(HISTORY) == list(names)
    # merge dates in the order of the names: each profile is main after its change
    dates = [HISTORY[n][2] for n in names]
    assert dates == sorted(dates)
    v021, pr660, pr788, pr696, pr1039 = (PROFILES[n] for n in names)
    assert all(p.foreground_first_scene for p in PROFILES.values())
    assert v021.knob_endpoint is None and pr660.knob_endpoint == "/api/server-providers"
    assert not v021.content_failure_pauses and pr660.content_failure_pauses
    # #788 moved the retries to the client and passes the provider's status through
    assert pr660.retry_in is RetryLayer.ROUTE and pr788.retry_in is RetryLayer.CLIENT
    assert pr660.retry_tts.max_retries == 0 and pr788.retry_tts.max_retries == 5
    assert pr660.provider_errors is ErrorShape.ROUTE
    assert {pr788.provider_errors, pr696.provider_errors} == {ErrorShape.STATUS}
    assert pr788.foreground_retry_llm == FOREGROUND_RETRY
    assert pr788.foreground_retry_llm.max_retries == 2
    # #696 (after #788): a loop scene's clips at c; #1039: the first scene's too
    assert not pr788.tts_at_concurrency and pr696.tts_at_concurrency
    assert not pr696.foreground_tts_at_concurrency and pr1039.foreground_tts_at_concurrency
    assert dataclasses.replace(pr1039, upstream="pr696", foreground_tts_at_concurrency=False) == (
        pr696
    )
    assert dataclasses.replace(pr696, upstream="pr788", tts_at_concurrency=False) == pr788
    assert {p.handoff for p in PROFILES.values()} == {Handoff.ACTIONS_FIRST}
    # the route retries before #788, the client after
    assert pr660.route_policy(0, False).max_retries == 2
    assert pr660.client_policy(0, False).max_retries == 0
    assert pr788.route_policy(0, False).max_retries == 0
    direct = dataclasses.replace(pr660, provider_errors=ErrorShape.DIRECT)
    assert direct.client_policy(0, False).max_retries == 2


@pytest.mark.parametrize(
    ("shape", "step", "provider", "want"),
    [
        (ErrorShape.DIRECT, 0, 503, 503),
        (ErrorShape.ROUTE, 0, 429, 500),
        (ErrorShape.ROUTE, 2, 401, 500),
        # since #788 (llmApiError): an LLM route passes any provider status through
        (ErrorShape.STATUS, 0, 429, 429),
        (ErrorShape.STATUS, 1, 401, 401),
        (ErrorShape.STATUS, 0, 422, 422),
        (ErrorShape.STATUS, 0, 503, 503),
        (ErrorShape.STATUS, 0, 0, 500),  # no status: 500
        # the TTS route: a 429 as 429 (#644), anything else 500
        (ErrorShape.STATUS, 2, 429, 429),
        (ErrorShape.STATUS, 2, 401, 500),
        (ErrorShape.STATUS, 2, 503, 500),
    ],
)
def test_route_status(shape: ErrorShape, step: int, provider: int, want: int) -> None:
    assert route_status(shape, step, provider) == want


def test_the_default_profile_is_pr696_and_the_flag_overrides_the_file():
    assert DEFAULT_PROFILE == "pr696"
    assert load_scenario("default").upstream == "pr696"
    sc = load_scenario("default", upstream="pr660")
    assert sc.upstream == "pr660" and sc.client == profile("pr660")


def _mapping(**client):
    base = const_scenario(3, 10.0, 2.0, 1.0).to_mapping()
    base["client"] = client
    return base


def test_client_table_overrides_a_profile_and_round_trips():
    m = _mapping(
        upstream="pr788",
        foreground_first_scene=False,
        jitter_u=0.5,
        handoff="content-first",
        retry={"tts": {"max_retries": 1}},
    )
    sc = scenario_from_mapping(m)
    assert not sc.client.foreground_first_scene and sc.client.jitter_u == 0.5
    assert sc.client.handoff is Handoff.CONTENT_FIRST
    assert sc.client.retry_tts.max_retries == 1
    assert sc.client.retry_tts.max_delay_s == 16.0  # the other fields stay the profile's
    assert scenario_from_mapping(sc.to_mapping()) == sc


def test_legacy_retry_tables_override_the_profiles_background_budget():
    m = _mapping(upstream="pr788")
    m["retry"] = {"llm": {"max_retries": 1}}
    assert scenario_from_mapping(m).client.retry_llm.max_retries == 1


@pytest.mark.parametrize(
    ("client", "field"),
    [
        ({"upstream": "v9"}, "client.upstream"),
        ({"jitter_u": 1.0}, "client.jitter_u"),
        ({"handoff": "sideways"}, "client.handoff"),
        ({"foreground_first_scene": "yes"}, "client.foreground_first_scene"),
        ({"bogus": 1}, "client.bogus"),
        ({"retry": {"llm": {"jitter": 2}}}, "retry.llm.jitter"),
    ],
)
def test_bad_client_fields_are_one_line_naming_the_field(client, field):
    with pytest.raises(ScenarioError) as e:
        scenario_from_mapping(_mapping(**client))
    assert str(e.value).startswith(field) and "\n" not in str(e.value)


def test_status_and_tts_rules():
    assert final_status(False, True, True) == "paused"
    assert final_status(False, True, False) == "completed"
    assert final_status(True, False, False) == "paused"
    assert tts_concurrency("pipelined", 3, None, True) == 3
    assert tts_concurrency("pipelined", 3, None, False) == 1
    assert tts_concurrency("serial", 3, None, True) == 1


def _log(r, step):
    return [q for q in r.requests_log if q.step == step]


def test_pr788_every_llm_attempt_429_gives_six_attempts_with_capped_jittered_gaps():
    for ra in (1.0, 90.0):
        sc = const_scenario(3, 25.0, 8.0, 2.0, quota_llm=Quota(p_429=1.0, retry_after_s=ra))
        sc = sc.replace(client=profile("pr788")).with_client(foreground_first_scene=False)
        r = simulate(sc, RunConfig.of("serial", 1, records=True))[0]
        att = [q for q in _log(r, "content") if q.order == 0]
        assert [q.attempt for q in att] == list(range(6)) and att[0].t_arrival_s == 0.0
        gaps = [b.t_arrival_s - a.t_arrival_s for a, b in itertools.pairwise(att)]
        for n, g in enumerate(gaps):
            base = min(16.0, 2.0**n)
            assert base - 1e-9 <= g <= min(16.0, base * 1.2) + 1e-9
        assert r.status == "paused" and r.failed_orders == (0,)


def test_foreground_first_scene_gets_three_attempts_and_its_own_status():
    sc = const_scenario(3, 25.0, 8.0, 2.0, quota_llm=Quota(p_429=1.0))
    sc = sc.replace(client=profile("pr788"))
    r = simulate(sc, RunConfig.of("pipelined", 3, records=True))[0]
    att = _log(r, "content")
    assert [q.attempt for q in att] == [0, 1, 2] and {q.order for q in att} == {0}
    gaps = [b.t_arrival_s - a.t_arrival_s for a, b in itertools.pairwise(att)]
    assert 1.0 <= gaps[0] <= 1.2 and 2.0 <= gaps[1] <= 2.4
    assert r.status == "first_scene_failed" and r.scenes_ok == 0 and r.failed_orders == (0,)
    assert r.makespan_s == pytest.approx(att[-1].t_arrival_s)


def test_tts_always_429_gives_six_attempts_per_clip_under_pr788():
    sc = const_scenario(2, 25.0, 8.0, 2.0, clips=2, quota_tts=Quota(p_429=1.0))
    sc = sc.replace(client=profile("pr788")).with_client(foreground_first_scene=False)
    r = simulate(sc, RunConfig.of("serial", 1, records=True))[0]
    per_clip = {}
    for q in _log(r, "tts"):
        per_clip.setdefault((q.order, q.clip), []).append(q.attempt)
    assert per_clip == {(0, 0): list(range(6)), (0, 1): list(range(6))}


def test_time_to_first_scene_does_not_depend_on_c_under_pr788():
    sc = load_scenario("default")
    runs = [simulate(sc, RunConfig.of("pipelined", c, records=True), seed=3)[0] for c in (1, 3, 10)]
    assert len({r.ttfs_s for r in runs}) == 1
    r = runs[1]
    first = [q for q in r.requests_log if q.order == 0]
    assert r.ttfs_s == pytest.approx(sum(q.t_end_s - q.t_start_s for q in first))
    assert r.ttfs_s == pytest.approx(max(q.t_end_s for q in first))


def test_constant_closed_form_with_the_foreground_scene():
    # C = 25, A = 8, 4 clips of 2 s one at a time, N = 10: the foreground scene takes 41 s,
    # then content(1..3) end at 66 and the loop's tails follow back to back: 66 + 9 * 16.
    sc = const_scenario(10, 25.0, 8.0, 2.0, clips=4).replace(client=profile("pr788"))
    assert simulate(sc, RunConfig.of("pipelined", 3, tts_concurrency=1))[0].makespan_s == 210.0
    assert simulate(sc, RunConfig.of("serial", 1))[0].makespan_s == 410.0
    loop = sc.with_client(foreground_first_scene=False)
    assert simulate(loop, RunConfig.of("pipelined", 3, tts_concurrency=1))[0].makespan_s == 185.0


def test_a_failed_content_in_parallel_mode_ends_paused_under_pr788_only(monkeypatch):
    from sim.provider import Provider

    orig = Provider.decide

    def decide(self, call, now_us, arrival_us=None):
        dec = orig(self, call, now_us, arrival_us)
        if call.step == 0 and call.order == 3:
            return dec._replace(status=500, reason="forced")
        return dec

    monkeypatch.setattr(Provider, "decide", decide)
    sc = const_scenario(5, 25.0, 8.0, 2.0, clips=1)
    for prof, want in (("pr788", "paused"), ("v0.2.1", "completed")):
        r = simulate(sc.replace(client=profile(prof)), RunConfig.of("pipelined", 3))[0]
        assert r.failed_orders == (3,) and r.scenes_ok == 4 and r.status == want


def test_pr1039_runs_the_first_scenes_clips_at_c():
    # C = 25, A = 8, 4 clips of 2 s: one at a time the first scene takes 25 + 8 + 4 * 2 = 41 s;
    # at c = 3 (#1039) the clips run in ceil(4 / 3) = 2 waves: 25 + 8 + 2 * 2 = 37 s.
    sc = const_scenario(10, 25.0, 8.0, 2.0, clips=4).replace(client=profile("pr1039"))
    assert simulate(sc, RunConfig.of("pipelined", 3))[0].ttfs_s == 37.0
    assert simulate(sc, RunConfig.of("serial", 1))[0].ttfs_s == 41.0  # c = 1: one at a time
    assert (
        simulate(sc.replace(client=profile("pr696")), RunConfig.of("pipelined", 3))[0].ttfs_s
        == 41.0
    )


def test_since_788_a_provider_refusal_is_not_retried():
    # every content attempt answered 401 after its 25 s: since #788 the route passes the 401
    # through and the client's rule does not retry a 4xx: one attempt, the loop pauses
    q = Quota(p_5xx=1.0, status_5xx=401)
    sc = const_scenario(3, 25.0, 8.0, 2.0, quota_llm=q).replace(client=profile("pr788"))
    sc = sc.with_client(foreground_first_scene=False)
    r = simulate(sc, RunConfig.of("serial", 1, records=True))[0]
    assert [(x.step, x.order, x.attempt, x.status) for x in r.requests_log] == [
        ("content", 0, 0, 401)
    ]
    assert r.status == "paused" and r.failed_orders == (0,) and r.makespan_s == 25.0
    # as a 500 (the route shape, every failure a 500) the client retried it 5 times
    r = simulate(
        sc.with_client(provider_errors=ErrorShape.ROUTE), RunConfig.of("serial", 1, records=True)
    )[0]
    assert [x.attempt for x in r.requests_log] == list(range(6))
    # before #788 the route's AI SDK does not retry a 4xx either: one attempt
    pr660 = sc.replace(client=profile("pr660")).with_client(foreground_first_scene=False)
    r = simulate(pr660, RunConfig.of("serial", 1, records=True))[0]
    assert [x.attempt for x in r.requests_log] == [0] and r.status == "paused"
