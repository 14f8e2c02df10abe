"""The fast generation-runs engine: an integer-µs event loop on a heap driving the same
machines (:mod:`sim.run_machine`, :mod:`sim.run_server`) and key admission
(:class:`sim.provider.KeyState`) as the SimPy model, with a lean path where the reference
world (:class:`sim.runs_world.RunsWorld`) is generic. :func:`sim.runs.check_engines` proves
the two equal request for request.

What the fast engine does differently (the results are the same):

* **draws in one block**: the keyed draws of every run of the cell come from one
  :class:`~sim.runs_world.RunDraws` over classrooms ``base .. base + runs`` (one PCG64 per
  stream for the whole cell instead of one per run; the same numbers, as a classroom's block
  of a stream does not depend on the others), read as Python lists;
* **admission without the generic provider**: on a key with no token buckets, per-second
  window, shared capacity, issue 21 limits or forced statuses, a request is decided by its
  :meth:`KeyState.decide <sim.provider.KeyState.decide>` directly with the listed draws
  (other keys go through :meth:`Provider.decide <sim.provider.Provider.decide>`); the
  provider's own request log is not kept (the world's :attr:`log` is);
* **a heap in canonical order**: an item is pushed under ``(time, its canonical key, seq)``
  so the items of one instant leave the heap already in the order the reference sorts them
  into, and the first round of an instant needs no sort.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from operator import itemgetter
from typing import Any

from .draws import KIND_5XX, KIND_429, KIND_FAULT, KIND_JITTER
from .provider import RESET, TRUNCATED, KeyState
from .rules import Step
from .run_machine import LLM_KEY, TTS_KEY, Answer, ReqId, Send
from .run_server import ServerEvent
from .runs_config import RunsConfig
from .runs_world import Item, RunDraws, RunProvider, RunsWorld, _Flight, _item_key
from .scenario import Scenario

__all__ = ["FastWorld", "run_fast"]

_TTS = int(Step.TTS)
_MEDIA = int(Step.MEDIA)


def _lean(prov: RunProvider, ks: KeyState) -> bool:
    """Whether ``ks.decide`` alone decides this key's requests (nothing else in
    :meth:`Provider.decide` applies to it)."""
    return (
        ks.buckets is None
        and ks.window is None
        and ks.core is None
        and getattr(ks, "extras", None) is None
        and not prov.force_status
    )


class FastWorld(RunsWorld):
    """A :class:`RunsWorld` with the fast engine's lean paths (see the module docstring)."""

    def __init__(self, sc: Scenario, cfg: RunsConfig, seed: int) -> None:
        self.heap: list[tuple[Any, ...]] = []
        self._seq = itertools.count()
        self._lists: dict[tuple[int, int, int], list[list[Any]]] = {}
        super().__init__(sc, cfg, seed, self._push)
        prov = self.provider
        self.keys = (prov.key_state(0, LLM_KEY), prov.key_state(_TTS, TTS_KEY))
        q = (self.sc.quota_llm, self.sc.quota_tts)
        self.lean = (_lean(prov, self.keys[0]), _lean(prov, self.keys[1]))
        self.uses = tuple((x.p_429 > 0, x.p_5xx > 0, x.faulty) for x in q)
        self.kmax = self.block.kmax
        self.n_out = self.block.n

    def _new_provider(self, n: int) -> RunProvider:
        self.block = RunDraws(self.sc, self.cfg.settings, self.seed, self.base, self.base + n)
        return RunProvider(self.sc, self.cfg.settings, self.seed, draws=self.block, keep_log=False)

    def _jitter(self, r: int) -> Callable[[ReqId], float]:
        fixed = self.sc.client.jitter_u
        if fixed is not None:
            return lambda q: fixed
        table, column = self._table, self.block.column

        def jitter(q: ReqId) -> float:
            u: float = table(q.step, q.attempt, KIND_JITTER)[r][column(q.step, q.order, q.clip)]
            return u

        return jitter

    def _round(self, t: int, cur: list[Item]) -> list[Item]:
        """:meth:`RunsWorld._round` for the common round of one item (most instants: one
        answer); several items go the reference's way."""
        if len(cur) != 1:
            return super()._round(t, cur)
        kind, r, ev = cur[0]
        nxt: list[Item] = []
        srv: list[ServerEvent] = []
        sends: list[tuple[tuple[int, ...], Send]] = []
        if kind == "srv":
            srv.append(ev)
        else:
            if kind == "ans":
                ev = self._answer(t, ev)
                if ev is None:
                    return nxt
            for cmd in self.machines[r].feed(t, (ev,)):
                self._run_command(t, r, cmd, sends, srv, nxt)
        if srv:
            for sc in self.server.feed(t, srv):
                self._server_command(t, sc, nxt)
        if len(sends) > 1:
            sends.sort(key=itemgetter(0))
        for _, send in sends:
            self._decide(t, send, nxt)
        return nxt

    def _push(self, at: int, item: Item) -> None:
        heapq.heappush(self.heap, (at, _item_key(item), next(self._seq), item))

    def _table(self, step: int, attempt: int, kind: int) -> list[list[Any]]:
        """A stream of the block as lists (``kind`` -1: the latencies in µs)."""
        key = (step, attempt, kind)
        got = self._lists.get(key)
        if got is None:
            d = self.block
            arr = d.latency_us(step, attempt) if kind < 0 else d.fault_u(step, attempt, kind)
            got = self._lists[key] = arr.tolist()
        return got

    def _decide(self, t: int, send: Send, nxt: list[Item]) -> None:
        q = send.req
        step = q.step
        tts = step == _TTS
        if step == _MEDIA or not self.lean[tts]:
            super()._decide(t, send, nxt)
            return
        r, attempt = q.run, q.attempt
        col = q.order % self.n_out
        if tts:
            col = col * self.kmax + q.clip % self.kmax
        lat = self._table(step, attempt, -1)[r][col]
        p429, p5xx, faulty = self.uses[tts]
        u429 = self._table(step, attempt, KIND_429)[r][col] if p429 else 1.0
        u5xx = self._table(step, attempt, KIND_5XX)[r][col] if p5xx else 1.0
        uf = self._table(step, attempt, KIND_FAULT)[r][col] if faulty else 1.0
        ks = self.keys[tts]
        status, lat = ks.decide(t, lat, u429, u5xx, uf)[:2]
        end = t + lat
        self.flight[q] = _Flight(self.base + r, t, ks, end, not tts)
        if end > send.deadline_us:
            at, item = send.deadline_us, ("ans", r, (Answer(q, 504, 0), True))
        else:
            seen = -1 if status in (RESET, TRUNCATED) else status
            at, item = end, ("ans", r, (Answer(q, seen, status), False))
        if at <= t:
            nxt.append(item)
        else:  # the key _item_key gives an answer
            key = (1, q[0], r, q[2], q[3], attempt, 0)
            heapq.heappush(self.heap, (at, key, next(self._seq), item))

    def run(self) -> None:
        """Every instant in time order; an instant's first round comes off the heap in
        canonical order (no sort), later rounds are sorted as the reference sorts them."""
        heap = self.heap
        pop = heapq.heappop
        rnd = self._round
        while heap:
            t = heap[0][0]
            items: list[Item] = []
            while heap and heap[0][0] == t:
                items.append(pop(heap)[3])
            self.now = t
            cur = rnd(t, items)
            while cur:
                cur.sort(key=_item_key)
                cur = rnd(t, cur)


def run_fast(sc: Scenario, cfg: RunsConfig, seed: int) -> FastWorld:
    """Run a deployment to its end; the world holds the machines, records and log."""
    w = FastWorld(sc, cfg, seed)
    w.run()
    return w
