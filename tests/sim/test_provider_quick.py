"""Provider.quick_decide and KeyState.decide_open (the model's hot path) give the decisions
Provider.decide gives, call for call, on keys they serve; keys they do not serve get None."""

import dataclasses
import random

from sim.draws import Draws
from sim.provider import KeyState, Provider, new_call
from sim.scenario import Quota, load_scenario


def _calls(seed: int, n: int) -> list[tuple[int, int, int, int, int, int]]:
    """``n`` calls (cid, step, order, clip, attempt, now_us), times non-decreasing with ties."""
    rng = random.Random(seed)
    now = 0
    out = []
    for _ in range(n):
        now += rng.choice([0, 0, 1, 250_000, 3_000_000])
        step = rng.choice([0, 1, 2])
        clip = rng.randrange(6) if step == 2 else 0
        out.append((rng.randrange(3), step, rng.randrange(10), clip, rng.randrange(3), now))
    return out


def _same_as_decide(sc, seed: int = 7) -> None:
    draws = Draws(sc, seed, 0, 3)
    ref = Provider(sc, seed, draws=draws, keep_log=False)
    quick = Provider(sc, seed, draws=draws, keep_log=False)
    fns = [quick.quick_decide(st, "tts-key" if st == 2 else "llm-key") for st in range(3)]
    assert all(f is not None for f in fns)
    for cid, step, order, clip, attempt, now in _calls(seed, 400):
        key = "tts-key" if step == 2 else "llm-key"
        want = ref.decide(new_call((cid, step, order, clip, attempt, key)), now)
        got = fns[step](cid, order, clip, attempt, now)  # type: ignore[misc]
        assert got == want


def test_quick_decide_equals_decide_on_keys_without_limits():
    sc = load_scenario("default")  # no limits, a 5xx rate on both keys
    _same_as_decide(sc.replace(quota_llm=dataclasses.replace(sc.quota_llm, p_429=0.1)))


def test_quick_decide_equals_decide_on_capped_and_rpm_keys():
    sc = load_scenario("default")
    capped = dataclasses.replace(sc.quota_llm, max_inflight=2, p_429=0.05)
    rpm = dataclasses.replace(sc.quota_tts, max_inflight=3, rpm=30, rpm_burst=4)
    _same_as_decide(sc.replace(quota_llm=capped, quota_tts=rpm))


def test_quick_decide_leaves_logs_token_buckets_and_replaced_decides_to_decide():
    sc = load_scenario("default")
    draws = Draws(sc, 1, 0, 2)
    assert Provider(sc, 1, draws=draws, keep_log=True).quick_decide(0, "llm-key") is None
    assert Provider(sc, 1, keep_log=False).quick_decide(0, "llm-key") is None  # no fixed draws
    out = load_scenario("output-tpm")
    assert out.quota_llm.tokens_limited
    assert Provider(out, 1, draws=Draws(out, 1, 0, 2), keep_log=False).quick_decide(0, "k") is None

    class Mine(Provider):
        def decide(self, call, now_us, arrival_us=None):  # type: ignore[no-untyped-def]
            return super().decide(call, now_us, arrival_us)

    assert Mine(sc, 1, draws=draws, keep_log=False).quick_decide(0, "llm-key") is None


def test_decide_open_of_a_capped_key_is_its_decide():
    # in flight 2 at most: the third request at 0 is refused, the first ends at 10 and frees
    # its slot for a request arriving at 10 (the rule of tests/sim/test_provider.py)
    a, b = KeyState(Quota(max_inflight=2)), KeyState(Quota(max_inflight=2))
    assert a.capped and a.cap_n == 2
    for now, lat in ((0, 10), (0, 20), (5, 10), (10, 10), (10, 5)):
        assert a.decide_open(now, lat, 1.0, 1.0, 1.0) == b.decide(now, lat, 1.0, 1.0)
    assert not KeyState(Quota(max_inflight=2, rpm=60)).capped  # a bucket too: decide's path


def test_quick_first_answers_a_plain_200_by_its_latency_and_the_rest_as_decide():
    # first attempts on keys without limits, with every kind of answer (429, 5xx, faults and
    # stalls); the plain 200s ending within max_us come as their latency alone, and take
    # their slot as decide does (the in-flight counts of the later decisions agree)
    sc = load_scenario("default")
    llm = dataclasses.replace(sc.quota_llm, p_429=0.1, p_5xx=0.1, p_reset=0.05, p_stall=0.05)
    tts = dataclasses.replace(sc.quota_tts, p_5xx=0.2, p_truncate=0.1)
    sc = sc.replace(quota_llm=llm, quota_tts=tts)
    draws = Draws(sc, 7, 0, 3)
    ref = Provider(sc, 7, draws=draws, keep_log=False)
    quick = Provider(sc, 7, draws=draws, keep_log=False)
    max_us = 4_000_000  # some plain 200s end later: their decision instead
    keys = ["tts-key" if st == 2 else "llm-key" for st in range(3)]
    fns = [
        quick.quick_first(st, keys[st], max_us, quick.quick_decide(st, keys[st])) for st in range(3)
    ]
    kinds = set()
    for cid, step, order, clip, _, now in _calls(11, 600):
        want = ref.decide(new_call((cid, step, order, clip, 0, keys[step])), now)
        got = fns[step](cid, order, clip, now)  # type: ignore[misc]
        if type(got) is int:
            assert (want.status, want.reason, want.latency_us) == (200, "ok", got)
            assert got <= max_us
            kinds.add("latency")
        else:
            assert got == want
            assert want.reason != "ok" or want.latency_us > max_us  # a 200 ending too late
            kinds.add(want.reason)
    assert kinds == {"latency", "ok", "random", "5xx", "reset", "stall", "truncated"}


def test_quick_first_leaves_limited_keys_to_decide():
    sc = load_scenario("default")
    sc = sc.replace(quota_llm=dataclasses.replace(sc.quota_llm, max_inflight=2))
    prov = Provider(sc, 1, draws=Draws(sc, 1, 0, 2), keep_log=False)
    assert prov.quick_first(0, "llm-key", 10**9, prov.quick_decide(0, "llm-key")) is None
    assert prov.quick_first(2, "tts-key", 10**9, prov.quick_decide(2, "tts-key")) is not None
    logged = Provider(sc, 1, draws=Draws(sc, 1, 0, 2), keep_log=True)
    assert logged.quick_first(2, "tts-key", 10**9, logged.quick_decide(2, "tts-key")) is None
