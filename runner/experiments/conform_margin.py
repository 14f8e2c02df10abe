"""Race margins: is a conform case decidable on a real clock?

``conform`` runs upstream's code on a real socket, where simultaneous requests leave up to
~7 ms of real time apart on a loaded machine and every hop adds tens of milliseconds
(docs/conform.md, "Tolerance"). An admission decision at a limited key that hinges on a
race closer than that — a request arriving vs. a slot freeing, or vs. another request taking
a slot, or vs. the RPM bucket's next token — can go either way on the real clock while the
model, on its virtual clock, decides it one way; such a case cannot tell upstream from the
port. This module reads a case's model trace and lists every admission decision whose
outcome a shift of the other event by less than :data:`RACE_MARGIN_S` would flip.

Exact simultaneity from one cause (requests the loop sends in one JavaScript tick: the three
first contents, actions ``i`` with the next content after content ``i`` ends) is taken in
the model's canonical order, the send order (docs/conform.md). Two events at one model
instant from different causes — two answers ending at the same instant — are a race of
margin 0. A request's own cause (the one answer at its instant that it follows) frees its
slot before it arrives on any clock.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from .conform_checkout import ConformError

if TYPE_CHECKING:
    from sim.scenario import Quota

__all__ = ["RACE_MARGIN_S", "Race", "RaceMarginError", "check_margin", "races"]

# The smallest margin (model seconds) a decision at a limited key may have. At the default
# time scale 0.15 that is 150 ms of real time: 20 times the documented spread of simultaneous
# requests under load (50 model ms = 7 ms), 6 times the loaded race that flipped (0.15 model s
# = 22 ms, case2-c2) and as much as the comparison's own time tolerance (1 model s): a race
# decided by less than the tolerance could not be told from harness timing anyway.
RACE_MARGIN_S = 1.0


class Req(Protocol):
    """A trace's request (:class:`runner.experiments.traces.Request`)."""

    @property
    def step(self) -> str: ...
    @property
    def order(self) -> int: ...
    @property
    def clip(self) -> int: ...
    @property
    def attempt(self) -> int: ...
    @property
    def t_arrival_s(self) -> float: ...
    @property
    def t_end_s(self) -> float: ...
    @property
    def status(self) -> int: ...


Ident = tuple[str, int, int, int]
Cause = tuple[object, ...] | None


@dataclass(frozen=True)
class Race:
    """An admission decision ``margin_s`` model seconds from the event that would flip it."""

    request: Ident
    key: str
    t_s: float
    status: int
    margin_s: float
    what: str

    def __str__(self) -> str:
        step, order, clip, attempt = self.request
        return (
            f"{step} {order}/{clip} attempt {attempt} ({self.status}) at {self.t_s:.3f} s on "
            f"the {self.key} key: {self.what} {self.margin_s:.3f} model s away"
        )


class RaceMarginError(ConformError):
    """A case whose model trace has a decision closer than the margin: one line."""


def _us(t_s: float) -> int:
    return round(t_s * 1e6)


def _ident(r: Req) -> Ident:
    return (r.step, r.order, r.clip, r.attempt)


def _key(r: Req) -> str:
    return "tts" if r.step == "tts" else "llm"


def _admitted(r: Req) -> bool:
    return r.status != 429


def _causes(reqs: Sequence[Req]) -> dict[Ident, Cause]:
    """What made each request be sent at its instant: the one admitted answer ending then
    (a first attempt), the instant when several ended then, the run's start, or the timer set
    when its previous attempt ended; ``None`` when nothing in the trace explains it. Several
    answers ending at one instant are one cause for the order of the sends that follow, but
    none of them is certain to have freed its slot before those sends
    (:func:`_inflight_races`)."""
    ends: dict[int, list[Ident]] = {}
    by_ident = {_ident(r): r for r in reqs}
    for r in reqs:
        if _admitted(r) and r.t_end_s > r.t_arrival_s:
            ends.setdefault(_us(r.t_end_s), []).append(_ident(r))
    out: dict[Ident, Cause] = {}

    def cause(r: Req) -> Cause:
        k = _ident(r)
        if k in out:
            return out[k]
        a = _us(r.t_arrival_s)
        c: Cause = None
        if r.attempt > 0:
            prev = by_ident.get((r.step, r.order, r.clip, r.attempt - 1))
            pc = cause(prev) if prev is not None else None
            c = None if prev is None or pc is None else ("timer", _us(prev.t_end_s), pc)
        else:
            here = ends.get(a, [])
            if len(here) == 1:
                c = ("end", here[0])
            elif here:  # one instant of several answers: its sends are taken in order
                c = ("instant", a)
            elif a == 0:
                c = ("start",)
        out[k] = c
        return c

    for r in reqs:
        cause(r)
    return out


def _slot_events(
    i: int, mine: list[Req], cap: int, causes: Mapping[Ident, Cause]
) -> tuple[str, list[tuple[int, str]]] | None:
    """What would flip the ``i``-th decision at an in-flight cap, and the events (instant,
    what) that could: for an admission at the last free slot, a slot freed before it (not by
    its own cause) or taken after it; for a refusal at a full key, a slot freed after it or
    taken before it. Arrivals at one instant from one cause keep their order. ``None`` when
    no single event flips it (room to spare, or refused for another reason)."""
    r = mine[i]
    a, cause = _us(r.t_arrival_s), causes[_ident(r)]
    before = [q for q in mine[:i] if _admitted(q)]
    held = [q for q in before if _us(q.t_end_s) > a]
    events: list[tuple[int, str]] = []

    def ordered(q: Req) -> bool:
        return _us(q.t_arrival_s) == a and cause is not None and causes[_ident(q)] == cause

    def name(q: Req) -> str:
        return f"{q.step} {q.order}/{q.clip}"

    if _admitted(r) and len(held) == cap - 1:
        for q in before:
            if q not in held and cause != ("end", _ident(q)):
                events.append((_us(q.t_end_s), f"{name(q)} frees its slot"))
        for q in mine[i + 1 :]:
            if _admitted(q) and not ordered(q):
                events.append((_us(q.t_arrival_s), f"{name(q)} takes a slot"))
        return "one more request in flight", events
    if r.status == 429 and len(held) == cap:
        for q in held:
            events.append((_us(q.t_end_s), f"{name(q)} frees its slot"))
            if not ordered(q):
                events.append((_us(q.t_arrival_s), f"{name(q)} takes a slot"))
        return "one fewer request in flight", events
    return None


def _inflight_races(
    k: str, mine: list[Req], cap: int, causes: Mapping[Ident, Cause], margin_s: float
) -> list[Race]:
    """Decisions at an in-flight cap that an event on the key within ``margin_s`` would flip
    (:func:`_slot_events`)."""
    out = []
    for i, r in enumerate(mine):
        found = _slot_events(i, mine, cap, causes)
        if found is None:
            continue
        need, events = found
        a = _us(r.t_arrival_s)
        close = [(abs(t - a), what) for t, what in events if abs(t - a) < _us(margin_s)]
        if close:
            d, what = min(close)
            out.append(Race(_ident(r), k, r.t_arrival_s, r.status, d / 1e6, f"{what} ({need})"))
    return out


def _bucket_races(k: str, mine: list[Req], q: Quota, margin_s: float) -> list[Race]:
    """Decisions at an RPM bucket whose next token comes within ``margin_s`` of them."""
    out = []
    cap, rate = q.bucket_capacity, q.rpm / 60e6
    tok, last = cap, 0
    for i, r in enumerate(mine):
        a = _us(r.t_arrival_s)
        if q.max_inflight:
            n = sum(1 for p in mine[:i] if _admitted(p) and _us(p.t_end_s) > a)
            if n >= q.max_inflight:
                continue  # refused before the bucket: no token spent
        now = min(cap, tok + (a - last) * rate)
        spent = now >= 1.0
        if tok < 1.0:  # the bucket was empty after the last spend: its next token's instant
            edge = last + round((1.0 - tok) / rate)
            d = abs(a - edge)
            if d < _us(margin_s) and (spent or r.status == 429):
                out.append(
                    Race(_ident(r), k, r.t_arrival_s, r.status, d / 1e6, "the bucket's next token")
                )
        if spent:
            tok, last = now - 1.0, a
    return out


def races(
    requests: Sequence[Req], quotas: Mapping[str, Quota], margin_s: float = RACE_MARGIN_S
) -> list[Race]:
    """Every admission decision of ``requests`` (a model trace) at a limited key of ``quotas``
    (``llm``, ``tts``) closer than ``margin_s`` to the event that would flip it. A
    :class:`RaceMarginError` for a limit this check cannot read off a trace (token buckets,
    shared capacity, windows, daily quotas, scripted faults)."""
    from sim.faults import has_limits

    causes = _causes(requests)
    out: list[Race] = []
    for k, q in quotas.items():
        if not q.limited:
            continue
        if q.tokens_limited or q.shared or q.rpm_per_second or has_limits(q):
            raise RaceMarginError(
                f"race margin: the {k} key's limits (token buckets, shared capacity, windows, "
                "daily quotas or scripted faults) cannot be checked; conform checks in-flight "
                "caps and RPM buckets only"
            )
        mine = [r for r in requests if _key(r) == k]  # in decision order (the trace's)
        if q.max_inflight:
            out += _inflight_races(k, mine, q.max_inflight, causes, margin_s)
        if q.rpm > 0:
            out += _bucket_races(k, mine, q, margin_s)
    return sorted(out, key=lambda x: (x.t_s, x.request))


def check_margin(
    case: str,
    requests: Sequence[Req],
    quotas: Mapping[str, Quota],
    margin_s: float = RACE_MARGIN_S,
) -> None:
    """A :class:`RaceMarginError` (one line) when the case's model trace has a decision closer
    than ``margin_s``: upstream on a real clock could go either way, so a "differs" would say
    nothing about upstream."""
    found = races(requests, quotas, margin_s)
    if found:
        worst = min(found, key=lambda x: x.margin_s)
        raise RaceMarginError(
            f"case {case}: {len(found)} admission decision(s) of the model closer than "
            f"{margin_s:g} model s to a race, e.g. {worst}; not decidable on a real clock "
            "(choose other latencies, seed or faults; docs/conform.md, 'Race margin')"
        )
