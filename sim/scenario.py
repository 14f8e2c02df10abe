"""The scenario spec shared by the model (sim/) and the real harness (runner/).

A scenario is an immutable, validated description of one workload: the
classroom, per-step latency distributions, per-key provider quotas and the
client's retry policies. Scenarios are TOML files; the built-in ones live in
``sim/scenarios``. Errors are :class:`ScenarioError` with one line naming the
field and the allowed values.
"""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .catalog import builtin_names
from .dists import Dist, IntDist, dist_from_mapping, field_name, int_dist_from_mapping
from .faults import check_api_fields, has_limits, off_defaults
from .qoe import Playback, playback_from_mapping
from .rules import (
    MAX_CONCURRENCY,
    MODES,
    RetryPolicy,
    ScenarioError,
    Step,
    check_number,
)
from .tokens import StepTokens, check_limits, step_tokens_from_mapping
from .upstream import ClientProfile, client_from_mapping

if TYPE_CHECKING:
    from .runs_config import RunsTable

__all__ = [
    "MAX_CONCURRENCY",
    "MODES",
    "SCENE_TYPES",
    "STEPS",
    "ClientProfile",
    "Quota",
    "RetryPolicy",
    "Scenario",
    "ScenarioError",
    "builtin_names",
    "load_scenario",
    "scenario_from_mapping",
]

STEPS = tuple(s.name.lower() for s in Step if s <= Step.TTS)  # a scene's steps
SCENE_TYPES = ("slide", "quiz", "interactive", "pbl")
_num = check_number


# the statuses a ``p_5xx`` fault may answer: server errors, and provider refusals (4xx)
FAULT_STATUSES = (500, 502, 503, 529, 400, 401, 403, 404, 422)


@dataclass(frozen=True)
class Quota:
    """What the fake provider enforces on one API key.

    ``max_inflight`` 0 means unlimited; ``rpm`` 0 means no token bucket. The
    bucket holds ``rpm_burst`` tokens (0: ``rpm``) and refills ``rpm/60`` per
    second. ``p_429``/``p_5xx`` are per-attempt probabilities of a random 429
    (answered at once) or 5xx (answered after the drawn latency); ``status_5xx`` is that
    fault's status: a 5xx, or a 4xx (:data:`FAULT_STATUSES`: a provider refusing the call,
    e.g. a bad key, which the client rules never retry).
    ``retry_after_s`` is carried by every 429 (``None``: no header).
    Injected faults, per admitted attempt that is not a 5xx: ``p_reset`` (the
    connection is reset mid-response after the latency), ``p_truncate`` (a 200
    whose JSON body is cut short), ``p_stall`` (the answer takes ``stall_s``
    instead of the latency: past the client's timeout, the client gives up).

    Issue 12 (:mod:`sim.tokens`, :mod:`sim.sharing`): token buckets ``tpm`` (input +
    output), ``itpm``, ``otpm`` (tokens per minute, continuous refill, checked against a
    call's estimated tokens; ``token_refund`` gives the unused output estimate back when
    the call ends); ``rpm_per_second`` also enforces ``ceil(rpm/60)`` requests per
    second. A 429 from these carries the time until the limit would admit the call as
    its Retry-After (``retry_after_s`` ``None``: no header). A shared capacity:
    ``throughput`` (aggregate tokens/s at 1, 2, … in service: processor sharing),
    ``parallel`` (in service at once; the rest queue), ``max_queue``, ``max_hold_s`` and
    ``queue_status`` (the answer to a request the queue cannot take or held too long).
    """

    max_inflight: int = 0
    rpm: float = 0.0
    rpm_burst: int = 0
    p_429: float = 0.0
    p_5xx: float = 0.0
    status_5xx: int = 500
    retry_after_s: float | None = 1.0
    p_reset: float = 0.0
    p_stall: float = 0.0
    p_truncate: float = 0.0
    stall_s: float = 900.0
    tpm: int = 0
    itpm: int = 0
    otpm: int = 0
    token_refund: bool = False
    rpm_per_second: bool = False
    throughput: tuple[float, ...] = ()
    parallel: int = 0
    max_queue: int = 0
    max_hold_s: float = 0.0
    queue_status: int = 503
    # issue 21 (sim.faults): provider error shape, disconnects, daily quotas, RPM windows,
    # scripted faults; all off by default and left out of to_mapping when unset
    shape: str = ""
    disconnect_frees: bool = False
    rpd: int = 0
    tpd: int = 0
    day_reset_hour: float = 0.0
    rpm_window_s: int = 0
    outages: tuple[tuple[float, float, int], ...] = ()
    first_429: int = 0

    def __post_init__(self) -> None:
        _num("max_inflight", self.max_inflight, integer=True)
        check_limits(self)
        check_api_fields(self)
        _num("rpm", self.rpm)
        _num("rpm_burst", self.rpm_burst, integer=True)
        _num("p_429", self.p_429, hi=1.0)
        _num("p_5xx", self.p_5xx, hi=1.0)
        _num("p_reset", self.p_reset, hi=1.0)
        _num("p_stall", self.p_stall, hi=1.0)
        _num("p_truncate", self.p_truncate, hi=1.0)
        if self.p_reset + self.p_stall + self.p_truncate > 1.0:
            raise ScenarioError(
                "p_reset: p_reset + p_stall + p_truncate must be <= 1, got "
                f"{self.p_reset + self.p_stall + self.p_truncate:g}"
            )
        _num("stall_s", self.stall_s, hi=86400.0, lo_open=True)
        if self.status_5xx not in FAULT_STATUSES:
            allowed = ", ".join(map(str, FAULT_STATUSES))
            raise ScenarioError(f"status_5xx: must be one of {allowed}, got {self.status_5xx!r}")
        if self.retry_after_s is not None:
            _num("retry_after_s", self.retry_after_s, hi=3600.0)

    @property
    def faulty(self) -> bool:
        """Whether injected faults (reset, stall, truncate) can happen."""
        return self.p_reset + self.p_stall + self.p_truncate > 0

    @property
    def limited(self) -> bool:
        """True when admission depends on other requests (in-flight cap or bucket)."""
        return (
            self.max_inflight > 0
            or self.rpm > 0
            or self.tokens_limited
            or self.shared
            or has_limits(self)
        )

    @property
    def tokens_limited(self) -> bool:
        """True when a token bucket limits the key (:mod:`sim.tokens`)."""
        return self.tpm > 0 or self.itpm > 0 or self.otpm > 0

    @property
    def shared(self) -> bool:
        """True when the key's capacity is shared by its requests (:mod:`sim.sharing`)."""
        return bool(self.throughput) or self.parallel > 0

    @property
    def bucket_capacity(self) -> float:
        return float(self.rpm_burst or self.rpm)


@dataclass(frozen=True)
class Scenario:
    """One workload. Times are model seconds; ``time_scale`` only affects wall-clock runs."""

    name: str
    outlines: int
    scene_types: tuple[str, ...]
    speech_actions: IntDist
    content: Dist
    actions: Dist
    tts: Dist
    content_by_type: Mapping[str, Dist] = field(default_factory=dict)
    quota_llm: Quota = Quota()
    quota_tts: Quota = Quota()
    client: ClientProfile = field(default_factory=ClientProfile)
    playback: Playback = field(default_factory=Playback)
    time_scale: float = 0.01
    request_timeout_s: float = 600.0
    parallel_scene_concurrency: int = 0
    description: str = ""
    sources: tuple[str, ...] = ()
    tokens: Mapping[str, StepTokens] = field(default_factory=dict)
    # generation runs (issue 22): the ``[runs]`` table, sim.runs_config.RunsTable; None: none
    runs: RunsTable | None = None

    def __post_init__(self) -> None:
        _num("classroom.outlines", self.outlines, lo=1, hi=1000, integer=True)
        if not self.scene_types:
            raise ScenarioError(
                "classroom.scene_types: must be a non-empty list of " + "|".join(SCENE_TYPES)
            )
        for t in self.scene_types:
            if t not in SCENE_TYPES:
                raise ScenarioError(
                    f"classroom.scene_types: must be one of {', '.join(SCENE_TYPES)}; got {t!r}"
                )
        for t in self.content_by_type:
            if t not in SCENE_TYPES:
                raise ScenarioError(
                    f"latency.content_by_type: keys must be one of "
                    f"{', '.join(SCENE_TYPES)}; got {t!r}"
                )
        for key, q, steps in (("llm", self.quota_llm, (0, 1)), ("tts", self.quota_tts, (2,))):
            if q.tokens_limited and all(self.step_tokens(i) is None for i in steps):
                need = "content/actions" if key == "llm" else "tts"
                raise ScenarioError(
                    f"quota.{key}.tpm: a token bucket needs a [tokens.{need}] table "
                    "(tokens per call)"
                )
        _num("run.time_scale", self.time_scale, hi=100.0, lo_open=True)
        _num("run.request_timeout_s", self.request_timeout_s, hi=86400.0, lo_open=True)
        _num(
            "run.parallel_scene_concurrency",
            self.parallel_scene_concurrency,
            hi=1_000_000,
            integer=True,
        )

    @property
    def upstream(self) -> str:
        """The name of the upstream profile whose rules this scenario's client follows."""
        return self.client.upstream

    def with_client(self, **changes: Any) -> Scenario:
        """A copy whose client profile has some fields changed."""
        return self.replace(client=dataclasses.replace(self.client, **changes))

    def scene_type(self, order: int) -> str:
        return self.scene_types[order % len(self.scene_types)]

    def content_dist(self, order: int) -> Dist:
        return self.content_by_type.get(self.scene_type(order), self.content)

    def step_tokens(self, step: int) -> StepTokens | None:
        """The ``[tokens.<step>]`` table of step 0, 1 or 2, if any (:mod:`sim.tokens`)."""
        return self.tokens.get(STEPS[step]) if step < len(STEPS) else None

    @property
    def max_clips(self) -> int:
        return self.speech_actions.max

    def replace(self, **changes: Any) -> Scenario:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def with_quota(
        self, *, llm_inflight: int | None = None, tts_inflight: int | None = None
    ) -> Scenario:
        """A copy whose per-key in-flight limits are set (``None`` keeps the current one)."""
        s = self
        if llm_inflight is not None:
            s = s.replace(quota_llm=dataclasses.replace(s.quota_llm, max_inflight=llm_inflight))
        if tts_inflight is not None:
            s = s.replace(quota_tts=dataclasses.replace(s.quota_tts, max_inflight=tts_inflight))
        return s

    def to_mapping(self) -> dict[str, Any]:
        """The TOML-shaped mapping that :func:`scenario_from_mapping` reads back."""

        def quota(q: Quota) -> dict[str, Any]:
            d = dataclasses.asdict(q)
            if d["retry_after_s"] is None:
                del d["retry_after_s"]
            d["throughput"] = list(q.throughput)
            return off_defaults(d)

        return {
            "name": self.name,
            "description": self.description,
            "sources": list(self.sources),
            "classroom": {
                "outlines": self.outlines,
                "scene_types": list(self.scene_types),
                "speech_actions": self.speech_actions.to_mapping(),
            },
            "latency": {
                "content": self.content.to_mapping(),
                "actions": self.actions.to_mapping(),
                "tts": self.tts.to_mapping(),
                **(
                    {
                        "content_by_type": {
                            k: v.to_mapping() for k, v in self.content_by_type.items()
                        }
                    }
                    if self.content_by_type
                    else {}
                ),
            },
            "quota": {"llm": quota(self.quota_llm), "tts": quota(self.quota_tts)},
            **(
                {"tokens": {k: v.to_mapping(k == "tts") for k, v in self.tokens.items()}}
                if self.tokens
                else {}
            ),
            "client": self.client.to_mapping(),
            "playback": self.playback.to_mapping(),
            "run": {
                "time_scale": self.time_scale,
                "request_timeout_s": self.request_timeout_s,
                "parallel_scene_concurrency": self.parallel_scene_concurrency,
            },
            **({"runs": self.runs.to_mapping()} if self.runs is not None else {}),
        }


_TOP = {
    "name",
    "description",
    "sources",
    "classroom",
    "latency",
    "quota",
    "retry",
    "client",
    "playback",
    "run",
    "tokens",
    "runs",
}
_SECTIONS: dict[str, set[str]] = {
    "classroom": {"outlines", "scene_types", "speech_actions"},
    "latency": {"content", "actions", "tts", "content_by_type"},
    "quota": {"llm", "tts"},
    "retry": {"llm", "tts", "foreground_llm", "foreground_tts"},
    "run": {"time_scale", "request_timeout_s", "parallel_scene_concurrency"},
    "tokens": set(STEPS),
}


def _table(path: str, v: Any) -> Mapping[str, Any]:
    if not isinstance(v, Mapping):
        raise ScenarioError(f"{path}: must be a table, got {v!r}")
    return v


def _check_keys(path: str, m: Mapping[str, Any], allowed: set[str]) -> None:
    for k in m:
        if k not in allowed:
            where = f"{path}." if path else ""
            raise ScenarioError(
                f"{where}{field_name(k)}: unknown field; allowed: {', '.join(sorted(allowed))}"
            )


def _sub(path: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return fn(*args, **kwargs)
    except ScenarioError as e:
        raise ScenarioError(f"{path}.{e}") from None
    except (ValueError, TypeError) as e:
        raise ScenarioError(f"{path}.{e}") from None


def _dataclass_from(path: str, cls: Any, m: Mapping[str, Any]) -> Any:
    names = {f.name for f in dataclasses.fields(cls)}
    _check_keys(path, m, names)
    return _sub(path, cls, **m)


def scenario_from_mapping(
    m: Mapping[str, Any], *, default_name: str = "custom", upstream: str | None = None
) -> Scenario:
    """Validate a parsed TOML mapping and build a :class:`Scenario`.

    ``upstream`` (a ``--upstream`` flag) replaces ``[client] upstream``; the table's
    other fields still override that profile's rules.
    """
    m = _table("scenario", m)
    _check_keys("", m, _TOP)
    sections = {k: _table(k, m.get(k, {})) for k in _SECTIONS}
    for k, allowed in _SECTIONS.items():
        _check_keys(k, sections[k], allowed)
    cls = sections["classroom"]
    lat = sections["latency"]
    for step in STEPS:
        if step not in lat:
            raise ScenarioError(
                f"latency.{step}: required (a table with dist = "
                "constant|uniform|exponential|lognormal|gamma|empirical)"
            )
    types = cls.get("scene_types", ["slide"])
    if not isinstance(types, list):
        raise ScenarioError(
            f"classroom.scene_types: must be a list of {'|'.join(SCENE_TYPES)}, got {types!r}"
        )
    by_type_raw = _table("latency.content_by_type", lat.get("content_by_type", {}))
    sources = m.get("sources", [])
    if not isinstance(sources, list) or not all(isinstance(s, str) for s in sources):
        raise ScenarioError("sources: must be a list of strings")
    name = m.get("name", default_name)
    if not isinstance(name, str) or not name:
        raise ScenarioError(f"name: must be a non-empty string, got {name!r}")
    description = m.get("description", "")
    if not isinstance(description, str):
        raise ScenarioError(f"description: must be a string, got {description!r}")
    run = sections["run"]
    q = sections["quota"]
    r = sections["retry"]
    return Scenario(
        name=name,
        description=description,
        sources=tuple(sources),
        outlines=cls.get("outlines", 10),
        scene_types=tuple(types),
        speech_actions=_sub(
            "classroom.speech_actions",
            int_dist_from_mapping,
            cls.get("speech_actions", {"dist": "constant", "value": 3}),
        ),
        content=_sub("latency.content", dist_from_mapping, lat["content"]),
        actions=_sub("latency.actions", dist_from_mapping, lat["actions"]),
        tts=_sub("latency.tts", dist_from_mapping, lat["tts"]),
        content_by_type={
            k: _sub(f"latency.content_by_type.{k}", dist_from_mapping, v)
            for k, v in by_type_raw.items()
        },
        quota_llm=_dataclass_from("quota.llm", Quota, _table("quota.llm", q.get("llm", {}))),
        quota_tts=_dataclass_from("quota.tts", Quota, _table("quota.tts", q.get("tts", {}))),
        client=client_from_mapping(_table("client", m.get("client", {})), r, upstream=upstream),
        playback=playback_from_mapping(m.get("playback", {})),
        time_scale=run.get("time_scale", 0.01),
        request_timeout_s=run.get("request_timeout_s", 600.0),
        parallel_scene_concurrency=run.get("parallel_scene_concurrency", 0),
        tokens={
            k: _sub(f"tokens.{k}", step_tokens_from_mapping, _table(f"tokens.{k}", v), k == "tts")
            for k, v in sections["tokens"].items()
        },
        runs=_runs_table(m),
    )


def _runs_table(m: Mapping[str, Any]) -> RunsTable | None:
    """The ``[runs]`` table of generation runs (:mod:`sim.runs_config`), if present."""
    if "runs" not in m:
        return None
    from .runs_config import runs_table_from_mapping

    return runs_table_from_mapping(m["runs"])


def load_scenario(name_or_path: str | Path, *, upstream: str | None = None) -> Scenario:
    """Load a built-in scenario by name, or a TOML file by path (``upstream``: the profile,
    replacing the file's ``[client] upstream``)."""
    text: str
    default_name: str
    p = Path(name_or_path)
    if str(name_or_path) in builtin_names():
        ref = resources.files("sim").joinpath("scenarios", f"{name_or_path}.toml")
        text = ref.read_text(encoding="utf-8")
        default_name = str(name_or_path)
    elif p.suffix == ".toml" or p.exists():
        try:
            text = p.read_text(encoding="utf-8")
        except OSError as e:
            raise ScenarioError(
                f"scenario: cannot read {str(p)!r} ({e.strerror}); give a "
                f"built-in name ({', '.join(builtin_names())}) or a .toml path"
            ) from None
        default_name = p.stem
    else:
        raise ScenarioError(
            f"scenario: unknown {str(name_or_path)!r}; allowed: "
            f"{', '.join(builtin_names())} or a path to a .toml file"
        )
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ScenarioError(f"scenario: {str(name_or_path)!r} is not valid TOML ({e})") from None
    return scenario_from_mapping(data, default_name=default_name, upstream=upstream)
