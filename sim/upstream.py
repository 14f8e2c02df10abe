"""Upstream profiles: which version of OpenMAIC's client rules a run follows.

OpenMAIC changes how it generates scenes (``../shared/reference/upstream-semantics.md``
lists each change). A :class:`ClientProfile` is one version's rules, as data: where
retries live and their budgets, whether the first scene is generated in the
foreground before the loop, the tie at the content → actions hand-off, the final
status rule, within-scene TTS at ``c``, where the knob is read and what shape a
provider's error takes when it reaches the client. Both worlds (the SimPy model and
the asyncio pipeline) and the fake provider read the same profile.

Profiles follow upstream main's history, oldest first; each is main right after the
change it is named for was merged (:data:`HISTORY`: commit and merge date), and includes
every rule of the ones before it unless that change replaced it:

* ``v0.2.1``: serial loop (no knob); LLM retries inside the routes (AI SDK: 2
  retries, 2 s × 2, Retry-After honoured below 60 s); the TTS route never retries;
  the first scene generated in the foreground, its clips one at a time;
* ``pr660``: pipelined content prefetch; the knob from ``/api/server-providers``;
  JavaScript's hand-off order (actions(i) reaches the provider before content(i + c));
  a run with a failed content ends ``paused``;
* ``pr788``: retries moved to the client, around every step and every clip: 5 retries
  (3 attempts in all for the foreground scene), 1 s × 2 capped at 16 s, plus a jitter of
  up to 20 % (floor(delay × U × 0.2)), the 16 s cap applied after the jitter; Retry-After
  ignored; the LLM routes pass the provider's status through (``ErrorShape.STATUS``);
* ``pr696`` (the default): a loop scene's clips at ``c`` when ``c > 1`` (merged after
  #788: main never had clips at ``c`` with retries inside the routes);
* ``pr1039``: the foreground first scene's clips at ``c`` too — the last state of the
  browser loop (main of 2026-08-21 has the same rules).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from .rules import RetryPolicy, ScenarioError, Step, check_number

__all__ = [
    "DEFAULT_PROFILE",
    "HISTORY",
    "PROFILES",
    "RUNS",
    "RUNS_PROFILE",
    "ClientProfile",
    "ErrorShape",
    "Handoff",
    "RetryLayer",
    "client_from_mapping",
    "profile",
    "profile_names",
    "route_status",
]


class RetryLayer(StrEnum):
    """Where a step's retries live."""

    ROUTE = "route"  # inside the Next.js route (the AI SDK's own retries), before #788
    CLIENT = "client"  # around the browser's fetch (withGenerationRetry), since #788


class Handoff(StrEnum):
    """Who reaches the provider first when content(i) ends and the loop awaits it."""

    ACTIONS_FIRST = "actions-first"  # JavaScript: the loop's await resumes before `finally`
    CONTENT_FIRST = "content-first"  # the slot is freed first (Python asyncio's natural order)


class ErrorShape(StrEnum):
    """How a provider's 429 or 5xx reaches the client."""

    DIRECT = "direct"  # the client sees the provider's answer (an abstraction of route + provider)
    ROUTE = "route"  # as upstream's route answers it: 500 GENERATION_FAILED after its retries
    # since #788 (lib/server/llm-error-response.ts): the LLM routes pass the provider's status
    # through (429 RATE_LIMITED, another status UPSTREAM_ERROR, none 500), no Retry-After;
    # the TTS route answers a 429 as 429 (#644) and anything else as 500
    STATUS = "status"


_ENUMS: dict[str, type[StrEnum]] = {
    "retry_in": RetryLayer,
    "handoff": Handoff,
    "provider_errors": ErrorShape,
}
# The Vercel AI SDK's generateText budget, inside the LLM routes before #788.
AI_SDK_RETRY = RetryPolicy(max_retries=2, initial_delay_s=2.0, backoff_factor=2.0)
NO_RETRY = RetryPolicy(max_retries=0)
# withGenerationRetry (#788): 5 retries, 1 s × 2, cap 16 s, jitter up to 20 %, no Retry-After.
CLIENT_RETRY = RetryPolicy(
    max_retries=5,
    initial_delay_s=1.0,
    backoff_factor=2.0,
    honour_retry_after=False,
    max_delay_s=16.0,
    jitter=0.2,
)
FOREGROUND_RETRY = dataclasses.replace(CLIENT_RETRY, max_retries=2)


@dataclass(frozen=True)
class ClientProfile:
    """One version of the client's rules (see the module docstring).

    ``retry_*`` are the loop's budgets, ``foreground_retry_*`` the foreground first
    scene's; they apply in the layer ``retry_in``. ``jitter_u`` fixes the jitter
    draw to one value in [0, 1) (``None``: drawn from the keyed streams).
    ``provider_errors`` is the error shape (:func:`route_status`). ``knob_endpoint``
    is where the client reads the knob (``None``: the version has no knob, the loop is
    serial). ``foreground_tts_at_concurrency``: the foreground first scene's clips run
    at the loop's within-scene concurrency too (#1039), not one at a time.
    """

    upstream: str = "pr696"
    retry_in: RetryLayer = RetryLayer.CLIENT
    retry_llm: RetryPolicy = CLIENT_RETRY
    retry_tts: RetryPolicy = CLIENT_RETRY
    foreground_retry_llm: RetryPolicy = FOREGROUND_RETRY
    foreground_retry_tts: RetryPolicy = FOREGROUND_RETRY
    foreground_first_scene: bool = True
    handoff: Handoff = Handoff.ACTIONS_FIRST
    content_failure_pauses: bool = True
    tts_at_concurrency: bool = True
    provider_errors: ErrorShape = ErrorShape.STATUS
    knob_endpoint: str | None = "/api/server-providers"
    jitter_u: float | None = None
    foreground_tts_at_concurrency: bool = False

    def __post_init__(self) -> None:
        for name, cls in _ENUMS.items():  # accept the plain strings a TOML table gives
            v = getattr(self, name)
            if not isinstance(v, cls):
                object.__setattr__(self, name, _enum(name, v))
        if self.jitter_u is not None:
            check_number("client.jitter_u", self.jitter_u, hi=1.0)
            if self.jitter_u >= 1.0:
                raise ScenarioError(f"client.jitter_u: must be in [0, 1), got {self.jitter_u!r}")
        bools = ("foreground_first_scene", "content_failure_pauses", "tts_at_concurrency")
        for name in (*bools, "foreground_tts_at_concurrency"):
            if not isinstance(getattr(self, name), bool):
                raise ScenarioError(
                    f"client.{name}: must be true or false, got {getattr(self, name)!r}"
                )

    def policy(self, step: int, foreground: bool) -> RetryPolicy:
        """The retry budget of a step (0 content, 1 actions, 2 tts) in its layer."""
        if foreground:
            return self.foreground_retry_tts if step == Step.TTS else self.foreground_retry_llm
        return self.retry_tts if step == Step.TTS else self.retry_llm

    def client_policy(self, step: int, foreground: bool) -> RetryPolicy:
        """What the client retries: its own budget, or (``direct`` shape) the route's."""
        if self.retry_in is RetryLayer.CLIENT or self.provider_errors is ErrorShape.DIRECT:
            return self.policy(step, foreground)
        return NO_RETRY

    def route_policy(self, step: int, foreground: bool) -> RetryPolicy:
        """What the route retries before it answers (``route`` and ``status`` shapes)."""
        if self.retry_in is RetryLayer.ROUTE and self.provider_errors is not ErrorShape.DIRECT:
            return self.policy(step, foreground)
        return NO_RETRY

    def to_mapping(self) -> dict[str, Any]:
        """The ``[client]`` table that :func:`client_from_mapping` reads back exactly."""
        base = _ALL[self.upstream]
        out: dict[str, Any] = {"upstream": self.upstream}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.name == "upstream" or v == getattr(base, f.name):
                continue
            if isinstance(v, RetryPolicy):
                key = next(k for k, name in _RETRY_FIELDS.items() if name == f.name)
                out.setdefault("retry", {})[key] = dataclasses.asdict(v)
            elif v is not None:
                out[f.name] = str(v) if isinstance(v, StrEnum) else v
        return out


_V021 = ClientProfile(
    upstream="v0.2.1",
    retry_in=RetryLayer.ROUTE,
    retry_llm=AI_SDK_RETRY,
    retry_tts=NO_RETRY,
    foreground_retry_llm=AI_SDK_RETRY,
    foreground_retry_tts=NO_RETRY,
    content_failure_pauses=False,
    tts_at_concurrency=False,
    knob_endpoint=None,
    provider_errors=ErrorShape.ROUTE,
)
_PR660 = dataclasses.replace(
    _V021, upstream="pr660", content_failure_pauses=True, knob_endpoint="/api/server-providers"
)
_PR696 = ClientProfile()
_PR788 = dataclasses.replace(_PR696, upstream="pr788", tts_at_concurrency=False)
_PR1039 = dataclasses.replace(_PR696, upstream="pr1039", foreground_tts_at_concurrency=True)

PROFILES: Mapping[str, ClientProfile] = {
    p.upstream: p for p in (_V021, _PR660, _PR788, _PR696, _PR1039)
}
# name -> (the change, its commit on upstream main, merge date), from upstream's git history
HISTORY: Mapping[str, tuple[str, str, str]] = {
    "v0.2.1": ("release v0.2.1", "a4cbed4b", "2026-04-26"),
    "pr660": ("#660 pipelined content prefetch", "3ccd5da6", "2026-06-08"),
    "pr788": ("#788 client retries, status pass-through", "243e9f3a", "2026-06-27"),
    "pr696": ("#696 a loop scene's clips at c (after #788)", "57eb8486", "2026-07-12"),
    "pr1039": ("#1039 the first scene's clips at c", "ceb05adb", "2026-08-06"),
}
DEFAULT_PROFILE = "pr696"


def route_status(shape: ErrorShape, step: int, provider_status: int) -> int:
    """The status the client gets for a model call that failed with ``provider_status`` (an
    HTTP status, or 0 for a failure without one) in step ``step`` (2: TTS)."""
    if shape is ErrorShape.DIRECT:
        return provider_status
    if shape is ErrorShape.ROUTE:
        return 500
    if step == 2:
        return 429 if provider_status == 429 else 500
    return provider_status if 400 <= provider_status <= 599 else 500


# Server-side generation runs (after 1.1.2; ``docs/runs.md``, :mod:`sim.runs`): upstream's
# engine.ts loop on the server. The same withGenerationRetry budgets (run/retry.ts: 5 retries,
# scene 0 2), Retry-After ignored; the next content reaches the provider before actions(i)
# (content-first, runs-spec §3); no knob endpoint (the server reads the knob). Kept out of
# PROFILES: the browser-era commands iterate over those; ``profile("runs")`` finds it.
RUNS_PROFILE = "runs"
# Results made before this date (``metadata.json`` ``created``) name as ``pr788`` the rules now
# called ``pr696`` (#788 with #696's clips at c): the profiles were renamed that day to follow
# upstream main's history (docs/upstream.md).
PR788_RENAMED_ON = "2026-12-05"
# (the rules the old default, now pr696, had: clips at c, the route error shape)
RUNS = dataclasses.replace(
    _PR696,
    upstream=RUNS_PROFILE,
    handoff=Handoff.CONTENT_FIRST,
    knob_endpoint=None,
    provider_errors=ErrorShape.ROUTE,
)
_ALL: Mapping[str, ClientProfile] = {**PROFILES, RUNS_PROFILE: RUNS}

# What the commands (``sim``, ``run``, ``sweep``) follow when ``--upstream`` is not given:
# upstream as it runs today, server-side generation runs. A browser-era profile is asked for
# with ``--upstream`` (or, for ``sim`` and ``run``, by asking for the browser loop's shape with
# ``--mode``); then a scenario's ``[client] upstream`` (``DEFAULT_PROFILE`` in the built-ins)
# applies as before. The library's browser-loop functions keep ``DEFAULT_PROFILE``.
COMMAND_PROFILE = RUNS_PROFILE


def profile_names() -> list[str]:
    """Profile names, oldest first."""
    return list(PROFILES)


def profile(name: str) -> ClientProfile:
    """The named profile; a :class:`ScenarioError` naming the allowed ones otherwise."""
    try:
        return _ALL[name]
    except (KeyError, TypeError):
        raise ScenarioError(
            f"client.upstream: must be one of {', '.join(_ALL)}; got {name!r}"
        ) from None


_RETRY_FIELDS = {
    "llm": "retry_llm",
    "tts": "retry_tts",
    "foreground_llm": "foreground_retry_llm",
    "foreground_tts": "foreground_retry_tts",
}
_RETRY_KEYS = tuple(_RETRY_FIELDS)


def _enum(name: str, v: Any) -> StrEnum:
    cls = _ENUMS[name]
    try:
        return cls(v)
    except ValueError:
        allowed = ", ".join(m.value for m in cls)
        raise ScenarioError(f"client.{name}: must be one of {allowed}; got {v!r}") from None


def _policy_over(base: RetryPolicy, path: str, m: Any) -> RetryPolicy:
    if not isinstance(m, Mapping):
        raise ScenarioError(f"{path}: must be a table, got {m!r}")
    names = {f.name for f in dataclasses.fields(RetryPolicy)}
    for k in m:
        if k not in names:
            raise ScenarioError(f"{path}.{k}: unknown field; allowed: {', '.join(sorted(names))}")
    try:
        return dataclasses.replace(base, **m)
    except ScenarioError as e:
        raise ScenarioError(f"{path}.{e}") from None


def client_from_mapping(
    m: Mapping[str, Any], retry: Mapping[str, Any] | None = None, *, upstream: str | None = None
) -> ClientProfile:
    """A profile from a scenario's ``[client]`` table (and its legacy ``[retry]`` table).

    ``upstream`` (e.g. a ``--upstream`` flag) overrides the table's profile name;
    every other field overrides the named profile's value. ``[retry.llm]`` /
    ``[retry.tts]`` (and ``[client.retry.*]``) change only the fields they give.
    """
    if not isinstance(m, Mapping):
        raise ScenarioError(f"client: must be a table, got {m!r}")
    allowed = {f.name for f in dataclasses.fields(ClientProfile) if "retry_" not in f.name}
    allowed |= {"retry", "retry_in"}
    for k in m:
        if k not in allowed:
            raise ScenarioError(f"client.{k}: unknown field; allowed: {', '.join(sorted(allowed))}")
    base = profile(upstream if upstream is not None else m.get("upstream", DEFAULT_PROFILE))
    changes: dict[str, Any] = {}
    for k, v in m.items():
        if k in ("upstream", "retry"):
            continue
        changes[k] = _enum(k, v) if k in _ENUMS else v
    if "knob_endpoint" in changes and changes["knob_endpoint"] in ("", "none"):
        changes["knob_endpoint"] = None
    tables: dict[str, Any] = {**(retry or {}), **_table("client.retry", m.get("retry", {}))}
    for key, tab in tables.items():
        if key not in _RETRY_KEYS:
            raise ScenarioError(f"retry.{key}: unknown table; allowed: {', '.join(_RETRY_KEYS)}")
        field = _RETRY_FIELDS[key]
        changes[field] = _policy_over(getattr(base, field), f"retry.{key}", tab)
    try:
        return dataclasses.replace(base, **changes)
    except TypeError as e:
        raise ScenarioError(f"client: {e}") from None


def _table(path: str, v: Any) -> Mapping[str, Any]:
    if not isinstance(v, Mapping):
        raise ScenarioError(f"{path}: must be a table, got {v!r}")
    return v
