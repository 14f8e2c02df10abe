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
    g.waiters.extend([_waiter(log, "a"), _waiter(log, "b")])
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
    g.waiters.append(_waiter(log, "x"))
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


def test_high_priority_waiters_go_first():
    g = GateCore(1, "gate")
    assert g.try_acquire(0)
    log = []
    g.waiters.append(_waiter(log, "content"))
    g.waiters_hi.append(_waiter(log, "actions"))
    assert not g.try_acquire(0, high=True)  # full
    g.release()
    g.pump(1)
    assert log == ["actions"]
    g.release()
    g.pump(2)
    assert log == ["actions", "content"]
