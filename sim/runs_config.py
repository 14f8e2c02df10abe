"""Generation runs: the upstream settings of a run (:class:`RunsSettings`) and a deployment's
configuration (:class:`RunsConfig`), each one frozen, validated value.

Defaults are upstream's (``docs/runs.md`` names the file and version of each):

* deadlines, ``run/deadline.ts`` ``STEP_DEADLINES_MS``: outline 300 s (the whole step, its
  stream attempts included), agent profiles 120 s, scene content 300 s, scene actions 60 s,
  a narration clip 30 s (per attempt);
* the outline's stream attempts: ``MAX_STREAM_RETRIES`` + 1 = 3, back to back (``outline.ts``);
* confirmation: ``auto`` | ``countdown`` (``OUTLINE_AUTO_CONFIRM_MS`` 2500 ms, confirmed at the
  first runner scan at or after it, ``types.ts``/``runner.ts``) | ``wait`` (the learner confirms
  after ``review_s``; an assumption). Upstream's API default is ``wait`` (``input.ts``); the model's
  default is ``auto`` (no human time in the numbers);
* agent profiles ``auto`` (one call; any failure → presets, no pause) or ``preset`` (no call);
* the runner's scan, ``OPENMAIC_AGENT_RUNTIME_SCAN_INTERVAL_MS`` 1000 ms
  (``agent-runtime/config.ts``); ``OPENMAIC_GENERATION_RUN_MAX_CONCURRENT`` 4 and
  ``OPENMAIC_MAX_ACTIVE_RUNS_PER_OWNER`` 2 (``run/config.ts``);
* ``free_on_give_up``: whether the provider frees a request's in-flight slot when the client
  gives up (a deadline, a pause's abort) — a scenario choice, both exist; LLM requests only
  (upstream never hands the abort signal to TTS: a clip request runs to its end).

The outline's and the agents' latencies are assumptions (no public measurement): an outline
of ~10 scenes is ~1.5-2.5k output tokens at ~100-130 tokens/s (lognormal, median 18 s); agent
profiles ~0.5k tokens (median 5 s).

The media lane (``media.ts``): ``media_items`` images/videos per run (default 0: the built-in
scenarios have none), one at a time after scene 0 is written, one attempt each under
``MEDIA_DEADLINE_MS`` 300 s; ``media`` their latency (an assumption: median 20 s),
``media_p_fail`` the chance an item fails (never a pause). The image provider's limits are not
modelled (the lane's requests pass no key's admission).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

from .dists import Dist, LogNormal, dist_from_mapping
from .errors import UserError
from .rules import ScenarioError, check_number, parse_knob
from .run_server import Confirm

__all__ = [
    "AGENT_MODES",
    "CONFIRM_MODES",
    "GATE_ORDERS",
    "RUNS_ADAPTIVE",
    "RUNS_TABLE_FIELDS",
    "GateOrder",
    "RunsConfig",
    "RunsSettings",
    "RunsTable",
    "check_gate_order",
    "load_arrivals",
    "runs_settings_from_mapping",
    "runs_table_from_mapping",
]

CONFIRM_MODES = tuple(m.value for m in Confirm)
AGENT_MODES = ("auto", "preset")


class GateOrder(StrEnum):
    """The gate's waiting orders (``sim.run_gate``, docs/runs.md); ``TIERS`` is the default."""

    NEED = "need"
    NEED_ARRIVAL = "need-arrival"
    TIERS = "tiers"
    FIFO = "fifo"


GATE_ORDERS = tuple(o.value for o in GateOrder)  # the values --gate-order takes


@dataclass(frozen=True)
class RunsSettings:
    """Upstream's per-run settings (see the module docstring); seconds."""

    outline: Dist = field(default_factory=lambda: LogNormal(18.0, 0.3))
    agents: Dist = field(default_factory=lambda: LogNormal(5.0, 0.3))
    outline_deadline_s: float = 300.0
    agents_deadline_s: float = 120.0
    content_deadline_s: float = 300.0
    actions_deadline_s: float = 60.0
    clip_deadline_s: float = 30.0
    outline_attempts: int = 3
    confirm: str = "auto"
    countdown_s: float = 2.5
    review_s: float = 10.0
    agents_mode: str = "auto"
    free_on_give_up: bool = False
    scan_interval_s: float = 1.0
    media_items: int = 0
    media: Dist = field(default_factory=lambda: LogNormal(20.0, 0.4))
    media_deadline_s: float = 300.0
    media_p_fail: float = 0.0

    def __post_init__(self) -> None:
        for name in (
            "outline_deadline_s",
            "agents_deadline_s",
            "content_deadline_s",
            "actions_deadline_s",
            "clip_deadline_s",
            "scan_interval_s",
            "media_deadline_s",
        ):
            check_number(f"runs.{name}", getattr(self, name), hi=86400.0, lo_open=True)
        check_number("runs.countdown_s", self.countdown_s, hi=86400.0)
        check_number("runs.review_s", self.review_s, hi=86400.0, lo_open=True)
        check_number("runs.outline_attempts", self.outline_attempts, lo=1, hi=20, integer=True)
        check_number("runs.media_items", self.media_items, hi=1000, integer=True)
        check_number("runs.media_p_fail", self.media_p_fail, hi=1.0)
        if self.confirm not in CONFIRM_MODES:
            raise ScenarioError(
                f"runs.confirm: must be one of {', '.join(CONFIRM_MODES)}; got {self.confirm!r}"
            )
        if self.agents_mode not in AGENT_MODES:
            raise ScenarioError(
                f"runs.agents_mode: must be one of {', '.join(AGENT_MODES)}; "
                f"got {self.agents_mode!r}"
            )
        if not isinstance(self.free_on_give_up, bool):
            raise ScenarioError(
                f"runs.free_on_give_up: must be true or false, got {self.free_on_give_up!r}"
            )

    def us(self, name: str) -> int:
        """A seconds field in whole µs."""
        return round(float(getattr(self, name)) * 1e6)

    def to_mapping(self) -> dict[str, Any]:
        """The ``[runs]`` table's settings fields (latencies as dist tables)."""
        out: dict[str, Any] = {}
        for name in self.__dataclass_fields__:
            v = getattr(self, name)
            out[name] = v.to_mapping() if name in _DISTS else v
        return out


_DISTS = ("outline", "agents", "media")


def runs_settings_from_mapping(m: Mapping[str, Any]) -> RunsSettings:
    """A ``[runs]`` table: any field of :class:`RunsSettings`; ``outline``/``agents`` are
    latency tables (``{dist = "lognormal", median_s = 18, sigma = 0.3}``)."""
    if not isinstance(m, Mapping):
        raise ScenarioError(f"runs: must be a table, got {m!r}")
    names = {f for f in RunsSettings.__dataclass_fields__}
    kw: dict[str, Any] = {}
    for k, v in m.items():
        if k not in names:
            raise ScenarioError(f"runs.{k}: unknown field; allowed: {', '.join(sorted(names))}")
        if k in _DISTS:
            try:
                v = dist_from_mapping(v)
            except (ValueError, TypeError) as e:
                raise ScenarioError(f"runs.{k}.{e}") from None
        kw[k] = v
    return RunsSettings(**kw)


# the server's caps a [runs] table may set besides the settings (run/config.ts, f519391a):
# OPENMAIC_GENERATION_RUN_MAX_CONCURRENT 4, OPENMAIC_MAX_ACTIVE_RUNS_PER_OWNER 2
_CAPS = {"max_concurrent": (1, 1000), "per_owner": (1, 1_000_000)}
RUNS_TABLE_FIELDS = tuple(sorted([*RunsSettings.__dataclass_fields__, *_CAPS]))


@dataclass(frozen=True)
class RunsTable:
    """A scenario's ``[runs]`` table: the run settings and the server's caps
    (``max_concurrent`` runs executing per process, ``per_owner`` active runs per owner);
    defaults are upstream's (the module docstring)."""

    settings: RunsSettings = field(default_factory=RunsSettings)
    max_concurrent: int = 4
    per_owner: int = 2

    def __post_init__(self) -> None:
        for name, (lo, hi) in _CAPS.items():
            check_number(f"runs.{name}", getattr(self, name), lo=lo, hi=hi, integer=True)

    def to_mapping(self) -> dict[str, Any]:
        """The ``[runs]`` table that :func:`runs_table_from_mapping` reads back."""
        caps = {"max_concurrent": self.max_concurrent, "per_owner": self.per_owner}
        return self.settings.to_mapping() | caps


_UPSTREAM_TABLE = RunsTable()  # upstream's defaults (frozen: one for every scenario without one)


def runs_table_from_mapping(m: Mapping[str, Any]) -> RunsTable:
    """A scenario's ``[runs]`` table (:class:`RunsTable`): any :class:`RunsSettings` field
    plus ``max_concurrent`` and ``per_owner``; a bad field is a one-line
    :class:`~sim.rules.ScenarioError` naming it (``runs.<field>: ...``)."""
    if not isinstance(m, Mapping):
        raise ScenarioError(f"runs: must be a table, got {m!r}")
    for k in m:
        if k not in RUNS_TABLE_FIELDS:
            raise ScenarioError(f"runs.{k}: unknown field; allowed: {', '.join(RUNS_TABLE_FIELDS)}")
    for k in _DISTS:
        if k in m and not isinstance(m[k], Mapping):
            raise ScenarioError(
                f'runs.{k}: must be a latency table like {{dist = "lognormal", '
                f"median_s = 18, sigma = 0.3}}, got {m[k]!r}"
            )
    settings = runs_settings_from_mapping({k: v for k, v in m.items() if k not in _CAPS})
    return RunsTable(settings, **{k: v for k, v in m.items() if k in _CAPS})


class _WithRuns(Protocol):
    """A :class:`~sim.scenario.Scenario` as :meth:`RunsConfig.for_scenario` reads it."""

    @property
    def runs(self) -> RunsTable | None: ...


RUNS_ADAPTIVE = ("off", "gate")  # the runs' policies: upstream, the key-wide gate


@dataclass(frozen=True)
class RunsConfig:
    """One deployment's cell: ``concurrency`` (``PARALLEL_SCENE_CONCURRENCY``, read as
    upstream parses it), ``max_concurrent`` runs per process, ``per_owner`` active runs,
    ``runs`` arriving Poisson at ``arrival_per_hour`` (the first at 0) or ``arrivals``
    replayed ((seconds, owner) pairs), ``owners`` (0: every run its own owner; else run
    ``r``'s owner is ``r % owners``), ``run_id`` (the draws' block: run ``r`` is classroom
    ``run_id * runs + r``), the upstream ``settings``, and whether to keep the request log."""

    concurrency: int | str = 0
    max_concurrent: int = 4
    per_owner: int = 2
    runs: int = 20
    arrival_per_hour: float | None = 10.0
    arrivals: tuple[tuple[float, int], ...] | None = None
    owners: int = 0
    run_id: int = 0
    settings: RunsSettings = field(default_factory=RunsSettings)
    keep_log: bool = True
    adaptive: str = "off"  # off (upstream) | gate (sim.run_gate: a key-wide gate across runs)
    gate_order: str = GateOrder.TIERS  # the gate's waiting order (sim.run_gate.GateOrder)

    def __post_init__(self) -> None:
        if self.adaptive not in RUNS_ADAPTIVE:
            raise UserError(
                f"adaptive: the runs model has {' and '.join(RUNS_ADAPTIVE)}; got {self.adaptive!r}"
            )
        check_gate_order(self.gate_order, self.adaptive)
        object.__setattr__(self, "gate_order", GateOrder(self.gate_order))
        _int("max_concurrent", self.max_concurrent, 1, 1000)
        _int("per_owner", self.per_owner, 1, 1_000_000)
        _int("owners", self.owners, 0, 1_000_000)
        _int("run_id", self.run_id, 0, 1_000_000)
        if self.arrivals is not None:
            arr = tuple((float(t), int(o)) for t, o in self.arrivals)
            if not arr or any(not (math.isfinite(t) and t >= 0) or o < 0 for t, o in arr):
                raise UserError(
                    "arrivals: must be a non-empty list of (time >= 0, owner >= 0) pairs"
                )
            object.__setattr__(self, "arrivals", tuple(sorted(arr)))
            return
        _int("runs", self.runs, 1, 1_000_000)
        a = self.arrival_per_hour
        if (
            isinstance(a, bool)
            or not isinstance(a, int | float)
            or not (math.isfinite(a) and a > 0)
        ):
            raise UserError(f"arrival_per_hour: must be a number > 0, got {a!r}")

    @classmethod
    def for_scenario(cls, sc: _WithRuns, **fields: Any) -> RunsConfig:
        """A cell on scenario ``sc``: its ``[runs]`` table's settings and caps (upstream's
        defaults when it has none); ``fields`` (any :class:`RunsConfig` field) override them."""
        t = sc.runs if sc.runs is not None else _UPSTREAM_TABLE
        base = {"max_concurrent": t.max_concurrent, "per_owner": t.per_owner}
        return cls(**(base | {"settings": t.settings} | fields))

    @property
    def c(self) -> int:
        """The knob as upstream reads it (:func:`sim.rules.parse_knob`)."""
        return parse_knob(self.concurrency)

    @property
    def n_runs(self) -> int:
        return len(self.arrivals) if self.arrivals is not None else self.runs


def check_gate_order(order: object, *adaptive: str) -> None:
    """``--gate-order``: one of :data:`GATE_ORDERS`, and only a gate (``adaptive`` has
    ``gate``) takes one other than the default; else a one-line :class:`UserError`."""
    if order not in GATE_ORDERS:
        raise UserError(f"--gate-order: must be one of {', '.join(GATE_ORDERS)}; got {order!r}")
    if order != GateOrder.TIERS and "gate" not in adaptive:
        raise UserError(f"--gate-order {order}: orders the key-wide gate; needs --adaptive gate")


def _int(name: str, v: Any, lo: int, hi: int) -> None:
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise UserError(f"{name}: must be an integer in [{lo}, {hi}], got {v!r}")


def load_arrivals(path: str | Path) -> tuple[tuple[float, int], ...]:
    """A replay file: one ``seconds[,owner]`` per line (no owner: one of its own; ``#``
    comments and a header line ``t_s,owner`` allowed)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise UserError(f"arrivals: cannot read {str(p)!r} ({e.strerror})") from None
    out: list[tuple[float, int]] = []
    rows: Sequence[list[str]] = list(csv.reader(text.splitlines()))
    for n, row in enumerate(rows, 1):
        cells = [c.strip() for c in row]
        if not cells or not cells[0] or cells[0].startswith("#") or cells[0] == "t_s":
            continue
        try:
            t = float(cells[0])
            owner = int(cells[1]) if len(cells) > 1 and cells[1] else len(out)
        except ValueError:
            raise UserError(
                f"arrivals: {str(p)!r} line {n}: expected 'seconds,owner', got {','.join(row)!r}"
            ) from None
        out.append((t, owner))
    if not out:
        raise UserError(f"arrivals: {str(p)!r} has no 'seconds,owner' lines")
    return tuple(out)
