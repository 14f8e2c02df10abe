"""The fast engine with the key-wide gate (``--adaptive gate``, :mod:`sim.run_gate`).

:class:`GateFastWorld` is :class:`~sim.runs_fast.FastWorld` with the reference's gate hooks
(:meth:`sim.runs_world.RunsWorld._through_gates`): a round's requests queue at their key's
:class:`~sim.run_gate.RunGates` and only what passes is decided at the provider; an answer
tells the gate and frees its slot (in canonical order); a pause withdraws a waiting request;
an outline still waiting at its step deadline answers 504. Its calls re-queue a 429 without
spending the budget, as :class:`~sim.rules.CallMachine` does for a gated call.
:func:`sim.runs.check_engines` proves it equal to the SimPy model on gate cells.
"""

from __future__ import annotations

from operator import itemgetter

from .rules import MAX_429_WAITS
from .run_gate import RunGates
from .run_machine import LLM_KEY, Done, ReqId, RunMachine, RunSpec, _Call
from .run_server import ServerEvent
from .runs_config import RunsConfig
from .runs_fast import _ANS, _KEYS, FastWorld, FItem, Keyed, Req, _FastCall, _FastRun
from .scenario import Scenario

__all__ = ["GateFastWorld", "run_fast_gate"]

_GATE = 4  # an item kind: an outline's expiry at its gate, or a hold's end


class _GatedFastCall(_FastCall):
    """A :class:`_FastCall` whose 429s re-queue (``CallMachine(gated=True)``)."""

    __slots__ = ("waits",)

    def __init__(self, *args: object, **kw: object) -> None:
        super().__init__(*args, **kw)  # type: ignore[arg-type]
        self.waits = 0

    def on_answer(self, req: ReqId, status: int, provider_status: int) -> None:
        if provider_status != 429:
            super().on_answer(req, status, provider_status)
            return
        m = self.m
        counts = m.record.counts
        counts.count(status)
        self.attempts += 1
        self.waits += 1
        sdl = self.step_deadline_us
        if self.waits > MAX_429_WAITS or (sdl is not None and m.t >= sdl):
            self.done(False, status)
            return
        counts.retries += 1
        self.send()


class _GatedFastRun(_FastRun):
    def make_call(
        self,
        base: ReqId,
        policy: object,
        deadline_us: int,
        done: Done,
        step_deadline_us: int | None = None,
    ) -> _Call:
        return _GatedFastCall(self, base, policy, deadline_us, done, step_deadline_us)


class GateFastWorld(FastWorld):
    """The fast engine's world with the key-wide gates (see the module docstring)."""

    def __init__(self, sc: Scenario, cfg: RunsConfig, seed: int) -> None:
        self.expired: set[Req] = set()
        super().__init__(sc, cfg, seed)
        assert self.gates is not None

    def _machine(self, r: int) -> RunMachine:
        spec: RunSpec = self._spec(r)
        return _GatedFastRun(spec, self._jitter(r), self)

    def _fast_round(self, t: int, cur: list[Keyed]) -> list[Keyed]:
        """One round as :meth:`FastWorld._fast_round`, the requests through the gates."""
        nxt: list[Keyed] = []
        srv: list[ServerEvent] = []
        sends: list[tuple[Req, int]] = []
        self.nxt, self.srv, self.sends = nxt, srv, sends
        gates = self.gates
        assert gates is not None
        items: list[Keyed] = []
        for key, item in cur:
            if item[0] != _GATE:
                items.append((key, item))
            elif item[2] is not None and gates.expire(item[2]):
                req = item[2]
                self.expired.add(req)
                items.append((key, (_ANS, req[1], req, 504, 0, True)))
        self._feed_all(t, items)
        if srv:
            for cmd in self.server.feed(t, srv):
                self._server_cmd(t, cmd)
        self._gate_sends(t, gates, sends)
        return nxt

    def _one_item(self, t: int, key: tuple[int, ...], item: FItem) -> list[Keyed]:
        return self._fast_round(t, [(key, item)])

    def _gate_sends(self, t: int, gates: RunGates, sends: list[tuple[Req, int]]) -> None:
        if len(sends) > 1:
            sends.sort(key=itemgetter(0))
        for req, dl in sends:
            expiry = gates.offer(t, req, _KEYS.get(req[0], LLM_KEY), dl)
            if expiry is not None:
                self.at(expiry, (2, *req), (_GATE, req[1], req))
        admitted, wakes = gates.pump(t)
        for at in wakes:
            self.at(at, (3,), (_GATE, -1, None))
        base = self.base
        out = [((a.req[0], base + a.req[1], *a.req[2:]), a.req, a.deadline_us) for a in admitted]
        out.sort(key=itemgetter(0))
        for _, q, dl in out:
            self._decide_req(t, q, dl)  # type: ignore[arg-type]

    def _answered(self, t: int, item: FItem) -> bool:
        req = item[2]
        if req in self.expired:  # withdrawn at its gate: never reached the provider
            self.expired.discard(req)
            return True
        if not super()._answered(t, item):
            return False
        gates = self.gates
        assert gates is not None
        gates.ended(t, req, item[3], item[4])
        return True

    def cancel(self, req: Req) -> None:
        gates = self.gates
        assert gates is not None
        if not gates.cancel(req):
            super().cancel(req)


def run_fast_gate(sc: Scenario, cfg: RunsConfig, seed: int) -> GateFastWorld:
    """Run a gated deployment to its end on the fast engine."""
    w = GateFastWorld(sc, cfg, seed)
    w.run()
    return w
