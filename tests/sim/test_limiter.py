import pytest

from sim.limiter import GateCore


def _waiter(log, name):
    def wake():
        log.append(name)
        return True

    return wake


def test_off_is_a_fixed_fifo_semaphore():
    g = GateCore(2, "off")
    assert g.try_acquire(0) and g.try_acquire(0) and not g.try_acquire(0)
    log = []
    g.wait((), _waiter(log, "a"))
    g.wait((), _waiter(log, "b"))
    g.on_429(5, 1_000_000)  # ignored when off
    assert g.cap == 2 and g.hold_until == 0
    g.release()
    assert g.pump(10) is None and log == ["a"]


def test_halve_cuts_once_per_cooldown_and_holds_new_starts():
    g = GateCore(8, "halve")
    g.on_429(0, 2_500_000)
    assert (g.cap, g.hold_until) == (4, 2_500_000)
    g.on_429(1_000_000, 2_500_000)  # same cooldown window: no second cut, hold extended
    assert (g.cap, g.hold_until) == (4, 3_500_000)
    g.on_429(3_000_000, None)  # after the window: cut again; no header means 1 s
    assert (g.cap, g.hold_until) == (2, 4_000_000)
    g.on_429(3_000_000 + 90_000_000, 90_000_000)  # Retry-After clamped to 60 s
    assert g.hold_until == 93_000_000 + 60_000_000 and g.cap == 1
    g.on_429(200_000_000, 0)  # clamped to 1 s; floor 1
    assert g.cap == 1 and g.hold_until == 201_000_000
    log = []
    g.wait((), _waiter(log, "x"))
    assert g.pump(200_500_000) == 201_000_000 and log == []  # held
    assert g.pump(201_000_000) is None and log == ["x"]


def test_aimd_recovers_one_step_per_window_of_successes():
    g = GateCore(4, "aimd")
    g.on_429(0, 1_000_000)
    assert g.cap == 2
    g.on_success(500_000)
    g.on_success(600_000)  # still inside the hold: no increase
    assert g.cap == 2
    g.on_success(2_000_000)
    g.on_success(2_100_000)
    assert g.cap == 3  # cap successes after the hold
    for t in range(3):
        g.on_success(3_000_000 + t)
    assert g.cap == 4
    for t in range(10):
        g.on_success(4_000_000 + t)
    assert g.cap == 4  # never past the configured cap


def test_unknown_policy_is_refused():
    with pytest.raises(ValueError, match="adaptive: must be one of off, halve, aimd"):
        GateCore(3, "fast")


def test_gate_serves_the_lowest_rank_first_and_a_retry_keeps_its_place():
    g = GateCore(1, "gate")
    assert g.try_acquire(0, (2, 0, 0))  # content 2 holds the slot
    log = []
    g.wait((4, 0, 0), _waiter(log, "content 4"))
    g.wait((3, 0, 0), _waiter(log, "content 3"))  # queued later, needed earlier
    assert not g.try_acquire(0, (5, 0, 0))  # would jump ahead of scene 3's and 4's work
    g.release((2, 0, 0))
    g.pump(1)
    assert log == ["content 3"]
    g.wait((2, 1, 0), _waiter(log, "actions 2"))  # the loop's call: ahead of content 4
    g.release((3, 0, 0))
    g.pump(2)
    assert log == ["content 3", "actions 2"]
    g.on_429(3, None)  # actions 2 met a 429: back to the gate at its own rank
    g.release((2, 1, 0))
    g.wait((2, 1, 0), _waiter(log, "actions 2 again"))
    g.pump(1_000_003)  # after the hold
    assert log == ["content 3", "actions 2", "actions 2 again"]


def test_gate_keeps_a_slot_for_the_loop():
    g = GateCore(2, "gate", reserve=True)
    g.frontier = 1  # the loop awaits content 1
    log = []
    assert g.try_acquire(0, (2, 0, 0))  # prefetch: one slot left for the loop
    assert not g.try_acquire(0, (3, 0, 0))  # would take the loop's slot
    g.wait((3, 0, 0), _waiter(log, "content 3"))
    assert g.try_acquire(0, (1, 0, 0))  # the loop's own work takes the last slot
    g.release((1, 0, 0))
    g.pump(1)
    assert log == []  # still reserved: the loop's next call (actions 1) is coming
    assert g.try_acquire(1, (1, 1, 0))
    g.release((2, 0, 0))
    g.pump(2)  # the loop holds a slot now: prefetch may use the other
    assert log == ["content 3"]


def test_gate_learns_the_key_limit_from_a_429():
    g = GateCore(4, "gate")
    for r in range(4):
        assert g.try_acquire(0, (r, 0, 0))
    g.on_429(0, None)  # 3 others in flight: the key held at most 3
    assert (g.ceiling, g.cap) == (3, 1)  # capped at 3, then halved (3 // 2) as aimd does
    g.release((3, 0, 0))
    g.on_429(0, None)  # 2 others in flight
    g.release((2, 0, 0))
    assert g.ceiling == 2
    for t in range(20):
        g.on_success(2_000_000 + t)
    assert g.cap == 2  # additive increase stops at the learned limit


def test_fifo_policies_keep_arrival_order():
    g = GateCore(1, "aimd")
    assert g.try_acquire(0)
    log = []
    for name in "abc":
        g.wait((), _waiter(log, name))
    for t in range(3):
        g.release()
        g.pump(t)
    assert log == ["a", "b", "c"]
