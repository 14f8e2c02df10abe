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

from .limiter import GateCore
from .rules import Policy

__all__ = ["UNLIMITED_CAP", "KeyGate", "key_cap"]

UNLIMITED_CAP = 1_000_000  # a key without an in-flight limit: the gate never binds


def key_cap(max_inflight: int) -> int:
    """The gate's cap for a key: its in-flight limit (0, unlimited: a cap that never binds)."""
    return max_inflight if max_inflight > 0 else UNLIMITED_CAP


class KeyGate(GateCore):
    """A :class:`GateCore` shared by the tenants of a key. Its ranks are
    ``(tenant rank, outline order, step, clip)``: lowest first, so tenants are served in
    arrival order and, inside one, in the order its learner needs the work (the loop's
    current call before prefetched content; a retried attempt keeps its place)."""

    __slots__ = ()

    def __init__(self, cap: int, policy: str = Policy.GATE) -> None:
        super().__init__(cap, policy)
