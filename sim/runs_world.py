"""What every generation-runs driver shares: the provider (admission, keyed draws) and one
instant's handling. A driver only keeps a clock and a queue of timed items; at each instant
it hands the items due then to :meth:`RunsWorld.instant` and schedules what that returns
(:mod:`sim.runs_model` on SimPy, :mod:`sim.runs_fast` on a heap).

One instant (``docs/runs.md``, "Order at equal times"): in rounds, feed each run machine
(ascending run) its events, turn each :class:`~sim.run_machine.Released` into the server's
:class:`~sim.run_server.Ended`, feed the server, turn each :class:`~sim.run_server.Claim`
into a :class:`~sim.run_machine.Claimed` for the next round; after the feeds, decide the
round's requests at the provider in :func:`sim.provider.arrival_order` (content-first: by
step, classroom, scene, clip, attempt); an immediate answer (a 429) is an event of the next
round; repeat while the instant has events. A request admitted with latency ``L`` at ``t``
answers at ``t + L`` when that is not after its deadline, else 504 at the deadline (and with
``free_on_give_up`` an LLM request's slot is freed then).
"""

from __future__ import annotations

import dataclasses
import heapq
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .draws import KIND_FAULT, KIND_LATENCY, Draws, seconds_to_us
from .errors import UserError
from .provider import RESET, TRUNCATED, Call, KeyState, Provider
from .rules import Step
from .run_gate import RunGates
from .run_machine import (
    Answer,
    Cancel,
    Claimed,
    Released,
    ReqId,
    RunEvent,
    RunMachine,
    RunSpec,
    Send,
    SetTimer,
    Timer,
    event_key,
)
from .run_server import (
    Arrive,
    Claim,
    Confirm,
    Ended,
    Refuse,
    ServerEvent,
    ServerMachine,
    ServerSpec,
    SetServerTimer,
    server_event_key,
)
from .runs_config import RunsConfig, RunsSettings
from .scenario import Scenario
from .upstream import RUNS

__all__ = [
    "CANCELLED",
    "Item",
    "RunDraws",
    "RunProvider",
    "RunsWorld",
    "arrivals_of",
    "runs_scenario",
]

CANCELLED = -3  # a request-log status: the client aborted it (a pause)


class RunDraws(Draws):
    """Keyed draws with the outline's and the agents' latencies (steps 3, 4; the browser-era
    steps' draws unchanged)."""

    def __init__(self, scenario: Scenario, settings: RunsSettings, seed: int, lo: int, hi: int):
        super().__init__(scenario, seed, lo, hi)
        self.settings = settings

    def _per(self, step: int) -> int:
        return max(1, self.settings.media_items) if step == Step.MEDIA else super()._per(step)

    def column(self, step: int, order: int, clip: int) -> int:
        return order if step == Step.MEDIA else super().column(step, order, clip)

    def latency_us(self, step: int, attempt: int) -> NDArray[np.int64]:
        if step < Step.OUTLINE:
            return super().latency_us(step, attempt)
        lat = self._lat.get((step, attempt))
        if lat is None:
            st = self.settings
            dist = {Step.OUTLINE: st.outline, Step.AGENTS: st.agents}.get(Step(step), st.media)
            u = self.uniforms((step, attempt, KIND_LATENCY), self._per(step))
            lat = self._lat[(step, attempt)] = seconds_to_us(self.quantile(dist, u))
        return lat


class RunProvider(Provider):
    """:class:`~sim.provider.Provider` whose draws know the runs' extra steps."""

    def __init__(self, scenario: Scenario, settings: RunsSettings, seed: int, **kw: Any):
        super().__init__(scenario, seed, **kw)
        self.settings = settings

    def draws_for(self, cid: int) -> tuple[Draws, int]:
        fixed = self._fixed  # one block for every run of a cell (the fast engine's)
        if fixed is not None and fixed.lo <= cid < fixed.hi:
            return fixed, cid - fixed.lo
        d = self._draws.get(cid)
        if d is None:
            d = RunDraws(self.scenario, self.settings, self.seed, cid, cid + 1)
            self._draws[cid] = d
            if len(self._draws) > self._draws_cache:
                self._draws.popitem(last=False)
        return d, 0


# A timed item: ("run", run, event) | ("srv", 0, event) | ("ans", run, (answer, give_up))
Item = tuple[str, int, Any]
Schedule = Callable[[int, Item], None]


def runs_scenario(sc: Scenario) -> Scenario:
    """The scenario as every runs engine runs it: the ``runs`` profile's rules (if it has
    another), the scenario's fixed jitter kept."""
    if sc.client.upstream != RUNS.upstream:
        sc = sc.replace(client=dataclasses.replace(RUNS, jitter_u=sc.client.jitter_u))
    return sc


def arrivals_of(cfg: RunsConfig, seed: int) -> list[tuple[int, int]]:
    """(µs, owner) of every run, in run order: the replay, else Poisson from the keyed stream."""
    from .draws import tenant_offsets_us

    if cfg.arrivals is not None:
        return [(round(t * 1e6), o) for t, o in cfg.arrivals]
    assert cfg.arrival_per_hour is not None
    ts = tenant_offsets_us(seed, cfg.run_id, cfg.runs, 3600.0 / cfg.arrival_per_hour, "exponential")
    return [(t, r if cfg.owners == 0 else r % cfg.owners) for r, t in enumerate(ts)]


def _free_slot(ks: KeyState | None, end_us: int, now_us: int) -> None:
    """The slot of a request admitted to end at ``end_us`` is free from ``now_us``: its client
    gave up and this provider notices (``free_on_give_up``). The same rule as issue 21's
    ``KeyState.release(end_us, now_us)`` (h-provider); kept here until both are merged."""
    if ks is None:
        return
    ends = ks._ends
    if end_us > now_us and end_us in ends:
        ends[ends.index(end_us)] = now_us
        heapq.heapify(ends)


def _item_key(item: Item) -> tuple[int, ...]:
    kind, _r, ev = item
    if kind == "srv":
        return (0, *server_event_key(ev))
    if kind == "gate":  # an outline's expiry at its gate, or a hold's end (sim.run_gate)
        return (2, *ev) if ev is not None else (3,)
    if kind == "ans":
        return (1, *event_key(ev[0]))
    return (1, *event_key(ev))


@dataclass
class _Flight:
    cid: int
    t_us: int
    ks: KeyState | None  # None: a media item (no key)
    end_us: int  # the provider's planned end (the slot's)
    llm: bool


class RunsWorld:
    """The machines of one deployment and the provider they share (see the module doc)."""

    def __init__(self, sc: Scenario, cfg: RunsConfig, seed: int, schedule: Schedule) -> None:
        if sc.quota_llm.shared or sc.quota_tts.shared:
            raise UserError("runs: shared-capacity keys (throughput, parallel) are not modelled")
        sc = runs_scenario(sc)
        self.sc = sc
        self.cfg = cfg
        self.seed = seed
        self.schedule = schedule
        st = cfg.settings
        # the LLM key frees a slot when its client goes away: the run setting, or the key's own
        # quota (issue 21's ``disconnect_frees``, where merged); clips never go away (no signal)
        self.free_llm = st.free_on_give_up or bool(getattr(sc.quota_llm, "disconnect_frees", 0))
        self.arrivals = arrivals_of(cfg, seed)
        n = len(self.arrivals)
        self.base = cfg.run_id * n
        self.provider = self._new_provider(n)
        self.server = ServerMachine(
            ServerSpec(
                max_concurrent=cfg.max_concurrent,
                per_owner=cfg.per_owner,
                scan_us=st.us("scan_interval_s"),
                confirm=Confirm(st.confirm),
                countdown_us=st.us("countdown_s"),
                review_us=st.us("review_s"),
            )
        )
        self._spec_common = self._common_spec()
        self.machines: list[RunMachine] = [self._machine(r) for r in range(n)]
        self.refused: set[int] = set()
        self.flight: dict[ReqId, _Flight] = {}
        self.log: list[tuple[int, ...]] = []
        self.now = 0
        self.gates = (
            RunGates(
                sc,
                [t for t, _ in self.arrivals],
                self._playback_us,
                cfg.gate_order,
                first_scene_us=self._first_scene_us,
            )
            if cfg.adaptive == "gate"
            else None
        )
        for r, (t, owner) in enumerate(self.arrivals):
            schedule(t, ("srv", r, Arrive(r, owner)))

    def _playback_us(self, r: int) -> list[int]:
        """Run ``r``'s scenes' playback times (the learner's keyed draws, as the run's record
        counts them): the gate's need times (:mod:`sim.run_gate`)."""
        d, row = self.provider.draws_for(self.base + r)
        return [d.playback_us(row, k, n) for k, n in enumerate(self.machines[r].spec.clips)]

    def _first_scene_us(self, r: int) -> int | None:
        """When run ``r``'s first scene was written (None: not yet): its learner plays from
        then (the gate's need times)."""
        return next((t for k, t in self.machines[r].record.ready if k == 0), None)

    def _new_provider(self, n: int) -> RunProvider:
        """The cell's provider: per-classroom keyed draws (a driver may give one block)."""
        return RunProvider(self.sc, self.cfg.settings, self.seed, keep_log=self.cfg.keep_log)

    def _machine(self, r: int) -> RunMachine:
        return RunMachine(self._spec(r), self._jitter(r))

    def _jitter(self, r: int) -> Callable[[ReqId], float]:
        """Run ``r``'s retry jitter: the keyed draw of the failed attempt (or the fixed u)."""
        prov, cid = self.provider, self.base + r

        def jitter(q: ReqId) -> float:
            return prov.jitter_u(cid, q.step, q.order, q.clip, q.attempt)

        return jitter

    def _spec(self, r: int) -> RunSpec:
        """Run ``r``'s spec: its scenes' clips (:meth:`_clips`), the cell's settings."""
        return RunSpec(run=r, clips=self._clips(r), **self._spec_common)

    def _clips(self, r: int) -> tuple[int, ...]:
        """Run ``r``'s speech clips per scene (its keyed draws)."""
        prov, cid = self.provider, self.base + r
        return tuple(prov.speeches(cid, k) for k in range(self.sc.outlines))

    def _common_spec(self) -> dict[str, Any]:
        """The fields of :class:`RunSpec` every run of the cell shares (made once)."""
        sc, st = self.sc, self.cfg.settings
        return {
            "c": self.cfg.c,
            "confirm_auto": st.confirm == "auto",
            "agents_auto": st.agents_mode == "auto",
            "outline_deadline_us": st.us("outline_deadline_s"),
            "agents_deadline_us": st.us("agents_deadline_s"),
            "content_deadline_us": st.us("content_deadline_s"),
            "actions_deadline_us": st.us("actions_deadline_s"),
            "clip_deadline_us": st.us("clip_deadline_s"),
            "media": st.media_items,
            "media_deadline_us": st.us("media_deadline_s"),
            "outline_attempts": st.outline_attempts,
            "first_retry": sc.client.foreground_retry_llm,
            "later_retry": sc.client.retry_llm,
            "gated": self.cfg.adaptive == "gate",
        }

    # -- one instant -----------------------------------------------------------------
    def instant(self, t: int, items: list[Item]) -> None:
        """Handle every item due at ``t`` (and what they cause at ``t``)."""
        self.now = t
        cur = items
        while cur:
            cur.sort(key=_item_key)  # the request log's order does not depend on the driver
            cur = self._round(t, cur)

    def _round(self, t: int, cur: list[Item]) -> list[Item]:
        """One round of an instant (``cur`` in canonical order); the next round's items."""
        nxt: list[Item] = []
        per_run: dict[int, list[RunEvent]] = {}
        srv: list[ServerEvent] = []
        for kind, r, ev in cur:
            if kind == "srv":
                srv.append(ev)
            elif kind == "run":
                per_run.setdefault(r, []).append(ev)
            elif kind == "gate":
                if ev is not None and self.gates is not None and self.gates.expire(ev):
                    per_run.setdefault(r, []).append(Answer(ev, 504, 0))
            else:
                got = self._answer(t, ev)
                if got is not None:
                    per_run.setdefault(r, []).append(got)
        sends: list[tuple[tuple[int, ...], Send]] = []
        for r in sorted(per_run):
            for cmd in self.machines[r].feed(t, per_run[r]):
                self._run_command(t, r, cmd, sends, srv, nxt)
        if srv:
            for sc in self.server.feed(t, srv):
                self._server_command(t, sc, nxt)
        sends.sort(key=lambda s: s[0])
        if self.gates is not None:
            sends = self._through_gates(t, sends, nxt)
        for _, send in sends:
            self._decide(t, send, nxt)
        return nxt

    def _through_gates(
        self, t: int, sends: list[tuple[tuple[int, ...], Send]], nxt: list[Item]
    ) -> list[tuple[tuple[int, ...], Send]]:
        """The key-wide gates (:mod:`sim.run_gate`): the round's requests queue at their
        key's gate; what passes now is decided, in the same content-first order."""
        gates = self.gates
        assert gates is not None
        for _, send in sends:
            q = send.req
            expiry = gates.offer(t, q, send.key, send.deadline_us)
            if expiry is not None:
                self._at(t, expiry, ("gate", q.run, q), nxt)
        admitted, wakes = gates.pump(t)
        for at in wakes:
            self.schedule(at, ("gate", -1, None))
        out: list[tuple[tuple[int, ...], Send]] = []
        for a in admitted:
            q = ReqId(*a.req)
            out.append(
                (
                    (q.step, self.base + q.run, q.order, q.clip, q.attempt),
                    Send(q, a.key, a.deadline_us, t),
                )
            )
        out.sort(key=lambda s: s[0])
        return out

    def _at(self, t: int, at: int, item: Item, nxt: list[Item]) -> None:
        if at <= t:
            nxt.append(item)
        else:
            self.schedule(at, item)

    def _run_command(
        self,
        t: int,
        r: int,
        cmd: Any,
        sends: list[tuple[tuple[int, ...], Send]],
        srv: list[ServerEvent],
        nxt: list[Item],
    ) -> None:
        if isinstance(cmd, Send):
            q = cmd.req
            sends.append(((q.step, self.base + r, q.order, q.clip, q.attempt), cmd))
        elif isinstance(cmd, SetTimer):
            self._at(t, cmd.at_us, ("run", r, Timer(cmd.tag)), nxt)
        elif isinstance(cmd, Cancel):
            if self.gates is not None and self.gates.cancel(cmd.req):
                return  # still waiting at its gate: it never reached the provider
            f = self.flight.pop(cmd.req, None)
            if f is not None:
                if f.llm and self.free_llm:
                    _free_slot(f.ks, f.end_us, t)
                self._log(cmd.req, f, CANCELLED, 0, t)
        elif isinstance(cmd, Released):
            srv.append(Ended(r, cmd.phase))

    def _server_command(self, t: int, cmd: Any, nxt: list[Item]) -> None:
        if isinstance(cmd, Claim):
            nxt.append(("run", cmd.run, Claimed(cmd.run)))
        elif isinstance(cmd, Refuse):
            if not cmd.confirm:
                self.refused.add(cmd.run)
        elif isinstance(cmd, SetServerTimer):
            self._at(t, cmd.at_us, ("srv", cmd.tag.run, cmd.tag), nxt)

    def _decide(self, t: int, send: Send, nxt: list[Item]) -> None:
        q = send.req
        cid = self.base + q.run
        prov = self.provider
        if q.step == Step.MEDIA:
            status, lat = self._media(cid, q)
            ks = None
        else:
            dec = prov.decide(Call(cid, q.step, q.order, q.clip, q.attempt, send.key), t)
            status, lat = dec.status, dec.latency_us
            ks = prov.key_state(q.step, send.key)
        end = t + lat
        self.flight[q] = _Flight(cid, t, ks, end, q.step not in (Step.TTS, Step.MEDIA))
        seen = -1 if status in (RESET, TRUNCATED) else status
        if end > send.deadline_us:
            item: Item = ("ans", q.run, (Answer(q, 504, 0), True))
            self._at(t, send.deadline_us, item, nxt)
        else:
            self._at(t, end, ("ans", q.run, (Answer(q, seen, status), False)), nxt)

    def _media(self, cid: int, q: ReqId) -> tuple[int, int]:
        """A media item's (status, latency): keyed draws, no key's admission."""
        d, row = self.provider.draws_for(cid)
        col = d.column(q.step, q.order, q.clip)
        lat = int(d.latency_us(q.step, q.attempt)[row, col])
        u = float(d.fault_u(q.step, q.attempt, KIND_FAULT)[row, col])
        return (500 if u < self.cfg.settings.media_p_fail else 200), lat

    def _answer(self, t: int, ev: tuple[Answer, bool]) -> Answer | None:
        ans, give_up = ev
        f = self.flight.pop(ans.req, None)
        if f is None:
            return None  # cancelled
        if give_up and f.llm and self.free_llm:
            _free_slot(f.ks, f.end_us, t)
        if self.gates is not None:
            self.gates.ended(t, ans.req, ans.status, ans.provider_status)
        self._log(ans.req, f, ans.status, ans.provider_status, t)
        return ans

    def _log(self, q: ReqId, f: _Flight, status: int, pstatus: int, t: int) -> None:
        if self.cfg.keep_log:
            self.log.append((f.t_us, q.run, q.step, q.order, q.clip, q.attempt, status, pstatus, t))
