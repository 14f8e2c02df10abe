"""The one retry/gate state machine both worlds step (:class:`sim.rules.CallMachine`): a
sequence of outcomes → verdicts, the waits from :class:`RetryPolicy`'s closed form."""

import math

from sim.limiter import GateCore, tell_gate
from sim.rules import MAX_429_WAITS, Act, CallMachine, GateNews, RetryPolicy

# withGenerationRetry's shape: 5 retries, 1 s × 2 capped at 16 s, jitter up to 20 %
JOB = RetryPolicy(max_retries=5, initial_delay_s=1.0, backoff_factor=2.0, max_delay_s=16.0,
                  jitter=0.2)  # fmt: skip


def _closed_form_us(n: int, u: float, p: RetryPolicy = JOB) -> int:
    """Wait before retry ``n``: min(cap, 2^n s), plus floor(exp_ms · u · jitter) ms, capped."""
    exp_ms = min(p.max_delay_s * 1000, p.initial_delay_s * 1000 * p.backoff_factor**n)
    return round(min(p.max_delay_s * 1000, exp_ms + math.floor(exp_ms * u * p.jitter)) * 1000)


def test_server_errors_wait_1_2_4_8_16_s_times_jitter_then_fail() -> None:
    us = [0.1, 0.5, 0.9, 0.25, 0.75, 0.3]
    asked: list[int] = []

    def jitter(i: int) -> float:
        asked.append(i)
        return us[i]

    m = CallMachine(JOB)
    waits = []
    for _ in range(5):
        v = m.step(500, 500, None, jitter)
        assert v.kind is Act.WAIT and v.retry and v.tell is GateNews.NONE
        waits.append(v.wait_us)
    assert waits == [_closed_form_us(n, us[n]) for n in range(5)]
    # 2^4 s = the cap: the jitter cannot push the last wait past 16 s
    assert waits[-1] == 16_000_000
    last = m.step(500, 500, None, jitter)
    assert last.kind is Act.FAIL and not last.retry
    assert asked == [0, 1, 2, 3, 4, 5]  # the jitter index: the attempts made before
    assert (m.attempts, m.used, m.waits) == (6, 5, 0)


def test_success_is_done_and_tells_the_gate() -> None:
    m = CallMachine(JOB)
    assert m.step(500, 500, None, 0.0).kind is Act.WAIT
    v = m.step(200, 200)
    assert v.kind is Act.DONE and v.done and v.tell is GateNews.SUCCESS and not v.retry


def test_client_error_fails_at_once() -> None:
    v = CallMachine(JOB).step(400, 400)
    assert v.kind is Act.FAIL and v.fail


def test_ungated_429_spends_the_budget_and_honours_retry_after() -> None:
    m = CallMachine(JOB)
    v = m.step(429, 429, 3_000_000, 0.5)  # 3 s < the 60 s cap: used as it is
    assert (v.kind, v.wait_us, v.tell) == (Act.WAIT, 3_000_000, GateNews.RATE_LIMITED)
    assert m.used == 1


def test_gated_429_requeues_without_spending_the_budget() -> None:
    m = CallMachine(JOB, gated=True)
    v = m.step(429, 429, 3_000_000, 0.5)
    assert (v.kind, v.wait_us, v.tell) == (Act.REQUEUE, 0, GateNews.RATE_LIMITED) and v.retry
    asked: list[int] = []

    def jitter(i: int) -> float:
        asked.append(i)
        return 0.5

    v = m.step(500, 500, None, jitter)  # first retry of the budget, second attempt
    assert v.kind is Act.WAIT and v.wait_us == _closed_form_us(0, 0.5)
    assert asked == [1] and (m.attempts, m.used, m.waits) == (2, 1, 1)


def test_gated_retry_after_is_not_used_for_other_failures() -> None:
    m = CallMachine(JOB, gated=True)
    v = m.step(503, 503, 3_000_000, 0.0)
    assert v.wait_us == _closed_form_us(0, 0.0) == 1_000_000


def test_gated_call_gives_up_after_max_429_waits() -> None:
    m = CallMachine(JOB, gated=True)
    kinds = [m.step(429, 429).kind for _ in range(MAX_429_WAITS + 1)]
    assert kinds == [Act.REQUEUE] * MAX_429_WAITS + [Act.FAIL]
    assert m.used == 0


class _Gate:
    def __init__(self) -> None:
        self.core = GateCore(4, "aimd")
        self.events: list[str] = []

    def changed(self) -> None:
        self.events.append("changed")

    def release(self, rank: tuple[int, ...] = ()) -> None:
        self.events.append(f"release{rank}")


def test_tell_gate_pumps_after_a_429_or_releases_a_held_slot() -> None:
    g = _Gate()
    tell_gate(g, GateNews.RATE_LIMITED, 0, None, None)
    assert g.events == ["changed"] and g.core.cap == 2  # halved
    g2 = _Gate()
    tell_gate(g2, GateNews.RATE_LIMITED, 0, 2_000_000, (1, 0, 0))
    assert g2.events == ["release(1, 0, 0)"] and g2.core.hold_until == 2_000_000
    g3 = _Gate()
    tell_gate(g3, GateNews.NONE, 0, None, None)
    assert g3.events == [] and g3.core.cap == 4
