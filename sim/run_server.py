"""The generation-run server as a pure, sans-IO state machine (upstream ``runner.ts``,
``store.ts``, ``config.ts``, ``start.ts``; versions in ``docs/runs.md``).

One process's runner: runs arrive (``POST /api/generation-runs``); a start whose owner
already has ``per_owner`` *active* runs (preparing, outlining or generating — a run waiting
for a worker counts; awaiting confirmation, paused and completed do not) is refused with
429 ``ACTIVE_RUN_LIMIT`` and never queued. At most ``max_concurrent`` executions run at
once; a scan claims waiting runs, least recently updated first (``updated_at`` ascending,
the run id breaking ties). A scan happens on a wake — a start, a confirmation, and every
execution's end — and on the fixed scan tick (``scan_us``, from the runner's start), which
matters only for due countdown confirmations (the machine sets a tick timer only then).
Each scan first confirms the due countdown outlines (earliest first, at most 10 a scan),
then claims.

Events (:data:`ServerEvent`): :class:`Arrive`, :class:`Ended` (a run machine's
:class:`~sim.run_machine.Released`), :class:`ServerTimer` (a timer fired). Commands:
:class:`Claim` (the driver feeds the run machine :class:`~sim.run_machine.Claimed`),
:class:`Refuse`, :class:`SetServerTimer`. Same-instant events are handled in
:func:`server_event_key` order: ends, then timers, then arrivals, each by run id.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum

from .run_machine import Phase

__all__ = [
    "ACTIVE_RUN_LIMIT",
    "Arrive",
    "Claim",
    "Confirm",
    "Ended",
    "Refuse",
    "ServerCommand",
    "ServerEvent",
    "ServerMachine",
    "ServerSpec",
    "ServerTimer",
    "SetServerTimer",
    "server_event_key",
]

ACTIVE_RUN_LIMIT = "ACTIVE_RUN_LIMIT"
_ACTIVE = (Phase.PREPARING, Phase.OUTLINING, Phase.GENERATING)
_CLAIMABLE = (Phase.PREPARING, Phase.GENERATING)  # waiting for a worker
# the members read on every event and scan, as module names (the same members; a Python 3.11
# enum member read from its class costs a few hundred ns)
_PREPARING, _OUTLINING, _AWAITING = Phase.PREPARING, Phase.OUTLINING, Phase.AWAITING
_GENERATING = Phase.GENERATING
MAX_CONFIRMS_PER_SCAN = 10


class Confirm(StrEnum):
    """How the outline is confirmed: at once, by the 2.5 s countdown, or by the learner."""

    AUTO = "auto"
    COUNTDOWN = "countdown"
    WAIT = "wait"


@dataclass(frozen=True)
class ServerSpec:
    """The server's settings (µs): defaults are upstream's (``docs/runs.md``)."""

    max_concurrent: int = 4
    per_owner: int = 2
    scan_us: int = 1_000_000
    confirm: Confirm = Confirm.AUTO
    countdown_us: int = 2_500_000
    review_us: int = 10_000_000  # the learner's review before confirming (``wait``)


@dataclass(frozen=True, slots=True)
class Arrive:
    run: int
    owner: int


@dataclass(frozen=True, slots=True)
class Ended:
    """A run's execution ended in ``phase`` (awaiting, paused or completed)."""

    run: int
    phase: Phase


@dataclass(frozen=True, slots=True)
class ServerTimer:
    """``kind`` 0: the scan tick; 1: the learner confirms run ``run``'s outline."""

    kind: int
    run: int


ServerEvent = Arrive | Ended | ServerTimer


@dataclass(frozen=True, slots=True)
class Claim:
    run: int
    t_us: int


@dataclass(frozen=True, slots=True)
class Refuse:
    """A start (or a learner's confirmation) refused: 429 ``ACTIVE_RUN_LIMIT``."""

    run: int
    t_us: int
    status: int = 429
    code: str = ACTIVE_RUN_LIMIT
    confirm: bool = False


@dataclass(frozen=True, slots=True)
class SetServerTimer:
    at_us: int
    tag: ServerTimer


ServerCommand = Claim | Refuse | SetServerTimer


def server_event_key(ev: ServerEvent) -> tuple[int, int]:
    if isinstance(ev, Ended):
        return (0, ev.run)
    if isinstance(ev, ServerTimer):
        return (1 + ev.kind, ev.run)
    return (3, ev.run)


@dataclass
class _Run:
    owner: int
    arrival_us: int
    phase: Phase = Phase.PREPARING
    updated_us: int = 0
    executing: bool = False
    due_us: int | None = None  # a countdown's auto-confirm time


@dataclass
class ServerRecord:
    """Per run: arrival, refused, claims; per server: the refusals."""

    refused: list[int] = field(default_factory=list)
    confirm_refusals: int = 0


class ServerMachine:
    """See the module docstring; :meth:`feed` is the only input."""

    def __init__(self, spec: ServerSpec) -> None:
        self.spec = spec
        self.runs: dict[int, _Run] = {}
        self.running = 0
        self.t = 0
        self.out: list[ServerCommand] = []
        self.record = ServerRecord()
        self._ticks: set[int] = set()

    def active(self, owner: int) -> int:
        return sum(1 for r in self.runs.values() if r.owner == owner and r.phase in _ACTIVE)

    def feed(self, t_us: int, events: Iterable[ServerEvent]) -> list[ServerCommand]:
        if t_us < self.t:
            raise RuntimeError(f"driver bug: time went back: {t_us} < {self.t}")
        self.t = t_us
        self.out = []
        wake = False
        for ev in sorted(events, key=server_event_key):
            if isinstance(ev, Arrive):
                wake |= self._arrive(ev)
            elif isinstance(ev, Ended):
                self._ended(ev)
                wake = True
            elif ev.kind == 0:
                self._ticks.discard(self.t)
                wake = True
            else:
                wake |= self._review(ev.run)
        if wake:
            self._scan()
        return self.out

    def _arrive(self, ev: Arrive) -> bool:
        if self.active(ev.owner) >= self.spec.per_owner:
            self.record.refused.append(ev.run)
            self.out.append(Refuse(ev.run, self.t))
            return False
        self.runs[ev.run] = _Run(ev.owner, self.t, updated_us=self.t)
        return True

    def _ended(self, ev: Ended) -> None:
        r = self.runs[ev.run]
        r.executing = False
        self.running -= 1
        r.phase = ev.phase
        r.updated_us = self.t
        if ev.phase != _AWAITING:
            del self.runs[ev.run]  # final: neither active nor claimable any more
            return
        if self.spec.confirm == Confirm.COUNTDOWN:
            r.due_us = self.t + self.spec.countdown_us
            self._arm_tick(r.due_us)
        else:
            self.out.append(SetServerTimer(self.t + self.spec.review_us, ServerTimer(1, ev.run)))

    def _review(self, run: int) -> bool:
        """The learner confirms (``confirm-outline``): the active limit applies."""
        r = self.runs[run]
        if self.active(r.owner) >= self.spec.per_owner:
            self.record.confirm_refusals += 1
            self.out.append(Refuse(run, self.t, confirm=True))
            self.out.append(SetServerTimer(self.t + self.spec.review_us, ServerTimer(1, run)))
            return False
        r.phase = _GENERATING
        r.updated_us = self.t
        return True

    def _arm_tick(self, due_us: int) -> None:
        scan = self.spec.scan_us
        tick = -(-due_us // scan) * scan
        if tick not in self._ticks:
            self._ticks.add(tick)
            self.out.append(SetServerTimer(tick, ServerTimer(0, 0)))

    def _scan(self) -> None:
        due = sorted(
            (r.due_us, i)
            for i, r in self.runs.items()
            if r.due_us is not None and r.phase == _AWAITING
        )
        for n, (at, i) in enumerate(due):
            if at > self.t:
                self._arm_tick(at)
                break
            if n >= MAX_CONFIRMS_PER_SCAN:
                self._arm_tick(self.t + 1)
                break
            r = self.runs[i]
            r.phase, r.updated_us, r.due_us = _GENERATING, self.t, None
        while self.running < self.spec.max_concurrent:
            waiting = [
                (r.updated_us, i)
                for i, r in self.runs.items()
                if not r.executing and r.phase in _CLAIMABLE
            ]
            if not waiting:
                return
            _, i = min(waiting)
            r = self.runs[i]
            r.executing = True
            if r.phase == _PREPARING:
                r.phase = _OUTLINING
            self.running += 1
            self.out.append(Claim(i, self.t))
