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

Issue 12 adds, after the RPM bucket: a per-second window and token buckets
(:mod:`sim.tokens`; a 429 from them spends nothing and carries the wait until they would
admit the call, and OpenAI-style ``x-ratelimit-*`` values in :attr:`Decision.rate`), and
a shared capacity (:mod:`sim.sharing`): an admitted request on such a key gets a
``PENDING`` decision, its end is decided by :meth:`Provider.fire` when the world's timer
(set through :attr:`Provider.arm`) fires, and the world only waits (:meth:`Provider.wait`).
A request the queue refuses or holds out has still spent its tokens and its RPM token.

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
import math
import sys
from collections import OrderedDict, deque
from collections.abc import Callable
from functools import partial
from heapq import heappop, heappush
from typing import NamedTuple, cast

from .draws import Draws, client_jitter_u
from .faults import KeyLimits, has_limits
from .scenario import Quota, Scenario
from .sharing import SharedCore
from .tokens import RateInfo, SecondWindow, TokenBuckets

__all__ = [
    "PENDING",
    "RESET",
    "TRUNCATED",
    "Call",
    "Decision",
    "KeyState",
    "Provider",
    "QuickDecide",
    "QuickFirst",
    "arrival_order",
    "new_call",
]

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
    reason: str  # "ok", "5xx", "inflight", "rpm", "random", "rps", "tpm", "itpm", "otpm", …
    rate: RateInfo | None = None  # the x-ratelimit-* values of a 429 (:mod:`sim.tokens`)
    job: tuple[int, ...] | None = None  # a shared-capacity job to wait for (latency PENDING)


# The hot paths build these tuples without the NamedTuples' Python-level ``__new__`` (the same
# values; every field given, in order).
new_call = cast(Callable[[tuple[int, int, int, int, int, str]], Call], partial(tuple.__new__, Call))
_new_decision = cast(
    Callable[[tuple[int, int, int | None, int, str, RateInfo | None, None]], Decision],
    partial(tuple.__new__, Decision),
)


_RANK_ACTIONS_FIRST = (1, 0, 2)  # rank of content, actions, tts


def arrival_order(call: Call, actions_first: bool = True) -> tuple[int, int, int, int, int]:
    """The documented tie-break for arrivals on one key at one instant."""
    rank = _RANK_ACTIONS_FIRST[call.step] if actions_first else call.step
    return (rank, call.cid, call.order, call.clip, call.attempt)


class KeyState:
    """Quota state of one API key."""

    __slots__ = (
        "_ends",
        "buckets",
        "cap",
        "cap_n",
        "capped",
        "core",
        "extras",
        "last_us",
        "open",
        "p_fault",
        "plain",
        "quick",
        "quota",
        "ra_ms",
        "rate_per_us",
        "tokens",
        "window",
    )

    def __init__(self, quota: Quota) -> None:
        self.quota = quota
        self._ends: list[int] = []
        q = quota
        (
            self.cap,
            self.rate_per_us,
            self.ra_ms,
            self.p_fault,
            self.open,
            self.plain,
            self.quick,
            self.capped,
            self.cap_n,
            (tokens, per_second, shared, limits),
        ) = _constants(q)
        self.tokens = self.cap
        self.last_us = 0
        self.buckets = TokenBuckets(q.tpm, q.itpm, q.otpm, q.token_refund) if tokens else None
        self.window = SecondWindow(q.rpm) if per_second else None
        self.core = (
            SharedCore(q.throughput, q.parallel, q.max_queue, round(q.max_hold_s * 1e6))
            if shared
            else None
        )
        self.extras = KeyLimits(q) if limits else None  # issue 21 (sim.faults)

    def inflight(self, now_us: int) -> int:
        ends = self._ends
        while ends and ends[0] <= now_us:
            heapq.heappop(ends)
        return len(ends)

    def decide(
        self,
        now_us: int,
        latency_us: int,
        u429: float,
        u5xx: float,
        ufault: float = 1.0,
        need: tuple[int, int] = (0, 0),
    ) -> Decision:
        """``need``: the call's estimated (input, output) tokens for the token buckets."""
        ends = self._ends
        if self.core is None:
            while ends and ends[0] <= now_us:  # :meth:`inflight`, inline
                heappop(ends)
            n = len(ends)
        else:
            n = len(self.core)
        if self.plain:  # what the rules below come to on a key without limits or faults
            heappush(ends, now_us + latency_us)
            return _new_decision((200, latency_us, None, n, "ok", None, None))
        q = self.quota
        ra = self.ra_ms
        if self.open:  # the same, without the limits' checks (none applies)
            return self._random(now_us, latency_us, u429, u5xx, ufault, n, ra)
        if self.extras is not None:
            hit = self.extras.scripted(now_us)
            if hit is not None:
                status, why, left_us = hit
                if ra is not None and left_us is not None and status == 429:
                    ra = -(-left_us // 1000)
                return _new_decision((status, 0, ra, n, why, None, None))
        if q.max_inflight and n >= q.max_inflight:
            return _new_decision((429, 0, ra, n, "inflight", None, None))
        if q.rpm > 0 and not q.rpm_window_s:  # windows (sim.faults) replace the bucket
            tokens = self.tokens + (now_us - self.last_us) * self.rate_per_us
            self.tokens = tokens if tokens < self.cap else self.cap
            self.last_us = now_us
            if self.tokens < 1.0:
                return Decision(429, 0, ra, n, "rpm", self.rate_info(now_us, None))
        if self.buckets is not None or self.window is not None or self.extras is not None:
            limited = self._limits(now_us, need, n, ra)
            if limited is not None:
                return limited
        if q.rpm > 0 and not q.rpm_window_s:
            self.tokens -= 1.0
        return self._random(now_us, latency_us, u429, u5xx, ufault, n, ra)

    def over_cap(self, now_us: int) -> Decision | None:
        """A ``capped`` key's limit (``cap_n``; none on other keys): its 429 when the key is
        full at ``now_us``, else ``None`` (what ended by then has left)."""
        ends = self._ends
        while ends and ends[0] <= now_us:  # :meth:`inflight`, inline
            heappop(ends)
        n = len(ends)
        if n >= self.cap_n:
            return _new_decision((429, 0, self.ra_ms, n, "inflight", None, None))
        return None

    def decide_open(
        self, now_us: int, latency_us: int, u429: float, u5xx: float, ufault: float
    ) -> Decision:
        """:meth:`decide` on an ``open`` key (no admission limit) or a ``capped`` one (its only
        limit the in-flight cap): the same answer, in one call (the model's hot path)."""
        full_key = self.over_cap(now_us)
        if full_key is not None:
            return full_key
        return self.admit_open(now_us, latency_us, u429, u5xx, ufault)

    def admit_open(
        self, now_us: int, latency_us: int, u429: float, u5xx: float, ufault: float
    ) -> Decision:
        """:meth:`decide_open` once :meth:`over_cap` has found room (the fast engine asks
        :meth:`over_cap` first, so a full key reads no draws): its random answer."""
        ends = self._ends
        n = len(ends)
        q = self.quota
        if u429 < q.p_429:
            return _new_decision((429, 0, self.ra_ms, n, "random", None, None))
        if u5xx < q.p_5xx:
            heappush(ends, now_us + latency_us)
            return _new_decision((q.status_5xx, latency_us, None, n, "5xx", None, None))
        if ufault < self.p_fault:
            return self._fault(now_us, latency_us, ufault, n)
        heappush(ends, now_us + latency_us)
        return _new_decision((200, latency_us, None, n, "ok", None, None))

    def _random(
        self,
        now_us: int,
        latency_us: int,
        u429: float,
        u5xx: float,
        ufault: float,
        n: int,
        ra: int | None,
    ) -> Decision:
        """An admitted request's answer: a random 429, a 5xx, a fault, else a 200."""
        q = self.quota
        if u429 < q.p_429:
            return _new_decision((429, 0, ra, n, "random", None, None))
        if u5xx < q.p_5xx:
            heappush(self._ends, now_us + latency_us)
            return _new_decision((q.status_5xx, latency_us, None, n, "5xx", None, None))
        if ufault < self.p_fault:
            return self._fault(now_us, latency_us, ufault, n)
        heappush(self._ends, now_us + latency_us)
        return _new_decision((200, latency_us, None, n, "ok", None, None))

    def _fault(self, now_us: int, latency_us: int, ufault: float, n: int) -> Decision:
        """An admitted request's injected fault (``ufault < p_fault``)."""
        q = self.quota
        if ufault < q.p_reset:
            heappush(self._ends, now_us + latency_us)
            return Decision(RESET, latency_us, None, n, "reset")
        if ufault < q.p_reset + q.p_stall:
            stall_us = round(q.stall_s * 1e6)
            heappush(self._ends, now_us + stall_us)
            return Decision(200, stall_us, None, n, "stall")
        heappush(self._ends, now_us + latency_us)
        return Decision(TRUNCATED, latency_us, None, n, "truncated")

    def _limits(
        self, now_us: int, need: tuple[int, int], n: int, ra: int | None
    ) -> Decision | None:
        """The per-second window and the token buckets (:mod:`sim.tokens`): a 429 whose
        Retry-After is the wait until they would admit the call, or ``None`` (spent)."""
        hit: tuple[str, int] | None = None
        if self.window is not None:
            wait = self.window.check(now_us)
            hit = None if wait is None else ("rps", wait)
        if hit is None and self.buckets is not None:
            hit = self.buckets.check(now_us, *need)
        if hit is None and self.extras is not None:
            hit = self.extras.check(now_us, need[0] + need[1])
        if hit is not None:
            reason, wait = hit
            if ra is not None and wait >= 0:
                ra = -(-wait // 1000)
            return Decision(429, 0, ra, n, reason, self.rate_info(now_us, reason))
        if self.window is not None:
            self.window.spend()
        if self.buckets is not None:
            self.buckets.spend(*need)
        if self.extras is not None:
            self.extras.spend(need[0] + need[1])
        return None

    def release(self, end_us: int, now_us: int) -> None:
        """A request admitted to end at ``end_us`` lost its client at ``now_us``: its slot
        is free from ``now_us`` (scenarios whose quota frees slots on disconnect)."""
        ends = self._ends
        if end_us > now_us and end_us in ends:
            ends[ends.index(end_us)] = now_us
            heapq.heapify(ends)

    def rate_info(self, now_us: int, which: str | None) -> RateInfo:
        """OpenAI-style ``x-ratelimit-*`` values now (requests: the RPM bucket; tokens: the
        bucket ``which``, else the first)."""
        q = self.quota
        req = (-1, -1, -1)
        if q.rpm > 0:
            missing = self.cap - self.tokens
            reset = math.ceil(missing / self.rate_per_us) if missing > 0 else 0
            req = (int(q.rpm), max(0, math.floor(self.tokens)), reset)
        tok = self.buckets.info(which) if self.buckets is not None else (-1, -1, -1)
        return RateInfo(*req, *tok)


_Constants = tuple[
    float, float, int | None, float, bool, bool, bool, bool, int, tuple[bool, bool, bool, bool]
]
_CONSTANTS: dict[int, tuple[Quota, _Constants]] = {}  # by id(quota), the quota kept alive


def _constants(q: Quota) -> _Constants:
    """A :class:`KeyState`'s constants for quota ``q`` (made once per quota object: a run's
    provider makes its key states anew): bucket capacity, refill per µs, Retry-After in ms,
    fault probability, ``open``, ``plain``, ``quick``, ``capped``, ``cap_n``, and whether it
    has token buckets, a per-second window, a shared capacity, issue 21's limits."""
    got = _CONSTANTS.get(id(q))
    if got is not None and got[0] is q:
        return got[1]
    p_fault = q.p_reset + q.p_stall + q.p_truncate
    kinds = (q.tokens_limited, bool(q.rpm_per_second), q.shared, has_limits(q))
    no_limit = not any(kinds)  # no token buckets, window, shared capacity, extras
    # no admission limit: the decision depends on the call's draws alone (and the
    # in-flight count it reports); ``plain``: nor any random answer, every request a 200
    is_open = not (q.max_inflight or q.rpm > 0) and no_limit
    plain = is_open and not (q.p_429 or q.p_5xx or p_fault > 0)
    # no token buckets nor shared capacity: :meth:`Provider.decide` has nothing to add
    quick = not kinds[0] and not kinds[2]
    # the in-flight cap is the only limit: :meth:`decide_open` with the cap ``cap_n``
    capped = bool(q.max_inflight) and not q.rpm > 0 and no_limit
    cap_n = q.max_inflight if capped else sys.maxsize
    ra_ms = None if q.retry_after_s is None else round(q.retry_after_s * 1000)
    made = (q.bucket_capacity, q.rpm / 60e6, ra_ms, p_fault, is_open, plain, quick, capped)
    consts: _Constants = (*made, cap_n, kinds)
    if len(_CONSTANTS) >= 4096:
        _CONSTANTS.clear()
    _CONSTANTS[id(q)] = (q, consts)
    return consts


QuickDecide = Callable[[int, int, int, int, int], Decision]
"""(cid, order, clip, attempt, now_us) -> the decision (:meth:`Provider.quick_decide`)."""
QuickFirst = Callable[[int, int, int, int], "int | Decision"]
"""(cid, order, clip, now_us) -> a plain 200's latency, else the decision of the call's first
attempt (:meth:`Provider.quick_first`)."""
_NO_NEED = ((0, 0), 0)  # no token buckets: no estimate, no output tokens
PENDING = -1  # Decision.latency_us of a request a shared capacity is still serving


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
        self._by_step: dict[tuple[int, str], KeyState] = {}  # (step, key): :meth:`key_state`
        self.keep_log = keep_log
        # the request log keeps the newest max_log entries (a long soak stays flat)
        self.log: deque[tuple[object, ...]] = deque(maxlen=max_log)
        # Test hook: admitted calls of (step, order) or (step, order, clip) answer this status.
        self.force_status: dict[tuple[int, ...], int] = {}
        # Shared capacity (sim.sharing): the world sets ``arm`` to call fire(at) at ``at``.
        self.arm: Callable[[int], None] | None = None
        self._jobs: dict[tuple[int, ...], tuple[Decision, int, KeyState, list[object] | None]] = {}
        self._waiters: dict[tuple[int, ...], Callable[[Decision], object]] = {}
        self._results: dict[tuple[int, ...], Decision] = {}
        self._unused: dict[tuple[int, ...], int] = {}  # output tokens to refund at the end
        self._forgotten: set[tuple[int, ...]] = set()
        # per step (0 content, 1 actions, 2 tts): its quota
        llm, tts = scenario.quota_llm, scenario.quota_tts
        self._quota = (llm, llm, tts, llm, llm, llm)  # by step (sim.rules.Step): only TTS is tts

    def arrival_key(self, call: Call) -> tuple[int, int, int, int, int]:
        """:func:`arrival_order` under this scenario's hand-off rule."""
        return arrival_order(call, self.actions_first)

    def reset(self) -> None:
        """Forget quota state and the log (a fresh provider with the same seed)."""
        self._keys.clear()
        self._by_step.clear()
        self.log.clear()
        self._jobs.clear()
        self._waiters.clear()
        self._results.clear()
        self._unused.clear()
        self._forgotten.clear()

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
        fixed = self._fixed  # :meth:`draws_for`'s first case, inline
        if fixed is not None and fixed.lo <= cid < fixed.hi:
            return client_jitter_u(self.scenario, fixed, cid - fixed.lo, step, order, clip, attempt)
        d, row = self.draws_for(cid)
        return client_jitter_u(self.scenario, d, row, step, order, clip, attempt)

    def speeches(self, cid: int, order: int) -> int:
        fixed = self._fixed  # :meth:`draws_for`'s first case, inline
        if fixed is not None and fixed.lo <= cid < fixed.hi:
            return fixed.speeches_row(cid - fixed.lo)[order % fixed.n]
        d, row = self.draws_for(cid)
        return int(d.speeches().item(row, order % d.n))

    def quick_decide(self, step: int, api_key: str) -> QuickDecide | None:
        """:meth:`decide` for the calls of ``step`` on ``api_key`` as a function of the call's
        fields (``cid, order, clip, attempt, now_us``), for a key without token buckets or
        shared capacity (:attr:`KeyState.quick`) with no request log and fixed draws; ``None``
        where that does not apply. The same draws and the same :meth:`KeyState.decide` (or
        :meth:`KeyState.decide_open`), without a call tuple or the look-ups :meth:`decide`
        makes for every key (the model's hot path)."""
        fixed = self._fixed
        quota = self._quota[step]
        if fixed is None or self.keep_log or quota.tokens_limited or quota.shared:
            return None  # (no key state made for such keys here: they are made as they come)
        if type(self).decide is not _PROVIDER_DECIDE:
            return None  # a replaced decide (a subclass, a test's patch) decides every call
        ks = self._by_step.get((step, api_key))
        if ks is None:
            ks = self._by_step[(step, api_key)] = self.key_state(step, api_key)
        assert ks.quick
        d, lo, hi = fixed, fixed.lo, fixed.hi
        tables, full = fixed._admit, self.decide
        # an open or capped key: :meth:`KeyState.decide_open`'s two halves, the limit first (a
        # full key reads no draw); an open key's limit is over_cap without a cap (what ended
        # leaves, inline); other keys: decide
        over_cap = ks.over_cap if ks.capped else None
        answer = ks.admit_open if ks.open or ks.capped else ks.decide
        ends = ks._ends if ks.open else None

        def decide(cid: int, order: int, clip: int, attempt: int, now_us: int) -> Decision:
            if self.force_status or not lo <= cid < hi:
                return full(new_call((cid, step, order, clip, attempt, api_key)), now_us)
            if ends is not None:
                while ends and ends[0] <= now_us:  # :meth:`KeyState.inflight`, inline
                    heappop(ends)
            elif over_cap is not None:
                full_key = over_cap(now_us)
                if full_key is not None:
                    return full_key
            rows = tables.get((step, attempt))
            if rows is None:
                rows = d.admission(step, attempt)
            row = cid - lo
            col = d.column(step, order, clip)
            lats, r429, r5xx, rf = rows
            return answer(
                now_us,
                lats.item(row, col),
                1.0 if r429 is None else r429.item(row, col),
                1.0 if r5xx is None else r5xx.item(row, col),
                1.0 if rf is None else rf.item(row, col),
            )

        return decide

    def quick_first(
        self, step: int, api_key: str, max_us: int, quick: QuickDecide | None
    ) -> QuickFirst | None:
        """:meth:`quick_decide` for a call's first attempt (attempt 0) on an ``open`` key (no
        admission limit), as a function of ``cid, order, clip, now_us``: an attempt that is a
        plain 200 ending within ``max_us`` is answered by its latency alone (an ``int``; its
        slot taken as :meth:`KeyState.admit_open` takes it), any other by its
        :class:`Decision`. The same draws and answers (:meth:`Draws.plain_ok_us` tells the
        plain 200s apart), one look-up per plain 200 (the model's hot path); ``None`` where
        :meth:`quick_decide` does not apply or the key has limits (``quick``: its function
        for this step and key, made by the caller)."""
        if quick is None:
            return None
        ks = self._by_step[(step, api_key)]  # (made by quick_decide)
        if not ks.open:
            return None
        fixed = self._fixed
        assert fixed is not None
        q = ks.quota
        plain = fixed.plain_ok_us(step, 0, q.p_429, q.p_5xx, ks.p_fault)
        lo, hi, n, kmax, ends = fixed.lo, fixed.hi, fixed.n, fixed.kmax, ks._ends
        tts = step == 2

        def first(cid: int, order: int, clip: int, now_us: int) -> int | Decision:
            if lo <= cid < hi and not self.force_status:
                lat = plain[cid - lo][order % n * kmax + clip % kmax if tts else order % n]
                if lat is not None and lat <= max_us:
                    while ends and ends[0] <= now_us:  # :meth:`KeyState.inflight`, inline
                        heappop(ends)
                    heappush(ends, now_us + lat)
                    return lat
            return quick(cid, order, clip, 0, now_us)

        return first

    def decide(self, call: Call, now_us: int, arrival_us: int | None = None) -> Decision:
        cid, step, order, clip, attempt, api_key = call
        fixed = self._fixed  # :meth:`draws_for`'s first case, inline
        if fixed is not None and fixed.lo <= cid < fixed.hi:
            d, row = fixed, cid - fixed.lo
        else:
            d, row = self.draws_for(cid)
        col = d.column(step, order, clip)
        rows = d._admit.get((step, attempt))  # :meth:`Draws.admission`'s cache, else it
        if rows is None:
            rows = d.admission(step, attempt)
        lats, r429, r5xx, rf = rows
        lat: int = lats.item(row, col)  # .item: a Python number
        u429: float = 1.0 if r429 is None else r429.item(row, col)
        u5xx: float = 1.0 if r5xx is None else r5xx.item(row, col)
        uf: float = 1.0 if rf is None else rf.item(row, col)
        ks = self._by_step.get((step, api_key))
        if ks is None:
            ks = self._by_step[(step, api_key)] = self.key_state(step, api_key)
        if ks.quick and not self.force_status and not self.keep_log:  # nothing below applies
            if ks.open:
                return ks.decide_open(now_us, lat, u429, u5xx, uf)
            return ks.decide(now_us, lat, u429, u5xx, uf)
        need, used = self._need(ks, call, d, row, col) if ks.buckets is not None else _NO_NEED
        if ks.core is not None:
            self.fire(now_us)  # what ended by now has left (normally the worlds' timers did)
        dec = ks.decide(now_us, lat, u429, u5xx, uf, need)
        if ks.buckets is not None and dec.status != 429 and ks.core is None:
            ks.buckets.refund_at(now_us + dec.latency_us, need[1] - used)
        if self.force_status and dec.status != 429:
            forced = self.force_status.get(
                (call.step, call.order, call.clip), self.force_status.get((call.step, call.order))
            )
            if forced is not None:
                dec = dec._replace(status=forced, reason="forced")
        row_log: list[object] | None = None
        if ks.core is not None and dec.status != 429 and dec.reason != "stall":
            dec = self._join(ks, call, dec, now_us, need[1] - used)
            if dec.latency_us == PENDING and self.keep_log:
                arr = now_us if arrival_us is None else arrival_us
                row_log = [*call[:6], arr, now_us, now_us, dec.status, dec.inflight, dec.reason]
                self.log.append(row_log)  # type: ignore[arg-type]  # its end is set later
                job_dec, arrived, _, _ = self._jobs[call[:5]]
                self._jobs[call[:5]] = (job_dec, arrived, ks, row_log)
                return dec
        if self.keep_log:
            arr = now_us if arrival_us is None else arrival_us
            self.log.append(
                (
                    cid,
                    step,
                    order,
                    clip,
                    attempt,
                    api_key,
                    arr,
                    now_us,
                    now_us + dec.latency_us,
                    dec.status,
                    dec.inflight,
                    dec.reason,
                )
            )
        return dec

    def _need(
        self, ks: KeyState, call: Call, d: Draws, row: int, col: int
    ) -> tuple[tuple[int, int], int]:
        """The call's estimated (input, output) tokens, and its actual output tokens."""
        spec = self.scenario.step_tokens(call.step)
        daily = ks.extras is not None and ks.quota.tpd > 0  # tokens per day count them too
        if (ks.buckets is None and not daily) or spec is None:
            return (0, 0), 0
        tin = int(d.tokens_in(call.step)[row, col])
        tout = int(d.tokens_out(call.step, call.attempt)[row, col])
        return spec.estimate(tin, tout), tout

    def frees_on_disconnect(self, step: int) -> bool:
        """Whether a client that gives up on this step's call frees its key's slot then
        (``Quota.disconnect_frees``, :mod:`sim.faults`)."""
        return (self.scenario.quota_tts if step == 2 else self.scenario.quota_llm).disconnect_frees

    def release(self, call: Call, end_us: int, now_us: int) -> None:
        """The client of ``call`` (admitted to end at ``end_us``) went away at ``now_us``:
        its key's in-flight slot is free from then (:meth:`KeyState.release`)."""
        self.key_state(call.step, call.api_key).release(end_us, now_us)

    # -- shared capacity (sim.sharing): the worlds wait, the provider decides ----------
    def _join(self, ks: KeyState, call: Call, dec: Decision, now_us: int, unused: int) -> Decision:
        """Hand an admitted request to its key's shared capacity: the queue-full answer
        at once, else a PENDING decision whose end :meth:`fire` decides."""
        assert ks.core is not None
        job = tuple(call[:5])
        if not ks.core.add(now_us, job, dec.latency_us):
            return Decision(ks.quota.queue_status, 0, None, dec.inflight, "queue-full")
        self._jobs[job] = (dec._replace(job=job), now_us, ks, None)
        if ks.buckets is not None and unused > 0:
            self._unused[job] = unused
        self._arm_next()
        return dec._replace(latency_us=PENDING, job=job)

    def _arm_next(self) -> None:
        if self.arm is None:
            return
        times = [
            t
            for ks in self._keys.values()
            if ks.core is not None and (t := ks.core.next_event_us()) is not None
        ]
        if times:
            self.arm(min(times))

    def fire(self, now_us: int) -> None:
        """Move every shared capacity to ``now_us``; answer the requests that ended."""
        for ks in self._keys.values():
            if ks.core is None or not len(ks.core):
                continue
            for f in ks.core.advance(now_us):
                job = cast(tuple[int, ...], f.key)
                dec, arrived, _, row_log = self._jobs.pop(job)
                if f.expired:
                    dec = Decision(ks.quota.queue_status, 0, None, dec.inflight, "held")
                dec = dec._replace(latency_us=f.at_us - arrived, job=job)
                unused = self._unused.pop(job, 0)
                if ks.buckets is not None and not f.expired:
                    ks.buckets.refund_at(f.at_us, unused)
                if row_log is not None:
                    row_log[8], row_log[9], row_log[11] = f.at_us, dec.status, dec.reason
                waiter = self._waiters.pop(job, None)
                if waiter is not None:
                    waiter(dec)
                elif job in self._forgotten:
                    self._forgotten.discard(job)
                else:
                    self._results[job] = dec
        self._arm_next()

    def wait(self, job: tuple[int, ...], resolve: Callable[[Decision], object]) -> None:
        """Call ``resolve`` with the final decision of a PENDING ``job`` when it ends (at
        once if it already has)."""
        done = self._results.pop(job, None)
        if done is not None:
            resolve(done)
        else:
            self._waiters[job] = resolve

    def forget(self, job: tuple[int, ...]) -> None:
        """The client gave up on ``job``: it keeps its place, nobody hears its end."""
        self._waiters.pop(job, None)
        if job in self._jobs:
            self._forgotten.add(job)
        else:
            self._results.pop(job, None)


_PROVIDER_DECIDE = Provider.decide  # :meth:`Provider.quick_decide` only stands in for this one
