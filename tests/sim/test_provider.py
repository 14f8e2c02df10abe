from sim.provider import KeyState
from sim.scenario import Quota


def test_inflight_limit_rejects_and_frees_at_the_end_instant():
    ks = KeyState(Quota(max_inflight=2, retry_after_s=1.5))
    assert ks.decide(0, 10, 1.0, 1.0).status == 200
    assert ks.decide(0, 20, 1.0, 1.0).status == 200
    d = ks.decide(5, 10, 1.0, 1.0)
    assert (d.status, d.reason, d.inflight, d.retry_after_ms) == (429, "inflight", 2, 1500)
    # the first request ends at 10: a request arriving at 10 finds its slot free
    d = ks.decide(10, 10, 1.0, 1.0)
    assert d.status == 200 and d.inflight == 1


def test_token_bucket_refills_at_rpm_over_60():
    ks = KeyState(Quota(rpm=60, rpm_burst=2, retry_after_s=None))
    assert ks.decide(0, 1, 1.0, 1.0).status == 200
    assert ks.decide(0, 1, 1.0, 1.0).status == 200
    d = ks.decide(0, 1, 1.0, 1.0)
    assert (d.status, d.reason, d.retry_after_ms) == (429, "rpm", None)
    assert ks.decide(999_999, 1, 1.0, 1.0).status == 429  # 0.999999 tokens
    assert ks.decide(1_000_000, 1, 1.0, 1.0).status == 200  # one token per second


def test_random_faults_use_the_given_uniforms():
    ks = KeyState(Quota(p_429=0.1, p_5xx=0.2, status_5xx=529))
    assert ks.decide(0, 5, 0.05, 1.0).reason == "random"
    d = ks.decide(0, 5, 0.5, 0.1)
    assert (d.status, d.latency_us) == (529, 5)
    assert ks.decide(0, 5, 0.5, 0.5).status == 200
