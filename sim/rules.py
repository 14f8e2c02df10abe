"""The decision core both worlds call: pure functions, no I/O, no waiting.

The SimPy model (:mod:`sim.model`), the asyncio pipeline (:mod:`runner.world.pipeline`)
and the fake provider's routes (:mod:`runner.world.fake_provider`) only *wait*; every decision
about what happens next is made here:

* the knob: :func:`parse_knob` (upstream's ``parseInt`` and clamp) and
  :func:`clamp_concurrency`;
* the loop's shape: :func:`is_parallel`, :func:`content_slots`, :func:`tts_concurrency`;
* the retry state machine: :func:`after_attempt` maps (policy, attempt, outcome)
  to :class:`Verdict` — done, fail, or wait so many µs — and :meth:`RetryPolicy.delay_us`
  computes the wait, jitter included; :class:`CallMachine` is one step call's whole
  machine (attempt index, retry budget, the gate's 429 re-queues, what to tell the gate),
  which both worlds' call loops step after every request;
* the final status: :func:`final_status`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum, StrEnum
from typing import Any, NamedTuple

from .errors import ScenarioError, UserError  # ScenarioError re-exported here, where it was

__all__ = [
    "CLOCKS",
    "MAX_429_WAITS",
    "MAX_CONCURRENCY",
    "MODES",
    "POLICIES",
    "STAGGER_DISTS",
    "Act",
    "CallMachine",
    "ClockKind",
    "Counts",
    "GateNews",
    "Mode",
    "Outcome",
    "Policy",
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
MAX_429_WAITS = 100  # a gated call gives up after this many 429s
STAGGER_DISTS = ("constant", "exponential")  # tenants' start gaps (:mod:`sim.draws`)


class Step(IntEnum):
    CONTENT = 0
    ACTIONS = 1
    TTS = 2
    OUTLINE = 3  # a generation run's outline (sim.run_machine); after the browser-era steps
    AGENTS = 4  # a generation run's agent profiles
    MEDIA = 5  # a generation run's media item (image/video), its media lane


class Mode(StrEnum):
    SERIAL = "serial"
    HYBRID = "hybrid"
    PIPELINED = "pipelined"


MODES = tuple(m.value for m in Mode)


class Policy(StrEnum):
    """The adaptive limiter's policy (:mod:`sim.limiter`)."""

    OFF = "off"
    HALVE = "halve"
    AIMD = "aimd"
    GATE = "gate"


POLICIES = tuple(p.value for p in Policy)


class ClockKind(StrEnum):
    """The real pipeline's clock: ``wall`` (a socket, real time scaled) or ``virtual``
    (looptime, in process); also the ``world`` of a real run's :class:`~sim.schema.RunResult`."""

    WALL = "wall"
    VIRTUAL = "virtual"


CLOCKS = tuple(k.value for k in ClockKind)


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


_OUTCOME_OF = {
    200: Outcome.OK,
    0: Outcome.TIMEOUT,
    -1: Outcome.NETWORK,
    -2: Outcome.BAD_BODY,
    429: Outcome.RATE_LIMITED,
}


def outcome_of(status: int) -> Outcome:
    """Classify an HTTP status; the sentinels 0 (timeout), -1 (network), -2 (bad body)."""
    got = _OUTCOME_OF.get(status)
    if got is not None:  # 200, 429 and the sentinels
        return got
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
        if exp_ms > cap_ms:  # min(cap_ms, exp_ms)
            exp_ms = cap_ms
        if (
            retry_after_us is not None
            and self.honour_retry_after
            and retry_after_us >= 0
            and (
                retry_after_us < self.retry_after_cap_s * 1e6
                or retry_after_us < round(exp_ms * 1000)
            )
        ):
            return retry_after_us
        if self.jitter:  # (min and max as comparisons: the same values, NaN too)
            u = 0.0 if jitter_u < 0.0 else jitter_u if not jitter_u > 1.0 else 1.0
            jittered = exp_ms + math.floor(exp_ms * u * self.jitter)
            exp_ms = jittered if jittered < cap_ms else cap_ms
        return round(exp_ms * 1000)

    def retries(self, outcome: Outcome) -> bool:
        """Whether an attempt with this outcome is retried (budget permitting)."""
        return outcome is not _OK and outcome is not _CLIENT_ERROR


class Act(IntEnum):
    """What a call does after an attempt."""

    DONE = 0  # succeeded
    FAIL = 1  # given up
    WAIT = 2  # wait ``wait_us``, then try again (a retry of the budget)
    REQUEUE = 3  # a gated 429: back to the gate at once, the retry budget unspent


class GateNews(IntEnum):
    """What a call tells its adaptive gate after an attempt."""

    NONE = 0
    SUCCESS = 1  # :meth:`sim.limiter.GateCore.on_success`
    RATE_LIMITED = 2  # :meth:`sim.limiter.GateCore.on_429`


class Verdict(NamedTuple):
    """What a call does after an attempt (``kind``; ``wait_us`` for :attr:`Act.WAIT`) and
    what it tells its gate (``tell``, when it has one). A named tuple (immutable): one is
    made per failed attempt, and a frozen dataclass's ``__init__`` cost a microsecond."""

    kind: Act
    wait_us: int = 0
    tell: GateNews = GateNews.NONE

    @property
    def done(self) -> bool:
        return self.kind is Act.DONE

    @property
    def fail(self) -> bool:
        return self.kind is Act.FAIL

    @property
    def retry(self) -> bool:
        """Whether the call tries again (a retry, counted in :attr:`Counts.retries`)."""
        return self.kind is Act.WAIT or self.kind is Act.REQUEUE


# Module-level aliases of the members the retry machine reads on every failed attempt (a
# Python 3.11 enum member read from its class costs a few hundred ns; these are the members)
_OK, _RATE_LIMITED, _CLIENT_ERROR = Outcome.OK, Outcome.RATE_LIMITED, Outcome.CLIENT_ERROR
_A_FAIL, _A_WAIT, _A_REQUEUE = Act.FAIL, Act.WAIT, Act.REQUEUE
_NEWS_NONE, _NEWS_429 = GateNews.NONE, GateNews.RATE_LIMITED

DONE = Verdict(Act.DONE)
FAIL = Verdict(Act.FAIL)
_SUCCEEDED = Verdict(Act.DONE, tell=GateNews.SUCCESS)  # a 200 (shared: verdicts are frozen)


def after_attempt(
    policy: RetryPolicy,
    attempt: int,
    outcome: Outcome,
    retry_after_us: int | None = None,
    jitter_u: float = 0.0,
) -> Verdict:
    """The retry rule: attempt ``attempt`` (0-based) of the budget ended with ``outcome``."""
    return _after(policy, attempt, outcome, retry_after_us, jitter_u, _NEWS_NONE)


def _after(
    policy: RetryPolicy,
    attempt: int,
    outcome: Outcome,
    retry_after_us: int | None,
    jitter_u: float,
    tell: GateNews,
) -> Verdict:
    """:func:`after_attempt`'s verdict, telling the gate ``tell`` (one verdict made)."""
    if outcome is _OK:
        return DONE if tell is _NEWS_NONE else Verdict(Act.DONE, 0, tell)
    if not policy.retries(outcome) or attempt >= policy.max_retries:
        return FAIL if tell is _NEWS_NONE else Verdict(_A_FAIL, 0, tell)
    ra = retry_after_us if outcome is _RATE_LIMITED else None
    return Verdict(_A_WAIT, policy.delay_us(attempt, ra, jitter_u), tell)


Jitter = Callable[[int], float] | float


class CallMachine:
    """One step call's retry state machine, the same in both worlds (no I/O, no waiting).

    The world's loop makes a request, then calls :meth:`step` with what it saw, and does
    what the verdict says: return (``DONE``/``FAIL``), sleep ``wait_us`` then request
    again (``WAIT``), or go back to the gate at once (``REQUEUE``); with a gate it tells
    the gate ``verdict.tell``, and counts a retry when ``verdict.retry``.

    * not ``gated`` (no gate, or an adaptive ``halve``/``aimd`` gate): every failed
      request spends the client's budget (:func:`after_attempt`), a 429's Retry-After
      honoured; the gate hears of each success and of each 429 the provider gave;
    * ``gated`` (the ``gate`` policy, every attempt through the gate): a provider 429
      re-queues the attempt without spending the budget, up to :data:`MAX_429_WAITS`
      times; other failures spend it (Retry-After not used: the gate holds instead).

    The jitter of a wait is drawn for the attempt's index (attempts made before it:
    :attr:`attempts` before the step), only when a wait is computed; ``jitter`` is that
    draw as a function of the index, or a fixed ``u``.
    """

    __slots__ = ("attempts", "gated", "policy", "used", "waits")

    def __init__(self, policy: RetryPolicy, gated: bool = False) -> None:
        self.policy = policy
        self.gated = gated
        self.attempts = 0  # requests made
        self.used = 0  # retries of the budget spent
        self.waits = 0  # 429 re-queues (gated)

    def step(
        self,
        status: int,
        provider_status: int,
        retry_after_us: int | None = None,
        jitter: Jitter = 0.0,
    ) -> Verdict:
        """The verdict on a request that ended with client ``status`` (HTTP, or 0 timeout,
        -1 network, -2 bad body) after the provider's ``provider_status``."""
        index = self.attempts
        self.attempts += 1
        if status == 200:
            return _SUCCEEDED
        limited = provider_status == 429
        tell = _NEWS_429 if limited else _NEWS_NONE
        if self.gated and limited:
            self.waits += 1
            return Verdict(_A_FAIL if self.waits > MAX_429_WAITS else _A_REQUEUE, tell=tell)
        ra = None if self.gated else retry_after_us
        u = jitter(index) if callable(jitter) else jitter
        v = _after(self.policy, self.used, outcome_of(status), ra, u, tell)
        if v.kind is _A_WAIT:
            self.used += 1
        return v


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
