"""Tokens per call, token buckets and per-second request windows (issue 12).

Tokens per call
    A scenario's ``[tokens.<step>]`` table (:class:`StepTokens`) says how many input
    and output tokens an LLM call uses (characters for a TTS call), as distributions
    rounded to whole tokens and drawn with the keyed draws (:mod:`sim.draws`): the input
    of a call is one draw per call (every attempt sends the same prompt), the output one
    per attempt. With ``output_tps`` (``chars_per_s`` for TTS) the call's latency is
    derived: ``latency.<step>`` is then the time to first token and the call takes
    ``ttft + output / output_tps`` (whole µs, :func:`decode_us`).

Token buckets (:class:`TokenBuckets`)
    Per key, up to three continuously refilled buckets, each holding one minute's
    budget: ``tpm`` (input + output, OpenAI's TPM), ``itpm`` and ``otpm`` (Anthropic's
    separate input and output budgets). Admission checks the call's *estimated* tokens
    as providers do: the input it sends and the request's ``max_tokens`` for the output
    (the drawn output when ``max_tokens`` is 0). A call the buckets cannot cover is
    answered 429 at once and spends nothing; an admitted one spends its estimate. With
    ``token_refund`` (Anthropic's rule) the unused part of the output estimate flows back
    when the call ends. Arithmetic is exact: a level is kept in units of 1/60,000,000
    token, refilled by ``tpm`` units per µs.

Per-second windows (:class:`SecondWindow`)
    ``rpm_per_second``: at most ``ceil(rpm/60)`` requests per whole model second, as
    DashScope enforces its RPM per second (burst protection).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import NDArray

from .dists import Dist, dist_from_mapping
from .rules import ScenarioError, check_number

__all__ = [
    "UNITS_PER_TOKEN",
    "RateInfo",
    "SecondWindow",
    "StepTokens",
    "TokenBuckets",
    "decode_us",
    "format_reset",
    "step_tokens_from_mapping",
    "tokens_to_int",
]

UNITS_PER_TOKEN = 60_000_000  # a bucket's level unit: 1/60e6 token (µs per minute)
US_PER_S = 1_000_000


@dataclass(frozen=True)
class StepTokens:
    """Tokens of one step's calls (``output`` is characters for TTS).

    ``input``/``output``: distributions of counts (rounded, >= 0); ``None`` is 0.
    ``max_tokens``: the request's output cap, which providers count on admission (0: the
    drawn output). ``output_tps`` > 0: latency = ``latency.<step>`` (time to first
    token) + output / ``output_tps``; 0: ``latency.<step>`` is the whole call, as before.
    """

    input: Dist | None = None
    output: Dist | None = None
    max_tokens: int = 0
    output_tps: float = 0.0

    def __post_init__(self) -> None:
        check_number("max_tokens", self.max_tokens, hi=10_000_000, integer=True)
        check_number("output_tps", self.output_tps, hi=1e9)
        if self.output_tps > 0 and self.output is None:
            raise ScenarioError("output_tps: needs an output distribution to derive latency")

    @property
    def derived(self) -> bool:
        return self.output_tps > 0

    def estimate(self, tokens_in: int, tokens_out: int) -> tuple[int, int]:
        """What a provider counts on admission: (input, ``max_tokens`` or the output)."""
        return tokens_in, (self.max_tokens if self.max_tokens > 0 else tokens_out)

    def to_mapping(self, tts: bool = False) -> dict[str, Any]:
        out_key, tps_key = ("chars", "chars_per_s") if tts else ("output", "output_tps")
        m: dict[str, Any] = {}
        if self.input is not None:
            m["input"] = self.input.to_mapping()
        if self.output is not None:
            m[out_key] = self.output.to_mapping()
        if self.max_tokens:
            m["max_tokens"] = self.max_tokens
        if self.output_tps:
            m[tps_key] = self.output_tps
        return m


def step_tokens_from_mapping(m: Mapping[str, Any], tts: bool = False) -> StepTokens:
    """A ``[tokens.<step>]`` table; TTS names its fields ``chars`` and ``chars_per_s``."""
    out_key, tps_key = ("chars", "chars_per_s") if tts else ("output", "output_tps")
    allowed = ({"input", "max_tokens"} if not tts else set()) | {out_key, tps_key}
    for k in m:
        if k not in allowed:
            raise ScenarioError(f"{k}: unknown field; allowed: {', '.join(sorted(allowed))}")

    def dist(name: str) -> Dist | None:
        if name not in m:
            return None
        try:
            return dist_from_mapping(m[name])
        except ValueError as e:
            raise ScenarioError(f"{name}.{e}") from None

    tps = m.get(tps_key, 0.0)
    try:
        return StepTokens(dist("input"), dist(out_key), m.get("max_tokens", 0), tps)
    except ScenarioError as e:
        msg = str(e)
        if tts and msg.startswith("output_tps"):
            msg = tps_key + msg[len("output_tps") :]
        raise ScenarioError(msg) from None


def tokens_to_int(values: NDArray[np.float64]) -> NDArray[np.int64]:
    """Counts from a distribution's quantiles: rounded to whole tokens, at least 0."""
    out: NDArray[np.int64] = np.maximum(np.rint(values), 0).astype(np.int64)
    return out


def decode_us(tokens_out: NDArray[np.int64], output_tps: float) -> NDArray[np.int64]:
    """Whole µs to produce ``tokens_out`` at ``output_tps`` tokens per second."""
    out: NDArray[np.int64] = np.rint(tokens_out * (US_PER_S / output_tps)).astype(np.int64)
    return out


def format_reset(us: int) -> str:
    """A duration the way OpenAI's ``x-ratelimit-reset-*`` headers write it (``17ms``,
    ``1.5s``, ``6m0s``)."""
    us = max(0, us)
    if us < US_PER_S:
        return f"{math.ceil(us / 1000)}ms"
    minutes, rest = divmod(us, 60 * US_PER_S)
    secs = f"{rest / US_PER_S:.3f}".rstrip("0").rstrip(".")
    return f"{minutes}m{secs}s" if minutes else f"{secs}s"


class RateInfo(NamedTuple):
    """The values behind OpenAI-style ``x-ratelimit-*`` headers at one decision (``-1``:
    no such limit). Reset times are µs until the bucket is full again."""

    limit_requests: int
    remaining_requests: int
    reset_requests_us: int
    limit_tokens: int
    remaining_tokens: int
    reset_tokens_us: int

    def headers(self) -> dict[str, str]:
        h: dict[str, str] = {}
        if self.limit_requests >= 0:
            h["x-ratelimit-limit-requests"] = str(self.limit_requests)
            h["x-ratelimit-remaining-requests"] = str(self.remaining_requests)
            h["x-ratelimit-reset-requests"] = format_reset(self.reset_requests_us)
        if self.limit_tokens >= 0:
            h["x-ratelimit-limit-tokens"] = str(self.limit_tokens)
            h["x-ratelimit-remaining-tokens"] = str(self.remaining_tokens)
            h["x-ratelimit-reset-tokens"] = format_reset(self.reset_tokens_us)
        return h


class _Bucket:
    """One continuously refilled bucket of ``per_min`` tokens (exact integer units)."""

    __slots__ = ("cap", "last", "level", "per_min")

    def __init__(self, per_min: int) -> None:
        self.per_min = per_min
        self.cap = per_min * UNITS_PER_TOKEN
        self.level = self.cap
        self.last = 0

    def refill(self, now_us: int) -> None:
        if now_us > self.last:
            self.level = min(self.cap, self.level + (now_us - self.last) * self.per_min)
            self.last = now_us

    def wait_us(self, need: int) -> int:
        """µs until the bucket holds ``need`` tokens (it is refilled to now)."""
        short = need * UNITS_PER_TOKEN - self.level
        return 0 if short <= 0 else -(-short // self.per_min)

    def remaining(self) -> int:
        return self.level // UNITS_PER_TOKEN

    def full_in_us(self) -> int:
        return -(-(self.cap - self.level) // self.per_min)


class TokenBuckets:
    """A key's ``tpm``, ``itpm`` and ``otpm`` buckets (0: no such bucket)."""

    def __init__(self, tpm: int, itpm: int, otpm: int, refund: bool) -> None:
        self.buckets: dict[str, _Bucket] = {
            name: _Bucket(v) for name, v in (("tpm", tpm), ("itpm", itpm), ("otpm", otpm)) if v
        }
        self.refund = refund
        self._refunds: list[tuple[int, int]] = []  # (at µs, output tokens to give back)

    def _advance(self, now_us: int) -> None:
        """Refill to ``now_us``, applying the refunds due by then in time order (a call
        ending at ``t`` has given its tokens back for one arriving at ``t``)."""
        refunds = self._refunds
        while refunds and refunds[0][0] <= now_us:
            at, n = heapq.heappop(refunds)
            for name in ("tpm", "otpm"):
                b = self.buckets.get(name)
                if b is not None:
                    b.refill(at)
                    b.level = min(b.cap, b.level + n * UNITS_PER_TOKEN)
        for b in self.buckets.values():
            b.refill(now_us)

    def _needs(self, tin: int, tout: int) -> dict[str, int]:
        return {"tpm": tin + tout, "itpm": tin, "otpm": tout}

    def check(self, now_us: int, tin: int, tout: int) -> tuple[str, int] | None:
        """``None`` when every bucket covers the estimate, else (the first bucket that
        cannot, in the order tpm, itpm, otpm; µs until it could, -1 if never)."""
        self._advance(now_us)
        needs = self._needs(tin, tout)
        for name, b in self.buckets.items():
            if needs[name] * UNITS_PER_TOKEN > b.level:
                return name, (-1 if needs[name] > b.per_min else b.wait_us(needs[name]))
        return None

    def spend(self, tin: int, tout: int) -> None:
        needs = self._needs(tin, tout)
        for name, b in self.buckets.items():
            b.level -= needs[name] * UNITS_PER_TOKEN

    def refund_at(self, at_us: int, unused_out: int) -> None:
        """Give back ``unused_out`` output tokens at ``at_us`` (with ``token_refund``)."""
        if self.refund and unused_out > 0:
            heapq.heappush(self._refunds, (at_us, unused_out))

    def info(self, which: str | None) -> tuple[int, int, int]:
        """(limit, remaining, µs to full) of bucket ``which`` (else the first), or -1s."""
        b = self.buckets.get(which or "") or next(iter(self.buckets.values()), None)
        if b is None:
            return -1, -1, -1
        return b.per_min, b.remaining(), b.full_in_us()


class SecondWindow:
    """At most ``ceil(rpm/60)`` requests per whole model second."""

    __slots__ = ("count", "limit", "window")

    def __init__(self, rpm: float) -> None:
        self.limit = max(1, math.ceil(rpm / 60))
        self.window = -1
        self.count = 0

    def check(self, now_us: int) -> int | None:
        """``None`` when a request fits this second, else µs until the next second."""
        w = now_us // US_PER_S
        if w != self.window:
            self.window, self.count = w, 0
        if self.count >= self.limit:
            return (w + 1) * US_PER_S - now_us
        return None

    def spend(self) -> None:
        self.count += 1


def check_limits(q: Any) -> None:
    """Validate a :class:`~sim.scenario.Quota`'s issue-12 fields (one-line errors)."""
    for name in ("tpm", "itpm", "otpm", "parallel", "max_queue"):
        check_number(name, getattr(q, name), hi=10**12, integer=True)
    for name in ("token_refund", "rpm_per_second"):
        if not isinstance(getattr(q, name), bool):
            raise ScenarioError(f"{name}: must be true or false, got {getattr(q, name)!r}")
    if q.rpm_per_second and q.rpm <= 0:
        raise ScenarioError("rpm_per_second: needs rpm > 0")
    check_number("max_hold_s", q.max_hold_s, hi=86400.0)
    if q.queue_status not in (429, 500, 502, 503, 529):
        raise ScenarioError(
            f"queue_status: must be one of 429, 500, 502, 503, 529, got {q.queue_status!r}"
        )
    tp = q.throughput
    if not isinstance(tp, list | tuple):
        raise ScenarioError(
            f"throughput: must be a list of tokens/s at 1, 2, … in service; got {tp!r}"
        )
    for v in tp:
        check_number("throughput", v, hi=1e9, lo_open=True)
    object.__setattr__(q, "throughput", tuple(float(v) for v in tp))
