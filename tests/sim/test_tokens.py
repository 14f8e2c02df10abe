"""Issue 12: tokens per call, token buckets, per-second windows (sim.tokens)."""

import math

import numpy as np
import pytest

from sim.config import RunConfig
from sim.draws import Draws
from sim.scenario import ScenarioError, load_scenario, scenario_from_mapping
from sim.tokens import SecondWindow, TokenBuckets, format_reset


def test_an_output_bucket_admits_what_it_holds_and_says_how_long_until_more():
    b = TokenBuckets(tpm=0, itpm=0, otpm=6000, refund=False)  # 100 tokens per second
    assert b.check(0, 500, 6000) is None  # the input is not counted by an output bucket
    b.spend(500, 6000)
    # empty: one token takes 60 s / 6000 = 10 ms to come back
    assert b.check(0, 0, 1) == ("otpm", 10_000)
    # after 2.5 s it holds 250 tokens: 250 fit, 251 wait one more token's time
    assert b.check(2_500_000, 0, 250) is None
    assert b.check(2_500_000, 0, 251) == ("otpm", 10_000)
    # more than the whole minute's budget can never be covered
    assert b.check(2_500_000, 0, 6001) == ("otpm", -1)


def test_a_combined_bucket_counts_input_plus_output_and_refunds_flow_back_at_the_end():
    b = TokenBuckets(tpm=1200, itpm=0, otpm=0, refund=True)  # 20 tokens per second
    b.spend(200, 1000)  # 1200: empty
    b.refund_at(1_000_000, 400)  # the call used 600 of its 1000: 400 back at t = 1 s
    # just before: 19.99998 tokens, and the wait ignores the refund it cannot know of yet:
    # (420 - 19.99998) tokens at 1200/60e6 per µs: (420·60e6 - 999,999·1200) / 1200 µs
    assert b.check(999_999, 0, 420) == ("tpm", (420 * 60_000_000 - 999_999 * 1200) // 1200)
    # at 1 s: 20 refilled + 400 refunded = 420
    assert b.check(1_000_000, 0, 420) is None
    assert b.check(1_000_000, 0, 421) is not None


def test_rate_info_reports_the_bucket_that_refused():
    b = TokenBuckets(tpm=0, itpm=30000, otpm=8000, refund=False)
    b.spend(1000, 4096)
    assert b.info("otpm") == (8000, 3904, math.ceil(4096 * 60e6 / 8000))
    assert b.info("itpm") == (30000, 29000, math.ceil(1000 * 60e6 / 30000))


def test_per_second_window_allows_ceil_rpm_over_60_per_whole_second():
    w = SecondWindow(rpm=90)  # ceil(1.5) = 2 per second
    assert w.limit == 2
    for _ in range(2):
        assert w.check(500_000) is None
        w.spend()
    assert w.check(700_000) == 300_000  # until the next whole second
    assert w.check(1_000_000) is None


@pytest.mark.parametrize(
    ("us", "text"), [(17_000, "17ms"), (1_500_000, "1.5s"), (360_000_000, "6m0s"), (0, "0ms")]
)
def test_reset_durations_are_written_like_openai(us, text):
    assert format_reset(us) == text


def _with_tokens(**tokens):
    m = load_scenario("default").to_mapping()
    m["tokens"] = tokens
    return m


def test_derived_latency_is_time_to_first_token_plus_output_over_speed():
    m = _with_tokens(
        content={"output": {"dist": "constant", "value_s": 220}, "output_tps": 110},
        tts={"chars": {"dist": "constant", "value_s": 100}, "chars_per_s": 50},
    )
    m["latency"]["content"] = {"dist": "constant", "value_s": 0.8}
    m["latency"]["tts"] = {"dist": "constant", "value_s": 0.25}
    sc = scenario_from_mapping(m)
    d = Draws(sc, 0, 0, 2)
    assert (d.latency_us(0, 0) == 800_000 + 2_000_000).all()
    assert (d.latency_us(2, 1) == 250_000 + 2_000_000).all()
    assert (d.tokens_out(0, 0) == 220).all() and (d.tokens_in(0) == 0).all()


def test_token_draws_are_keyed_by_classroom_not_by_batch():
    sc = load_scenario("output-tpm")
    many = Draws(sc, 7, 0, 6)
    one = Draws(sc, 7, 4, 5)
    assert np.array_equal(many.tokens_out(1, 2)[4], one.tokens_out(1, 2)[0])
    assert np.array_equal(many.tokens_in(0)[4], one.tokens_in(0)[0])
    assert np.array_equal(many.latency_us(0, 0)[4], one.latency_us(0, 0)[0])


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"tokens": {"content": {"outputs": {}}}}, "tokens.content.outputs"),
        ({"tokens": {"content": {"output_tps": 100}}}, "tokens.content.output_tps"),
        ({"tokens": {"tts": {"output": {}}}}, "tokens.tts.output"),
        ({"tokens": {"speech": {}}}, "tokens.speech"),
        ({"quota": {"llm": {"otpm": 100}}}, "quota.llm.tpm"),
        ({"quota": {"llm": {"tpm": 1.5}}}, "quota.llm.tpm"),
        ({"quota": {"llm": {"rpm_per_second": True}}}, "quota.llm.rpm_per_second"),
        ({"quota": {"llm": {"throughput": [0]}}}, "quota.llm.throughput"),
        ({"quota": {"llm": {"queue_status": 404}}}, "quota.llm.queue_status"),
    ],
)
def test_bad_fields_are_one_line_errors_naming_the_field(patch, field):
    m = load_scenario("default").to_mapping()
    for k, v in patch.items():
        m[k] = {**m.get(k, {}), **v}
    with pytest.raises(ScenarioError) as e:
        scenario_from_mapping(m)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(field), msg


def test_a_scenario_with_tokens_round_trips_through_its_mapping():
    for name in ("output-tpm", "shared-vllm", "slow-not-429"):
        sc = load_scenario(name)
        assert scenario_from_mapping(sc.to_mapping()) == sc


def test_the_fast_path_takes_derived_latencies_and_steps_aside_for_token_limits():
    from sim import simulate
    from sim.fast import quota_free, simulate_fast
    from sim.scenario import Quota

    sc = load_scenario("output-tpm")
    assert not quota_free(sc)  # a token bucket: the SimPy model decides
    free = sc.replace(quota_llm=Quota())
    assert quota_free(free)
    fast = (
        simulate_fast(free, RunConfig.of("pipelined", 3), 8, seed=1).frame()["makespan_s"].tolist()
    )
    slow = [
        r.makespan_s
        for r in simulate(free, RunConfig.of("pipelined", 3), reps=8, seed=1, engine="simpy")
    ]
    assert fast == pytest.approx(slow, abs=1e-6)
