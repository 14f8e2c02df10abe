"""The adaptive concurrency limiter's rules, shared by the real pipeline and the model.

A classroom has one gate for its content calls and one for its within-scene
speech clips (two keys). A gate admits new starts in FIFO order while
``in_use < cap`` and the hold has ended. Policies:

* ``off``: the fixed cap (upstream as merged);
* ``halve`` (as seen in a later fork of upstream): on a 429 to a gated call (any
  attempt), hold new starts until ``now + cool`` with ``cool`` = its Retry-After
  clamped to [1 s, 60 s] (1 s when absent), and halve the cap (floor 1) at most
  once per cooldown window;
* ``aimd`` (scenebench's): ``halve``'s decrease, plus recovery: after ``cap``
  successes in a row outside a hold, the cap grows by one, up to the configured
  cap (additive increase, multiplicative decrease);
* ``gate`` (scenebench's proposal): ``aimd``'s rules on per-key gates that every
  *attempt* passes (content and actions on the LLM key, clips on the TTS key); a 429 —
  the provider did no work — sends the attempt back to the gate instead of spending
  the retry budget. Attempts pass **in the order the learner needs them**: each has a
  rank (outline order, step, clip) and the gate serves the lowest rank first, so the
  loop's current call goes first, prefetched content follows by scene order, and a
  retried attempt keeps its original place — nothing jumps ahead of an earlier
  scene's work. On the LLM key of the pipelined loop the gate also **keeps a slot for
  the loop** (``reserve``): an attempt for a scene beyond the loop's frontier (the
  scene whose LLM work the loop does or awaits next) may not take the last free slot
  unless the loop's own call already holds one. And it **learns the key's limit**: a
  429 met while ``m`` other attempts of the gate were in flight caps the gate at
  ``max(1, m)`` for the rest of the classroom (the key held no more than ``m``), so
  additive increase never probes past a limit it has seen.

The class holds the state and the arithmetic; each world supplies the waiting
(SimPy events, asyncio futures) and calls :meth:`pump` after every change.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from typing import Protocol

from .errors import UserError
from .rules import MAX_429_WAITS, POLICIES, GateNews, Policy

__all__ = [
    "LOOP_DONE",
    "MAX_429_WAITS",
    "POLICIES",
    "GateCore",
    "GateHandle",
    "Policy",
    "Rank",
    "tell_gate",
]
COOL_MIN_US = 1_000_000
COOL_MAX_US = 60_000_000


Rank = tuple[int, ...]
LOOP_DONE = 1 << 30  # a frontier past every scene: the loop has ended, nothing is reserved


class GateCore:
    """Adaptive gate state; waiters are served lowest rank first (FIFO among equal ranks).
    Times in µs of model time."""

    __slots__ = (
        "cap",
        "ceiling",
        "cut_until",
        "frontier",
        "hold_until",
        "in_use",
        "max_cap",
        "oks",
        "policy",
        "reserve",
        "running",
        "seq",
        "waiters",
    )

    def __init__(self, cap: int, policy: str, reserve: bool = False) -> None:
        if policy not in POLICIES:
            raise UserError(f"adaptive: must be one of {', '.join(POLICIES)}; got {policy!r}")
        self.policy = Policy(policy)
        self.max_cap = max(1, cap)
        self.cap = self.max_cap
        self.ceiling = self.max_cap  # the learned limit of the key (``gate``)
        self.in_use = 0
        self.hold_until = 0
        self.cut_until = 0
        self.oks = 0
        self.reserve = reserve  # keep a slot for the loop's work (``frontier``)
        self.frontier = -1
        self.running: list[Rank] = []  # ranks of the attempts holding a slot
        self.seq = 0
        # a waiter is (rank, arrival, wake): wake() wakes it and answers whether it still
        # wanted the slot
        self.waiters: list[tuple[Rank, int, Callable[[], bool]]] = []

    def can_start(self, now_us: int) -> bool:
        return self.in_use < self.cap and now_us >= self.hold_until

    def is_loop(self, rank: Rank) -> bool:
        """Whether an attempt is the loop's own work (its scene is not past the frontier)."""
        return not rank or rank[0] <= self.frontier

    def fits(self, rank: Rank, now_us: int) -> bool:
        """Whether an attempt of this rank may take a slot now (ignoring who waits)."""
        if not self.can_start(now_us):
            return False
        if not self.reserve or self.is_loop(rank):
            return True
        loop_holds = any(self.is_loop(r) for r in self.running)
        return self.in_use + (1 if loop_holds else 2) <= self.cap

    def _take(self, rank: Rank) -> None:
        self.in_use += 1
        self.running.append(rank)

    def try_acquire(self, now_us: int, rank: Rank = ()) -> bool:
        """Start at once when nobody ranked before it waits and it fits."""
        if (not self.waiters or rank < self.waiters[0][0]) and self.fits(rank, now_us):
            self._take(rank)
            return True
        return False

    def wait(self, rank: Rank, wake: Callable[[], bool]) -> None:
        """Queue a waiter (the world calls :meth:`pump` next)."""
        heapq.heappush(self.waiters, (rank, self.seq, wake))
        self.seq += 1

    def pump(self, now_us: int) -> int | None:
        """Wake waiters lowest rank first while the first fits; returns a time to pump
        again (a hold's end) or None."""
        while self.waiters and self.fits(self.waiters[0][0], now_us):
            rank, _, wake = heapq.heappop(self.waiters)
            if wake():
                self._take(rank)
        if self.waiters and now_us < self.hold_until:
            return self.hold_until
        return None

    def release(self, rank: Rank = ()) -> None:
        self.in_use -= 1
        if rank in self.running:  # a subclass that admits on its own may not track ranks
            self.running.remove(rank)

    def on_429(self, now_us: int, retry_after_us: int | None) -> None:
        """A 429 to an attempt that still holds its slot (call before :meth:`release`)."""
        if self.policy is Policy.OFF:
            return
        if self.policy is Policy.GATE:  # the key held at most the others in flight
            self.ceiling = max(1, min(self.ceiling, self.in_use - 1))
            self.cap = min(self.cap, self.ceiling)
        cool = (
            COOL_MIN_US
            if retry_after_us is None
            else min(COOL_MAX_US, max(COOL_MIN_US, retry_after_us))
        )
        self.hold_until = max(self.hold_until, now_us + cool)
        self.oks = 0
        if now_us >= self.cut_until:
            self.cap = max(1, self.cap // 2)
            self.cut_until = now_us + cool

    def on_success(self, now_us: int) -> None:
        if self.policy is not Policy.AIMD and self.policy is not Policy.GATE:
            return
        self.oks += 1
        top = min(self.max_cap, self.ceiling)
        if self.oks >= self.cap and now_us >= self.hold_until and self.cap < top:
            self.cap += 1
            self.oks = 0


class GateHandle(Protocol):
    """A world's gate around a :class:`GateCore` (SimPy events, asyncio futures)."""

    @property
    def core(self) -> GateCore: ...

    def changed(self) -> None: ...

    def release(self, rank: Rank = ()) -> None: ...


def tell_gate(
    gate: GateHandle, news: GateNews, now_us: int, retry_after_us: int | None, held: Rank | None
) -> None:
    """Tell a gate what an attempt came to (:attr:`sim.rules.Verdict.tell`). ``held``: the
    rank of the slot the attempt holds (the ``gate`` policy), released after the news;
    ``None``: the call holds no slot of its own, and the gate is pumped after a 429."""
    if news is GateNews.SUCCESS:
        gate.core.on_success(now_us)
    elif news is GateNews.RATE_LIMITED:
        gate.core.on_429(now_us, retry_after_us)
        if held is None:
            gate.changed()
    if held is not None:
        gate.release(held)
