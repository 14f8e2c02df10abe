"""A key-wide gate: one gate per API key, shared by every classroom or job on it.

The per-classroom ``gate`` policy (:mod:`sim.limiter`) gives each classroom its own
gates, so K classrooms on one key still put K·(c + 1) calls on a key that may allow
fewer. A :class:`KeyGate` is one :class:`~sim.limiter.GateCore` (``gate`` policy: a
429 re-queues the attempt, AIMD on the cap) whose cap is the key's own in-flight
limit, shared by all tenants. Waiters are served in the order

    (tenant rank, lane, arrival at the gate)

where the rank is the tenant's (job's) arrival order — first come, first served
between tenants — and lane 0 holds a tenant's *current* call (the loop's actions,
the foreground scene, an attempt sent back by a 429) ahead of lane 1 (prefetched
content, clips). Only the waiting order is new; cap, hold and AIMD are GateCore's.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable

from .limiter import GateCore

__all__ = ["UNLIMITED_CAP", "KeyGate", "key_cap"]

UNLIMITED_CAP = 1_000_000  # a key without an in-flight limit: the gate never binds


def key_cap(max_inflight: int) -> int:
    """The gate's cap for a key: its in-flight limit (0, unlimited: a cap that never binds)."""
    return max_inflight if max_inflight > 0 else UNLIMITED_CAP


class KeyGate(GateCore):
    """A GateCore whose waiters are ordered by (rank, lane, sequence) instead of two FIFOs."""

    __slots__ = ("heap", "seq")

    def __init__(self, cap: int, policy: str = "gate") -> None:
        super().__init__(cap, policy)
        self.heap: list[tuple[int, int, int, Callable[[], bool]]] = []
        self.seq = 0

    def push(self, rank: int, high: bool, wake: Callable[[], bool]) -> None:
        """Queue a waiter of tenant ``rank``; ``high``: the tenant's current call."""
        heapq.heappush(self.heap, (rank, 0 if high else 1, self.seq, wake))
        self.seq += 1

    def try_acquire(self, now_us: int, high: bool = False) -> bool:
        """Start at once only when nobody waits and there is room."""
        if not self.heap and self.can_start(now_us):
            self.in_use += 1
            return True
        return False

    def pump(self, now_us: int) -> int | None:
        """Wake waiters in order while they fit; a time to pump again (a hold's end) or None."""
        while self.heap and self.can_start(now_us):
            wake = heapq.heappop(self.heap)[3]
            if wake():
                self.in_use += 1
        if self.heap and now_us < self.hold_until:
            return self.hold_until
        return None
