"""Daily quotas, windowed RPM and scripted faults of one key (issue 21).

Pure rules on integer-µs model time, used by :class:`sim.provider.KeyState` in both worlds.
Every one is off by default (a :class:`~sim.scenario.Quota` without them behaves as before).

Scripted faults, checked first, spend nothing, answered at once:

* ``outages``: ``[[t0_s, t1_s, status], ...]``: every call arriving in ``[t0, t1)`` gets
  ``status`` (reason ``outage``); a 429 carries the time until ``t1`` as its Retry-After;
* ``first_429``: the first N calls on the key get 429 (reason ``scripted``).

Limits, checked after the in-flight cap, the RPM bucket and the token buckets; a refusal
spends nothing and carries the wait until the limit would admit the call:

* ``rpm_window_s`` (1 or 10 as Azure OpenAI; 60 as Azure Speech F0): at most
  ``ceil(rpm · w / 60)`` requests per whole window of ``w`` model seconds (reason ``rpw``),
  instead of the RPM token bucket;
* ``rpd`` / ``tpd``: requests / estimated tokens per model day; the day starts at
  ``day_reset_hour`` (model time 0 is midnight, so hour 8 is midnight Pacific on a UTC
  day); reason ``rpd`` / ``tpd`` (a call whose estimate exceeds the whole ``tpd`` waits for
  no reset: no Retry-After).

``disconnect_frees`` and ``shape`` are read by the worlds (:meth:`sim.provider.Provider.release`,
``runner/world/error_shapes.py``), not here.
"""

from __future__ import annotations

import math
from typing import Any

from .rules import ScenarioError, check_number

__all__ = ["DAY_US", "SHAPES", "KeyLimits", "check_api_fields", "has_limits", "off_defaults"]

DAY_US = 86_400_000_000
US_PER_S = 1_000_000
SHAPES = ("", "openai", "azure", "anthropic", "gemini", "kimi", "minimax")
OUTAGE_STATUSES = (429, 500, 502, 503, 504, 529)
# the fields this module adds to Quota, with their defaults (left out of to_mapping when unset)
API_FIELDS: dict[str, Any] = {
    "shape": "",
    "disconnect_frees": False,
    "rpd": 0,
    "tpd": 0,
    "day_reset_hour": 0.0,
    "rpm_window_s": 0,
    "outages": (),
    "first_429": 0,
}


def off_defaults(d: dict[str, Any]) -> dict[str, Any]:
    """A quota mapping without this module's fields at their defaults (so a scenario that
    does not use them writes the same mapping as before)."""
    out = {}
    for k, v in d.items():
        if k in API_FIELDS and (v == API_FIELDS[k] or (k == "outages" and not v)):
            continue
        out[k] = [list(o) for o in v] if k == "outages" else v
    return out


def check_api_fields(q: Any) -> None:
    """Validate a Quota's issue-21 fields (one-line errors); outages become tuples."""
    if q.shape not in SHAPES:
        raise ScenarioError(f"shape: must be one of {', '.join(SHAPES[1:])}; got {q.shape!r}")
    if not isinstance(q.disconnect_frees, bool):
        raise ScenarioError(f"disconnect_frees: must be true or false, got {q.disconnect_frees!r}")
    for name in ("rpd", "tpd", "first_429"):
        check_number(name, getattr(q, name), hi=10**12, integer=True)
    check_number("day_reset_hour", q.day_reset_hour, hi=23.999)
    if q.rpm_window_s not in (0, 1, 10, 60):
        raise ScenarioError(f"rpm_window_s: must be 0, 1, 10 or 60, got {q.rpm_window_s!r}")
    if q.rpm_window_s and q.rpm <= 0:
        raise ScenarioError("rpm_window_s: needs rpm > 0")
    if not isinstance(q.outages, list | tuple):
        raise ScenarioError("outages: must be a list of [t0_s, t1_s, status]")
    out = []
    for o in q.outages:
        if not isinstance(o, list | tuple) or len(o) != 3:
            raise ScenarioError(f"outages: each must be [t0_s, t1_s, status], got {o!r}")
        t0, t1, status = o
        check_number("outages.t0_s", t0, hi=1e9)
        check_number("outages.t1_s", t1, hi=1e9)
        if t1 <= t0:
            raise ScenarioError(f"outages: t1_s must be > t0_s, got {o!r}")
        if status not in OUTAGE_STATUSES:
            allowed = ", ".join(map(str, OUTAGE_STATUSES))
            raise ScenarioError(f"outages.status: must be one of {allowed}, got {status!r}")
        out.append((float(t0), float(t1), int(status)))
    object.__setattr__(q, "outages", tuple(out))


def has_limits(q: Any) -> bool:
    """Whether a quota uses any rule of this module that :class:`KeyLimits` enforces."""
    return bool(q.rpd or q.tpd or q.rpm_window_s or q.outages or q.first_429)


class KeyLimits:
    """One key's daily counters, RPM window and scripted faults."""

    __slots__ = ("calls", "day", "day_requests", "day_tokens", "q", "reset_us", "win", "win_n")

    def __init__(self, q: Any) -> None:
        self.q = q
        self.calls = 0
        self.reset_us = round(q.day_reset_hour * 3600 * US_PER_S)
        self.day = -(10**9)
        self.day_requests = 0
        self.day_tokens = 0
        self.win = -1
        self.win_n = 0

    def scripted(self, now_us: int) -> tuple[int, str, int | None] | None:
        """(status, reason, µs until it ends or None) of a scripted fault for a call now."""
        self.calls += 1
        for t0, t1, status in self.q.outages:
            a, b = round(t0 * US_PER_S), round(t1 * US_PER_S)
            if a <= now_us < b:
                return status, "outage", b - now_us
        if self.calls <= self.q.first_429:
            return 429, "scripted", None
        return None

    def _roll(self, now_us: int) -> int:
        """The model day of ``now_us`` (counters reset when it changes); µs to its end."""
        day = int((now_us - self.reset_us) // DAY_US)
        if day != self.day:
            self.day, self.day_requests, self.day_tokens = day, 0, 0
        left: int = (day + 1) * DAY_US + self.reset_us - now_us
        return left

    def check(self, now_us: int, tokens: int) -> tuple[str, int] | None:
        """``None`` when the call fits, else (reason, µs until it would; -1: never)."""
        q = self.q
        if q.rpm_window_s:
            w_us = q.rpm_window_s * US_PER_S
            w = now_us // w_us
            if w != self.win:
                self.win, self.win_n = w, 0
            if self.win_n >= max(1, math.ceil(q.rpm * q.rpm_window_s / 60)):
                return "rpw", (w + 1) * w_us - now_us
        if q.rpd or q.tpd:
            left = self._roll(now_us)
            if q.rpd and self.day_requests >= q.rpd:
                return "rpd", left
            if q.tpd and self.day_tokens + tokens > q.tpd:
                return "tpd", (left if tokens <= q.tpd else -1)
        return None

    def spend(self, tokens: int) -> None:
        self.win_n += 1
        self.day_requests += 1
        self.day_tokens += tokens
