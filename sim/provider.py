"""The provider's admission rules, shared by the fake server and the model.

One :class:`KeyState` per API key enforces the scenario's :class:`~sim.scenario.Quota`
on integer-microsecond model time:

1. in flight: a request holds its key's slot from admission to its scheduled end
   (admission + drawn latency), even if the client gives up earlier; a request
   ending at ``t`` has freed its slot for one arriving at ``t``;
   over ``max_inflight`` → 429 at once (``reason="inflight"``);
2. token bucket: ``rpm_burst`` tokens, refilled ``rpm/60`` per second; no token →
   429 at once (``reason="rpm"``);
3. random 429 with probability ``p_429`` (a token is spent) → 429 at once;
4. admitted: the response comes after the drawn latency, a ``status_5xx`` with
   probability ``p_5xx``; else, with the injected-fault probabilities, a reset
   connection (status ``RESET``) or a truncated JSON body (status ``TRUNCATED``)
   after the latency, or a stall (a 200 after ``stall_s``); else 200.

Requests arriving on one key at the same instant are decided in the canonical
order of :func:`arrival_order` (step, then classroom, outline order, clip, attempt),
whatever order they physically arrived in; both worlds batch such arrivals. The
step rank follows the profile's hand-off rule, the one tie that happens on a real
clock too: in JavaScript (``actions-first``, since #660) when content ``i`` ends the
loop's await resumes and issues actions ``i`` before the semaphore's ``finally``
frees the slot for the next content, so actions reaches the provider first;
``content-first`` is the opposite order (Python asyncio's, the port's before).
"""

from __future__ import annotations

import heapq
from collections import OrderedDict, deque
from typing import NamedTuple

from .draws import KIND_5XX, KIND_429, KIND_FAULT, Draws, client_jitter_u
from .scenario import Quota, Scenario

__all__ = ["RESET", "TRUNCATED", "Call", "Decision", "KeyState", "Provider", "arrival_order"]

RESET = 1  # decision status: the connection is reset after the latency
TRUNCATED = 2  # decision status: a 200 with a cut JSON body after the latency

STEP_LLM = (0, 1)


class Call(NamedTuple):
    """One attempt of one step call: its identity for keyed draws and ordering."""

    cid: int
    step: int  # 0 content, 1 actions, 2 tts
    order: int
    clip: int
    attempt: int
    api_key: str


class Decision(NamedTuple):
    status: int
    latency_us: int  # 0 for an immediate 429
    retry_after_ms: int | None
    inflight: int  # requests in flight on the key at arrival (before this one)
    reason: str  # "ok", "5xx", "inflight", "rpm", "random"


_RANK_ACTIONS_FIRST = (1, 0, 2)  # rank of content, actions, tts


def arrival_order(call: Call, actions_first: bool = True) -> tuple[int, int, int, int, int]:
    """The documented tie-break for arrivals on one key at one instant."""
    rank = _RANK_ACTIONS_FIRST[call.step] if actions_first else call.step
    return (rank, call.cid, call.order, call.clip, call.attempt)


class KeyState:
    """Quota state of one API key."""

    __slots__ = ("_ends", "cap", "last_us", "quota", "rate_per_us", "tokens")

    def __init__(self, quota: Quota) -> None:
        self.quota = quota
        self._ends: list[int] = []
        self.cap = quota.bucket_capacity
        self.tokens = self.cap
        self.last_us = 0
        self.rate_per_us = quota.rpm / 60e6

    def inflight(self, now_us: int) -> int:
        ends = self._ends
        while ends and ends[0] <= now_us:
            heapq.heappop(ends)
        return len(ends)

    def decide(
        self, now_us: int, latency_us: int, u429: float, u5xx: float, ufault: float = 1.0
    ) -> Decision:
        q = self.quota
        n = self.inflight(now_us)
        ra = None if q.retry_after_s is None else round(q.retry_after_s * 1000)
        if q.max_inflight and n >= q.max_inflight:
            return Decision(429, 0, ra, n, "inflight")
        if q.rpm > 0:
            tokens = self.tokens + (now_us - self.last_us) * self.rate_per_us
            self.tokens = tokens if tokens < self.cap else self.cap
            self.last_us = now_us
            if self.tokens < 1.0:
                return Decision(429, 0, ra, n, "rpm")
            self.tokens -= 1.0
        if u429 < q.p_429:
            return Decision(429, 0, ra, n, "random")
        if u5xx < q.p_5xx:
            heapq.heappush(self._ends, now_us + latency_us)
            return Decision(q.status_5xx, latency_us, None, n, "5xx")
        if ufault < q.p_reset + q.p_stall + q.p_truncate:
            if ufault < q.p_reset:
                heapq.heappush(self._ends, now_us + latency_us)
                return Decision(RESET, latency_us, None, n, "reset")
            if ufault < q.p_reset + q.p_stall:
                stall_us = round(q.stall_s * 1e6)
                heapq.heappush(self._ends, now_us + stall_us)
                return Decision(200, stall_us, None, n, "stall")
            heapq.heappush(self._ends, now_us + latency_us)
            return Decision(TRUNCATED, latency_us, None, n, "truncated")
        heapq.heappush(self._ends, now_us + latency_us)
        return Decision(200, latency_us, None, n, "ok")


class Provider:
    """All keys of one fake provider plus its request log (times in µs)."""

    def __init__(
        self,
        scenario: Scenario,
        seed: int,
        *,
        draws: Draws | None = None,
        keep_log: bool = True,
        draws_cache: int = 256,
        max_log: int = 1_000_000,
    ) -> None:
        self.scenario = scenario
        self.seed = seed
        self.actions_first = scenario.client.handoff == "actions-first"
        self._fixed = draws
        self._draws: OrderedDict[int, Draws] = OrderedDict()
        self._draws_cache = draws_cache
        self._keys: dict[tuple[str, str], KeyState] = {}
        self.keep_log = keep_log
        # the request log keeps the newest max_log entries (a long soak stays flat)
        self.log: deque[tuple[object, ...]] = deque(maxlen=max_log)
        # Test hook: admitted calls of (step, order) or (step, order, clip) answer this status.
        self.force_status: dict[tuple[int, ...], int] = {}

    def arrival_key(self, call: Call) -> tuple[int, int, int, int, int]:
        """:func:`arrival_order` under this scenario's hand-off rule."""
        return arrival_order(call, self.actions_first)

    def reset(self) -> None:
        """Forget quota state and the log (a fresh provider with the same seed)."""
        self._keys.clear()
        self.log.clear()

    def draws_for(self, cid: int) -> tuple[Draws, int]:
        fixed = self._fixed
        if fixed is not None and fixed.lo <= cid < fixed.hi:
            return fixed, cid - fixed.lo
        d = self._draws.get(cid)
        if d is None:
            d = Draws(self.scenario, self.seed, cid, cid + 1)
            self._draws[cid] = d
            if len(self._draws) > self._draws_cache:
                self._draws.popitem(last=False)
        return d, 0

    def key_state(self, step: int, api_key: str) -> KeyState:
        kind = "tts" if step == 2 else "llm"
        ks = self._keys.get((kind, api_key))
        if ks is None:
            quota = self.scenario.quota_tts if step == 2 else self.scenario.quota_llm
            ks = self._keys[(kind, api_key)] = KeyState(quota)
        return ks

    def limited(self, step: int) -> bool:
        """Whether arrivals of this step's key must be batched per instant."""
        return (self.scenario.quota_tts if step == 2 else self.scenario.quota_llm).limited

    def jitter_u(self, cid: int, step: int, order: int, clip: int, attempt: int) -> float:
        """The client's retry jitter after ``attempt`` of a call: the profile's fixed
        ``jitter_u``, else the keyed draw."""
        d, row = self.draws_for(cid)
        return client_jitter_u(self.scenario, d, row, step, order, clip, attempt)

    def speeches(self, cid: int, order: int) -> int:
        d, row = self.draws_for(cid)
        return int(d.speeches()[row, order % d.n])

    def decide(self, call: Call, now_us: int, arrival_us: int | None = None) -> Decision:
        d, row = self.draws_for(call.cid)
        col = d.column(call.step, call.order, call.clip)
        lat = int(d.latency_us(call.step, call.attempt)[row, col])
        q = self.scenario.quota_tts if call.step == 2 else self.scenario.quota_llm
        u429 = float(d.fault_u(call.step, call.attempt, KIND_429)[row, col]) if q.p_429 else 1.0
        u5xx = float(d.fault_u(call.step, call.attempt, KIND_5XX)[row, col]) if q.p_5xx else 1.0
        uf = float(d.fault_u(call.step, call.attempt, KIND_FAULT)[row, col]) if q.faulty else 1.0
        dec = self.key_state(call.step, call.api_key).decide(now_us, lat, u429, u5xx, uf)
        if self.force_status and dec.status != 429:
            forced = self.force_status.get(
                (call.step, call.order, call.clip), self.force_status.get((call.step, call.order))
            )
            if forced is not None:
                dec = dec._replace(status=forced, reason="forced")
        if self.keep_log:
            arr = now_us if arrival_us is None else arrival_us
            self.log.append(
                (
                    call.cid,
                    call.step,
                    call.order,
                    call.clip,
                    call.attempt,
                    call.api_key,
                    arr,
                    now_us,
                    now_us + dec.latency_us,
                    dec.status,
                    dec.inflight,
                    dec.reason,
                )
            )
        return dec
