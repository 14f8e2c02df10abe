"""The fast generation-runs engine: an integer-µs event loop on a heap, the same loop rules
(:class:`sim.run_machine.RunMachine`'s methods), the same server machine and the same key
admission (:class:`sim.provider.KeyState`) as the SimPy model, without the generic event and
command objects. :func:`sim.runs.check_engines` proves the two equal request for request.

What the fast engine does differently (the results are the same):

* **calls without commands**: each run is a :class:`RunMachine` whose calls are
  :class:`_FastCall` (``RunMachine.make_call``): a call hands its request straight to the
  instant's list of requests, its retry sleep straight to the heap, its cancel straight to the
  world, and takes its answer without an :class:`~sim.run_machine.Answer` object. The retry
  rule is :class:`~sim.rules.CallMachine`'s for an ungated call (no Retry-After: the runs'
  client ignores it), with the same jitter draws and delays (``RetryPolicy.delay_us``);
* **one round as the reference's**: answers of the instant logged in canonical order, runs
  fed in ascending order (each run's events in :func:`~sim.run_machine.event_key` order),
  then the server, then the round's requests decided in ``arrival_order`` (content first); a
  request cancelled in the feed that made it never reaches the provider;
* **draws in blocks**: the keyed draws of the cell's runs come from one
  :class:`~sim.runs_world.RunDraws` per block of :attr:`FastWorld.chunk` runs (one PCG64 per
  stream and block instead of one per run; the same numbers, as a classroom's block of a
  stream does not depend on the others), read with ``ndarray.item``; at most
  :attr:`FastWorld.keep` blocks are kept (the oldest is dropped, and drawn again if needed),
  so the draws' memory stays flat however many runs the cell has;
* **admission without the generic provider**: on a key with no token buckets, per-second
  window, shared capacity, issue-21 limits or forced statuses, a request is decided by its
  :meth:`KeyState.decide <sim.provider.KeyState.decide>` directly with the block's draws —
  on a key whose only limit is its in-flight cap, :meth:`KeyState.over_cap
  <sim.provider.KeyState.over_cap>` first (a full key reads no draws), then
  :meth:`KeyState.admit_open <sim.provider.KeyState.admit_open>`, the two halves of
  ``decide_open`` (other keys go through :meth:`Provider.decide
  <sim.provider.Provider.decide>`); the provider's own request log is not kept (the world's
  :attr:`log` is);
* **a heap in canonical order**: an item is pushed under ``(time, its canonical key, seq)``
  so the items of one instant leave the heap already in the order the reference sorts them
  into; a round of one item (most rounds: an answer) skips the grouping by run.

Where its time goes (issue 24; py-spy on ``bench``'s 200-run cell, ~10 µs per request): about
half in this module's own loop and calls, 30 % in the shared machines (``run_machine``,
``provider``, ``rules``, ``run_server``), the rest setting up the world, the draws and the
records. The SimPy model runs the same machines, so a Python driver of them stays under
~14x SimPy (4.3x / 0.30) even with a loop and set-up that cost nothing.
"""

from __future__ import annotations

import heapq
import itertools
from collections import OrderedDict
from collections.abc import Callable
from operator import itemgetter
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .draws import KIND_5XX, KIND_429, KIND_FAULT, KIND_JITTER, Draws
from .provider import RESET, TRUNCATED, Call, KeyState
from .rules import Outcome, RetryPolicy, Step, outcome_of
from .run_machine import (
    LLM_KEY,
    MEDIA_KEY,
    TTS_KEY,
    Done,
    Released,
    ReqId,
    RunCommand,
    RunMachine,
    RunSpec,
    _Call,
)
from .run_server import Claim, Ended, Refuse, ServerEvent, SetServerTimer, server_event_key
from .runs_config import RunsConfig
from .runs_world import CANCELLED, Item, RunDraws, RunProvider, RunsWorld, _free_slot
from .scenario import Scenario

__all__ = ["FastWorld", "run_fast"]

_TTS = int(Step.TTS)
_MEDIA = int(Step.MEDIA)
_ANS, _TIM, _CLM, _SRV = 0, 1, 2, 3  # item kinds: an answer, a run's timer, a claim, server
_KEYS = {_TTS: TTS_KEY, _MEDIA: MEDIA_KEY}
Req = tuple[int, int, int, int, int]  # (step, run, order, clip, attempt), like ReqId
FItem = tuple[Any, ...]
Keyed = tuple[tuple[int, ...], FItem]
_Table = NDArray[Any]  # a stream of a block of draws (runs, columns)
_Rows = tuple[_Table, _Table | None, _Table | None, _Table | None]


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


class _FastCall(_Call):
    """A step call of a :class:`_FastRun` (see the module docstring); the same requests,
    retries and counts as :class:`~sim.run_machine._Call` with its ``CallMachine``."""

    __slots__ = ("attempts", "fm", "policy", "used")

    def __init__(
        self,
        m: _FastRun,
        base: ReqId,
        policy: RetryPolicy,
        deadline_us: int,
        done: Done,
        step_deadline_us: int | None = None,
    ) -> None:
        self.m = m
        self.fm = m  # the same run, typed as the fast engine's
        self.base = base
        self.policy = policy
        self.deadline_us = deadline_us
        self.step_deadline_us = step_deadline_us
        self.done = done
        self.wait = None
        self.attempts = 0
        self.used = 0

    def send(self) -> None:
        m = self.fm
        step, run, order, clip, _ = self.base
        n = self.attempts
        req = (step, run, order, clip, n)
        dl = m.t + self.deadline_us
        sdl = self.step_deadline_us
        if sdl is not None and sdl < dl:
            dl = sdl
        m.inflight[req] = self  # type: ignore[index]
        m.w.sends.append((req, dl))  # sorted by req: the arrival order (cid = base + run)

    def on_answer(self, req: ReqId, status: int, provider_status: int) -> None:
        m = self.fm
        counts = m.record.counts
        if status == 200:
            self.attempts += 1
            counts.requests += 1
            self.done(True, 200)
            return
        seen = 500 if status < 0 else (504 if status == 0 else status)
        if seen == 504 and provider_status == 0:
            counts.timeouts += 1
        else:
            counts.count(seen)
        index = self.attempts
        self.attempts += 1
        sdl = self.step_deadline_us
        if (
            outcome_of(seen) is Outcome.CLIENT_ERROR
            or self.used >= self.policy.max_retries
            or (sdl is not None and m.t >= sdl)
        ):
            self.done(False, seen)
            return
        step, run, order, clip, _ = self.base
        u = m.w.jitter_u(step, run, order, clip, index)
        wait_us = self.policy.delay_us(self.used, None, u)
        self.used += 1
        counts.retries += 1
        if wait_us == 0:
            self.send()
            return
        tag = (step, run, order, clip, self.attempts)
        self.wait = tag  # type: ignore[assignment]
        m.timers[tag] = self  # type: ignore[index]
        m.w.at(m.t + wait_us, (1, *tag, 1), (_TIM, run, tag))

    def abort(self) -> None:
        m = self.fm
        for req, call in list(m.inflight.items()):
            if call is self:
                del m.inflight[req]
                m.w.cancel(req)
        if self.wait is not None:
            m.timers.pop(self.wait, None)
            self.wait = None


class _Released:
    """A :class:`_FastRun`'s ``out``: the only command its loop still emits is
    :class:`~sim.run_machine.Released`, which becomes the server's :class:`Ended` now."""

    __slots__ = ("w",)

    def __init__(self, w: FastWorld) -> None:
        self.w = w

    def append(self, cmd: RunCommand) -> None:
        assert isinstance(cmd, Released)
        self.w.srv.append(Ended(cmd.run, cmd.phase))


class _FastRun(RunMachine):
    """A run whose calls are :class:`_FastCall`; the world feeds it event by event."""

    def __init__(self, spec: RunSpec, jitter: Callable[[Req], float], w: FastWorld) -> None:
        super().__init__(spec, jitter)
        self.w = w
        self.cid = w.base + spec.run
        self.out = _Released(w)  # type: ignore[assignment]

    def make_call(
        self,
        base: ReqId,
        policy: RetryPolicy,
        deadline_us: int,
        done: Done,
        step_deadline_us: int | None = None,
    ) -> _Call:
        return _FastCall(self, base, policy, deadline_us, done, step_deadline_us)


class _BlockProvider(RunProvider):
    """A :class:`RunProvider` whose draws for the cell's runs come in blocks (FIFO-bounded);
    other classrooms' as usual."""

    def __init__(self, w: FastWorld, n: int) -> None:
        super().__init__(w.sc, w.cfg.settings, w.seed, keep_log=False)
        self.w = w
        self.n = n
        self.blocks: OrderedDict[int, RunDraws] = OrderedDict()

    def block(self, b: int) -> RunDraws:
        d = self.blocks.get(b)
        if d is None:
            w = self.w
            lo = w.base + b * w.chunk
            hi = w.base + min(self.n, (b + 1) * w.chunk)
            d = self.blocks[b] = RunDraws(self.scenario, self.settings, self.seed, lo, hi)
            w._lists[b] = {}
            if len(self.blocks) > w.keep:
                old, _ = self.blocks.popitem(last=False)
                del w._lists[old]
        return d

    def draws_for(self, cid: int) -> tuple[Draws, int]:
        r = cid - self.w.base
        if 0 <= r < self.n:
            b, row = divmod(r, self.w.chunk)
            return self.block(b), row
        return super().draws_for(cid)


class FastWorld(RunsWorld):
    """The fast engine's world (see the module docstring); :meth:`run` runs the cell."""

    chunk = 256  # runs per block of draws
    keep = 8  # blocks of draws kept at once (memory: ~8 × the streams of 256 runs)

    def __init__(self, sc: Scenario, cfg: RunsConfig, seed: int) -> None:
        self.heap: list[tuple[Any, ...]] = []
        self._seq = itertools.count()
        self._lists: dict[int, dict[tuple[int, ...], Any]] = {}  # per block: its arrays, rows
        self.sends: list[tuple[Req, int]] = []
        self.srv: list[ServerEvent] = []
        self.nxt: list[Keyed] = []
        self.flights: dict[Req, tuple[int, KeyState | None, int, bool]] = {}
        super().__init__(sc, cfg, seed, self._push)
        prov = self.provider
        self.keys = (prov.key_state(0, LLM_KEY), prov.key_state(_TTS, TTS_KEY))
        q = (self.sc.quota_llm, self.sc.quota_tts)
        self.lean = (_lean(prov, self.keys[0]), _lean(prov, self.keys[1]))
        # KeyState.decide, or (a key whose only limit is the cap, asked first) decide_open's rest
        self.answer = tuple(k.admit_open if k.capped else k.decide for k in self.keys)
        self.uses = tuple((x.p_429 > 0, x.p_5xx > 0, x.faulty) for x in q)
        self.kmax = max(1, self.sc.max_clips)  # as Draws lays out a step's columns
        self.n_out = self.sc.outlines
        self.fixed_u = self.sc.client.jitter_u
        self.keep_log = cfg.keep_log

    # -- construction (RunsWorld's hooks) ------------------------------------------------
    def _new_provider(self, n: int) -> RunProvider:
        return _BlockProvider(self, n)

    def block(self, b: int) -> RunDraws:
        """Block ``b``'s draws (runs ``b * chunk`` onwards), made (again) when not kept."""
        prov = self.provider
        assert isinstance(prov, _BlockProvider)
        return prov.block(b)

    def playback_table_us(self) -> NDArray[np.int64]:
        """Every run's scenes' playback times, (runs, N) (:meth:`Draws.playback_table_us`)."""
        n, c = len(self.machines), self.chunk
        lo, st = self.base, self.cfg.settings
        parts = [
            RunDraws(self.sc, st, self.seed, lo + i, lo + min(n, i + c)).playback_table_us()
            for i in range(0, n, c)
        ]
        return np.concatenate(parts)

    def _machine(self, r: int) -> RunMachine:
        return _FastRun(self._spec(r), self._jitter(r), self)

    def _clips(self, r: int) -> tuple[int, ...]:
        """:meth:`RunsWorld._clips` from the block's rows (the same integers)."""
        b, row = divmod(r, self.chunk)
        return tuple(self.block(b).speeches_row(row))

    def _jitter(self, r: int) -> Callable[[Req], float]:
        """Run ``r``'s retry jitter of an attempt ``(step, run, order, clip, attempt)``."""
        u = self.jitter_u
        return lambda q: u(q[0], r, q[2], q[3], q[4])

    def jitter_u(self, step: int, r: int, order: int, clip: int, attempt: int) -> float:
        """The retry jitter after ``attempt`` of run ``r``'s call (the profile's fixed ``u``,
        else the keyed draw: :func:`sim.draws.client_jitter_u`, read from the block)."""
        fixed = self.fixed_u
        if fixed is not None:
            return fixed
        b, row = divmod(r, self.chunk)
        lists = self._lists.get(b)
        got = None if lists is None else lists.get((step, attempt, KIND_JITTER))
        if got is None:
            got = self._table(b, step, attempt, KIND_JITTER)
        u: float = got.item(row, self._column(step, order, clip))
        return u

    def _column(self, step: int, order: int, clip: int) -> int:
        """:meth:`RunDraws.column <sim.runs_world.RunDraws.column>` of a call."""
        if step == _MEDIA:
            return order
        col = order % self.n_out
        return col * self.kmax + clip % self.kmax if step == _TTS else col

    def _push(self, at: int, item: Item) -> None:
        """The reference's items: only the arrivals (server events) come this way."""
        kind, _r, ev = item
        assert kind == "srv"
        key = (0, *server_event_key(ev))
        heapq.heappush(self.heap, (at, key, next(self._seq), (_SRV, ev)))

    def _table(self, b: int, step: int, attempt: int, kind: int) -> _Table:
        """A stream of block ``b`` (``kind`` -1: the latencies in µs)."""
        d = self.block(b)
        lists = self._lists[b]
        key = (step, attempt, kind)
        got = lists.get(key)
        if got is None:
            arr = d.latency_us(step, attempt) if kind < 0 else d.fault_u(step, attempt, kind)
            got = lists[key] = arr
        return got  # type: ignore[no-any-return]

    def _rows_of(self, b: int, step: int, attempt: int, tts: bool) -> _Rows:
        """The lists an attempt's admission reads in block ``b``: latencies, and the 429 /
        5xx / fault uniforms where the key can draw them (``None``: it cannot; ``u`` = 1)."""
        p429, p5xx, faulty = self.uses[tts]
        t = self._table
        rows = (
            t(b, step, attempt, -1),
            t(b, step, attempt, KIND_429) if p429 else None,
            t(b, step, attempt, KIND_5XX) if p5xx else None,
            t(b, step, attempt, KIND_FAULT) if faulty else None,
        )
        self._lists[b][(step, attempt)] = rows
        return rows

    # -- the loop ------------------------------------------------------------------------
    def at(self, at: int, key: tuple[int, ...], item: FItem) -> None:
        """Item ``item`` (canonical ``key``) at ``at``: this instant's next round, or later."""
        if at <= self.now:
            self.nxt.append((key, item))
        else:
            heapq.heappush(self.heap, (at, key, next(self._seq), item))

    def run(self) -> None:
        """Every instant in time order, in rounds (the module docstring)."""
        heap = self.heap
        pop = heapq.heappop
        one, rnd = self._one_item, self._fast_round
        while heap:
            e = pop(heap)
            t = e[0]
            self.now = t
            if heap and heap[0][0] == t:
                cur: list[Keyed] = [(e[1], e[3])]
                while heap and heap[0][0] == t:
                    e = pop(heap)
                    cur.append((e[1], e[3]))
                cur = rnd(t, cur)
            else:  # most instants: one item
                cur = one(t, e[1], e[3])
            while cur:
                if len(cur) == 1:  # an immediate answer (a 429), a claim
                    cur = one(t, *cur[0])
                else:
                    cur.sort(key=itemgetter(0))
                    cur = rnd(t, cur)

    def _one_item(self, t: int, key: tuple[int, ...], item: FItem) -> list[Keyed]:
        """A round of one item (:meth:`_fast_round` of ``[(key, item)]``, in short)."""
        nxt: list[Keyed] = []
        self.nxt = nxt
        srv, sends = self.srv, self.sends  # empty between rounds
        kind = item[0]
        if kind == _SRV:
            srv.append(item[1])
        elif kind != _ANS or self._answered(t, item):  # an answer cancelled before: dropped
            m = self.machines[item[1]]
            m.t = t
            _deliver(m, item)
        if srv:
            self._serve(t)
        if sends:
            self._decide_sends(t)
        return nxt

    def _serve(self, t: int) -> None:
        """The round's server events to the server machine; its commands done."""
        cmds = self.server.feed(t, self.srv)
        self.srv.clear()
        for cmd in cmds:
            self._server_cmd(t, cmd)

    def _decide_sends(self, t: int) -> None:
        """The round's requests decided in arrival order (sorted by request: content first)."""
        sends = self.sends
        if len(sends) > 1:
            sends.sort(key=itemgetter(0))
        decide = self._decide_req
        for req, dl in sends:
            decide(t, req, dl)
        sends.clear()

    def _fast_round(self, t: int, cur: list[Keyed]) -> list[Keyed]:
        """One round (``cur`` in canonical order; a round of one item is :meth:`_one_item`'s);
        the next round's items."""
        nxt: list[Keyed] = []
        self.nxt = nxt
        self._feed_all(t, cur)
        if self.srv:
            self._serve(t)
        if self.sends:
            self._decide_sends(t)
        return nxt

    def _feed_all(self, t: int, cur: list[Keyed]) -> None:
        """A round's items: answers resolved in canonical order, then each run its events
        (runs ascending, each run's in canonical order), server events gathered."""
        srv = self.srv
        by_run: dict[int, list[FItem]] = {}
        for _, item in cur:
            kind = item[0]
            if kind == _SRV:
                srv.append(item[1])
                continue
            if kind == _ANS and not self._answered(t, item):
                continue
            got = by_run.get(item[1])
            if got is None:
                by_run[item[1]] = [item]
            else:
                got.append(item)
        machines = self.machines
        for r in sorted(by_run) if len(by_run) > 1 else by_run:
            m = machines[r]
            m.t = t
            for item in by_run[r]:
                _deliver(m, item)

    def _answered(self, t: int, item: FItem) -> bool:
        """An answer's request resolves (logged); False when it was cancelled before."""
        req = item[2]
        f = self.flights.pop(req, None)
        if f is None:
            return False
        if item[5] and f[3] and self.free_llm:
            _free_slot(f[1], f[2], t)
        if self.keep_log:
            self.log.append((f[0], req[1], req[0], req[2], req[3], req[4], item[3], item[4], t))
        return True

    def cancel(self, req: Req) -> None:
        """A call's Cancel: an in-flight request is aborted (logged); one sent in this very
        feed never reaches the provider."""
        f = self.flights.pop(req, None)
        if f is None:
            sends = self.sends
            for i, s in enumerate(sends):
                if s[0] == req:
                    del sends[i]
                    return
            return
        t = self.now
        if f[3] and self.free_llm:
            _free_slot(f[1], f[2], t)
        if self.cfg.keep_log:
            self.log.append((f[0], req[1], req[0], req[2], req[3], req[4], CANCELLED, 0, t))

    def _server_cmd(self, t: int, cmd: Any) -> None:
        if isinstance(cmd, Claim):
            self.nxt.append(((1, -1, cmd.run, 0, 0, 0, 0), (_CLM, cmd.run)))
        elif isinstance(cmd, Refuse):
            if not cmd.confirm:
                self.refused.add(cmd.run)
        elif isinstance(cmd, SetServerTimer):
            self.at(cmd.at_us, (0, *server_event_key(cmd.tag)), (_SRV, cmd.tag))

    def _decide_req(self, t: int, req: Req, dl: int) -> None:
        step, r, order, clip, attempt = req
        tts = step == _TTS
        ks: KeyState | None
        if step == _MEDIA:
            status, lat = self._media(self.base + r, ReqId(*req))
            ks = None
        elif self.lean[tts]:
            ks = self.keys[tts]
            dec = ks.over_cap(t) if ks.capped else None  # a full key reads no draws
            if dec is None:
                col = self._column(step, order, clip)
                b, row = divmod(r, self.chunk)
                lists = self._lists.get(b)
                rows = None if lists is None else lists.get((step, attempt))
                if rows is None:
                    rows = self._rows_of(b, step, attempt, tts)
                lat_rows, r429, r5xx, rf = rows
                dec = self.answer[tts](
                    t,
                    lat_rows.item(row, col),
                    1.0 if r429 is None else r429.item(row, col),
                    1.0 if r5xx is None else r5xx.item(row, col),
                    1.0 if rf is None else rf.item(row, col),
                )
            status, lat = dec[0], dec[1]
        else:
            key = _KEYS.get(step, LLM_KEY)
            dec = self.provider.decide(Call(self.base + r, step, order, clip, attempt, key), t)
            status, lat = dec.status, dec.latency_us
            ks = self.provider.key_state(step, key)
        end = t + lat
        self.flights[req] = (t, ks, end, step != _TTS and step != _MEDIA)
        if end > dl:
            end, item = dl, (_ANS, r, req, 504, 0, True)
        else:
            seen = -1 if status in (RESET, TRUNCATED) else status
            item = (_ANS, r, req, seen, status, False)
        akey = (1, step, r, order, clip, attempt, 0)  # the answer's canonical key
        if end <= t:
            self.nxt.append((akey, item))
        else:
            heapq.heappush(self.heap, (end, akey, next(self._seq), item))


def _deliver(m: RunMachine, item: FItem) -> None:
    """One event to run ``m`` (its clock already at the instant): an answer, a timer, a
    claim — as :meth:`RunMachine.feed` handles each."""
    kind = item[0]
    if kind == _ANS:
        call = m.inflight.pop(item[2], None)
        if call is not None:
            call.on_answer(item[2], item[3], item[4])
    elif kind == _TIM:
        call = m.timers.pop(item[2], None)
        if call is not None:
            call.on_timer()
    else:
        m._claimed()  # a Claimed event (the run's first at this instant)


def run_fast(sc: Scenario, cfg: RunsConfig, seed: int) -> FastWorld:
    """Run a deployment to its end; the world holds the machines, records and log."""
    w = FastWorld(sc, cfg, seed)
    w.run()
    return w
