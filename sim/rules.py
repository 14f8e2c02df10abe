"""The decision core both worlds call: pure functions, no I/O, no waiting.

The SimPy model (:mod:`sim.model`), the asyncio pipeline (:mod:`runner.pipeline`)
and the fake provider's routes (:mod:`runner.server`) only *wait*; every decision
about what happens next is made here:

* the knob: :func:`parse_knob` (upstream's ``parseInt`` and clamp) and
  :func:`clamp_concurrency`;
* the loop's shape: :func:`is_parallel`, :func:`content_slots`, :func:`tts_concurrency`;
* the retry state machine: :func:`after_attempt` maps (policy, attempt, outcome)
  to :class:`Verdict` — done, fail, or wait so many µs — and :meth:`RetryPolicy.delay_us`
  computes the wait, jitter included;
* the final status: :func:`final_status`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from enum import IntEnum, StrEnum
from typing import Any

from .errors import UserError

__all__ = [
    "MAX_CONCURRENCY",
    "MODES",
    "Counts",
    "Mode",
    "Outcome",
    "RetryPolicy",
    "RunStatus",
    "ScenarioError",
    "Step",
    "UserError",
    "Verdict",
    "after_attempt",
    "check_number",
    "clamp_concurrency",
    "content_slots",
    "final_status",
    "is_parallel",
    "outcome_of",
    "parse_knob",
    "tts_concurrency",
]

MAX_CONCURRENCY = 10


class ScenarioError(UserError):
    """A scenario that cannot be used; the message is one line naming the field."""


class Step(IntEnum):
    CONTENT = 0
    ACTIONS = 1
    TTS = 2


class Mode(StrEnum):
    SERIAL = "serial"
    HYBRID = "hybrid"
    PIPELINED = "pipelined"


MODES = tuple(m.value for m in Mode)


class RunStatus(StrEnum):
    COMPLETED = "completed"
    PAUSED = "paused"
    # the foreground first scene failed: upstream shows an error page, the loop never starts
    FIRST_SCENE_FAILED = "first_scene_failed"


class Outcome(IntEnum):
    """What one attempt came to, as a retry policy sees it."""

    OK = 0
    RATE_LIMITED = 1  # 429
    SERVER_ERROR = 2  # >= 500
    NETWORK = 3  # reset connection, refused
    TIMEOUT = 4  # no answer within the request timeout
    BAD_BODY = 5  # a 200 whose body is not the payload (cut JSON, success:false)
    CLIENT_ERROR = 6  # other 4xx: never retried


def outcome_of(status: int) -> Outcome:
    """Classify an HTTP status; the sentinels 0 (timeout), -1 (network), -2 (bad body)."""
    if status == 200:
        return Outcome.OK
    if status == 0:
        return Outcome.TIMEOUT
    if status == -1:
        return Outcome.NETWORK
    if status == -2:
        return Outcome.BAD_BODY
    if status == 429:
        return Outcome.RATE_LIMITED
    if status >= 500:
        return Outcome.SERVER_ERROR
    if status in (408, 409, 425):  # retryable by status, like a 429
        return Outcome.RATE_LIMITED
    return Outcome.CLIENT_ERROR


def _rng(lo: float, hi: float, lo_open: bool) -> str:
    left = "(" if lo_open else "["
    right = "∞)" if hi == math.inf else f"{hi:g}]"
    return f"{left}{lo:g}, {right}"


def check_number(
    path: str,
    v: Any,
    *,
    lo: float = 0.0,
    hi: float = math.inf,
    integer: bool = False,
    lo_open: bool = False,
) -> Any:
    """``v`` if it is a finite number (an int with ``integer``) in range, else ScenarioError."""
    ok_type = isinstance(v, int) if integer else isinstance(v, int | float)
    if isinstance(v, bool) or not ok_type or not math.isfinite(v):
        kind = "an integer" if integer else "a number"
        raise ScenarioError(f"{path}: must be {kind} in {_rng(lo, hi, lo_open)}, got {v!r}")
    if v < lo or v > hi or (lo_open and v == lo):
        raise ScenarioError(f"{path}: must be in {_rng(lo, hi, lo_open)}, got {v!r}")
    return v


@dataclass
class Counts:
    """A call's or a run's request counts, the same in both worlds."""

    requests: int = 0
    http_429: int = 0
    http_5xx: int = 0
    retries: int = 0
    timeouts: int = 0

    def count(self, status: int) -> None:
        """Count a failed attempt's answer: 0 is a timeout (no answer), anything else an
        answered request, of which 429s and 5xx are also counted apart (both worlds)."""
        if status == 0:
            self.timeouts += 1
            return
        self.requests += 1
        if status == 429:
            self.http_429 += 1
        elif status >= 500:
            self.http_5xx += 1

    def add(self, other: Counts | None) -> None:
        """Add another's counts; ``None`` is a request given up (a timeout)."""
        if other is None:
            self.timeouts += 1
            return
        self.requests += other.requests
        self.http_429 += other.http_429
        self.http_5xx += other.http_5xx
        self.retries += other.retries
        self.timeouts += other.timeouts


@dataclass(frozen=True)
class RetryPolicy:
    """Retry of one step call.

    Delay before retry ``n`` (0-based) is ``exp = initial_delay_s * backoff_factor**n``
    capped at ``max_delay_s`` (0: no cap), plus a jitter ``floor(exp_ms * u * jitter)``
    ms (``u`` in [0, 1), a keyed draw), the cap applied again after the jitter — as
    upstream's ``withGenerationRetry`` does. With ``honour_retry_after`` a
    ``Retry-After`` is used instead when ``0 <= value < retry_after_cap_s`` or
    shorter than the exponential delay (the AI SDK's rule).
    """

    max_retries: int = 2
    initial_delay_s: float = 2.0
    backoff_factor: float = 2.0
    honour_retry_after: bool = True
    retry_after_cap_s: float = 60.0
    max_delay_s: float = 0.0
    jitter: float = 0.0

    def __post_init__(self) -> None:
        check_number("max_retries", self.max_retries, hi=20, integer=True)
        check_number("initial_delay_s", self.initial_delay_s, hi=3600.0)
        check_number("backoff_factor", self.backoff_factor, lo=1.0, hi=10.0)
        if not isinstance(self.honour_retry_after, bool):
            raise ScenarioError(
                f"honour_retry_after: must be true or false, got {self.honour_retry_after!r}"
            )
        check_number("retry_after_cap_s", self.retry_after_cap_s, hi=3600.0)
        check_number("max_delay_s", self.max_delay_s, hi=3600.0)
        check_number("jitter", self.jitter, hi=1.0)

    def delay_us(self, retry_index: int, retry_after_us: int | None, jitter_u: float = 0.0) -> int:
        """Microseconds to wait before retry number ``retry_index`` (0-based)."""
        exp_ms = self.initial_delay_s * self.backoff_factor**retry_index * 1000.0
        cap_ms = self.max_delay_s * 1000.0 if self.max_delay_s > 0 else math.inf
        exp_ms = min(cap_ms, exp_ms)
        exp_us = round(exp_ms * 1000)
        if (
            self.honour_retry_after
            and retry_after_us is not None
            and retry_after_us >= 0
            and (retry_after_us < self.retry_after_cap_s * 1e6 or retry_after_us < exp_us)
        ):
            return retry_after_us
        if self.jitter:
            u = min(max(jitter_u, 0.0), 1.0)
            exp_ms = min(cap_ms, exp_ms + math.floor(exp_ms * u * self.jitter))
            return round(exp_ms * 1000)
        return exp_us

    def retries(self, outcome: Outcome) -> bool:
        """Whether an attempt with this outcome is retried (budget permitting)."""
        return outcome is not Outcome.OK and outcome is not Outcome.CLIENT_ERROR


@dataclass(frozen=True)
class Verdict:
    """What a call does after an attempt: ``done``, ``fail``, or wait ``wait_us`` and retry."""

    done: bool = False
    fail: bool = False
    wait_us: int = 0


DONE = Verdict(done=True)
FAIL = Verdict(fail=True)


def after_attempt(
    policy: RetryPolicy,
    attempt: int,
    outcome: Outcome,
    retry_after_us: int | None = None,
    jitter_u: float = 0.0,
) -> Verdict:
    """The retry state machine's step: attempt ``attempt`` (0-based) ended with ``outcome``."""
    if outcome is Outcome.OK:
        return DONE
    if not policy.retries(outcome) or attempt >= policy.max_retries:
        return FAIL
    ra = retry_after_us if outcome is Outcome.RATE_LIMITED else None
    return Verdict(wait_us=policy.delay_us(attempt, ra, jitter_u))


_PARSE_INT = re.compile(r"^[\s]*([+-]?\d+)")


def parse_knob(raw: object) -> int:
    """``PARALLEL_SCENE_CONCURRENCY`` as upstream's server reads it, then its client.

    The server: ``parseInt(value, 10)`` (leading digits: "3abc" → 3, "1e1" → 1,
    "inf" → NaN); NaN or <= 0 → 0; else at most 10. The client re-clamps with
    ``max(0, floor(value))``. A number (not a string) is read as JavaScript's
    ``parseInt(String(n))`` would: 3.7 → 3.
    """
    if raw is None or isinstance(raw, bool):
        return 0
    if isinstance(raw, int | float):
        if not math.isfinite(raw):
            return 0
        raw = str(int(raw)) if float(raw).is_integer() else repr(float(raw))
    m = _PARSE_INT.match(str(raw))
    if m is None:
        return 0
    v = int(m.group(1))
    return 0 if v <= 0 else min(v, MAX_CONCURRENCY)


def clamp_concurrency(value: object) -> int:
    """A concurrency as upstream reads the knob: :func:`parse_knob`."""
    return parse_knob(value)


def is_parallel(mode: str, c: int, pending: int) -> bool:
    """Upstream's predicate: a parallel path only when ``c > 1`` and more than one outline
    is pending (and the mode is not the serial loop)."""
    return mode != Mode.SERIAL and c > 1 and pending > 1


def content_slots(c: int, pending: int) -> int:
    """Size of the content semaphore: ``min(c, pending)``."""
    return min(c, pending)


def tts_concurrency(mode: str, c: int, given: int | None, at_concurrency: bool = True) -> int:
    """Within-scene clips at once for the loop's scenes: ``given`` if set, else ``c`` in a
    parallel mode when the profile has #696's rule (``at_concurrency``), else 1."""
    if given is not None:
        return max(1, clamp_concurrency(given))
    if mode == Mode.SERIAL or not at_concurrency:
        return 1
    return max(1, clamp_concurrency(c))


def final_status(paused: bool, content_failed: bool, content_failure_pauses: bool) -> RunStatus:
    """The loop's final status: paused by a failure or a stop; since #660 also when any
    content failed in a parallel mode (``hadContentFailure``)."""
    if paused or (content_failed and content_failure_pauses):
        return RunStatus.PAUSED
    return RunStatus.COMPLETED
