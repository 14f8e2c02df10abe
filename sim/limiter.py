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
  *attempt* passes (content and actions on the LLM key, clips on the TTS key), the
  loop's own calls first; a 429 — the provider did no work — sends the attempt back
  to the front of the gate's queue instead of spending the retry budget.

The class holds the state and the arithmetic; each world supplies the waiting
(SimPy events, asyncio futures) and calls :meth:`pump` after every change.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

__all__ = ["POLICIES", "GateCore"]

POLICIES = ("off", "halve", "aimd", "gate")
MAX_429_WAITS = 100  # a gated call gives up after this many 429s
COOL_MIN_US = 1_000_000
COOL_MAX_US = 60_000_000


class GateCore:
    """Adaptive FIFO gate state. Times in µs of model time."""

    __slots__ = (
        "cap",
        "cut_until",
        "hold_until",
        "in_use",
        "max_cap",
        "oks",
        "policy",
        "waiters",
        "waiters_hi",
    )

    def __init__(self, cap: int, policy: str) -> None:
        if policy not in POLICIES:
            raise ValueError(f"adaptive: must be one of {', '.join(POLICIES)}; got {policy!r}")
        self.policy = policy
        self.max_cap = max(1, cap)
        self.cap = self.max_cap
        self.in_use = 0
        self.hold_until = 0
        self.cut_until = 0
        self.oks = 0
        # a waiter is a callable that wakes it and answers whether it still wanted the slot
        self.waiters: deque[Callable[[], bool]] = deque()
        self.waiters_hi: deque[Callable[[], bool]] = deque()  # served first

    def can_start(self, now_us: int) -> bool:
        return self.in_use < self.cap and now_us >= self.hold_until

    def try_acquire(self, now_us: int, high: bool = False) -> bool:
        """Start at once when nobody (of this priority or higher) waits and there is room."""
        if not self.waiters_hi and (high or not self.waiters) and self.can_start(now_us):
            self.in_use += 1
            return True
        return False

    def pump(self, now_us: int) -> int | None:
        """Wake as many waiters as fit; returns a time to pump again (a hold's end) or None."""
        while (self.waiters_hi or self.waiters) and self.can_start(now_us):
            queue = self.waiters_hi if self.waiters_hi else self.waiters
            if queue.popleft()():
                self.in_use += 1
        if (self.waiters_hi or self.waiters) and now_us < self.hold_until:
            return self.hold_until
        return None

    def release(self) -> None:
        self.in_use -= 1

    def on_429(self, now_us: int, retry_after_us: int | None) -> None:
        if self.policy == "off":
            return
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
        if self.policy not in ("aimd", "gate"):
            return
        self.oks += 1
        if self.oks >= self.cap and now_us >= self.hold_until and self.cap < self.max_cap:
            self.cap += 1
            self.oks = 0
