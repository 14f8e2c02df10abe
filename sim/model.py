"""SimPy model of OpenMAIC's scene generation: serial, hybrid and pipelined.

The model mirrors :mod:`runner.world.pipeline` step for step (``content``, ``actions``,
``tts``) and shares the provider's admission rules (:mod:`sim.provider`) and
the keyed draws (:mod:`sim.draws`) with the fake server, so that a model run and
a real run with the same seed see the same latencies and the same quota
decisions. Time is kept in integer microseconds. The client's rules come from the
scenario's upstream profile (:mod:`sim.upstream`): the foreground first scene, where
retries live, the hand-off tie and the final status; every decision is made by
:mod:`sim.rules`, the model only waits.

Order at equal times (documented, and followed by the real pipeline too):
a request ending at ``t`` frees its slot for one arriving at ``t``; arrivals on
a limited key at one instant are decided together, after everything else at
that instant, in :func:`sim.provider.arrival_order`.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Generator, Sequence
from functools import partial
from heapq import heappush
from types import GeneratorType
from typing import Any, cast

import simpy
from simpy.events import NORMAL, URGENT, Event, EventPriority

from .config import RunConfig
from .draws import Draws, tenant_offsets_us
from .limiter import LOOP_DONE, GateCore, Rank, tell_gate
from .provider import PENDING, RESET, TRUNCATED, Call, Decision, Provider, new_call
from .rules import (
    Act,
    CallMachine,
    Counts,
    Mode,
    Policy,
    RetryPolicy,
    RunStatus,
    Step,
    after_attempt,
    content_slots,
    final_status,
    is_parallel,
    outcome_of,
    tts_concurrency,
)
from .scenario import Scenario
from .schema import RunResult, records_from_log
from .timeline import Timeline, run_result
from .upstream import ErrorShape, Handoff, route_status

__all__ = ["simulate_simpy"]

LLM_KEY = "llm-key"
TTS_KEY = "tts-key"
_BATCH_PRIORITY = EventPriority(NORMAL + 1)  # after every normal event of the instant
# The hot paths' constants as module globals: a Python 3.11 enum member read from its class
# costs a few hundred ns; the steps as plain ints (the same values, keys and log names)
_CONTENT, _ACTIONS, _TTS = int(Step.CONTENT), int(Step.ACTIONS), int(Step.TTS)
_DONE, _FAIL, _WAIT = Act.DONE, Act.FAIL, Act.WAIT
_TIMEOUT = Decision(0, 0, None, 0, "timeout")
_FGS = (False, True)  # a call's foreground flag, in the order of _World._first's pairs
# The model's shortcuts (decisions read from the draws' tables, a request inline, an event
# that would be the next one processed taken at once, sleeps without events): switched off
# (False), a world runs on SimPy's own loop, every event made and processed, every call a
# generator and every decision Provider.decide's: the same results (tests/sim/test_model_
# shortcuts.py). Not an option: a test's switch.
_SHORTCUTS = True


class _Batch(Event):
    """Fires after every normal event of its instant: decides the batched arrivals.

    The arriving processes yield the batch itself: its callbacks are :meth:`_World._flush`,
    then each process's resume in arrival order (``items[i]`` is the arrival of the
    process resumed by ``cbs[i + 1]``). The flush decides the arrivals in canonical order
    and keeps only the first one's resume, with its decision as the batch's value; every
    other process would get an event of its own scheduled with its decision, in that
    order (the order in which one event per arrival, scheduled by the flush, would resume
    them: nothing is due before the first of those events when the batch fires).
    :meth:`_World._rest` resumes them from the batch while each such event would be the
    next one processed, and schedules the rest as those events. An arrival that would be
    its batch's only one, with the batch the next event processed, is decided at once
    (:meth:`_World._alone`) and makes no batch."""

    _ok = True  # (class attributes: one store less per event)
    _value: Any = None

    def __init__(self, world: _World, key: bool) -> None:
        env = world.env
        self.env = env
        self.cbs: list[Callable[[Any], None]] = [world._flush]
        self.callbacks = self.cbs
        self.key = key
        self.items: list[Call] = []
        self.rest: list[tuple[Decision, int, Callable[[Any], None]]] = []  # :meth:`_World._rest`
        world.batches[key] = self  # the instant's batch of its key
        heappush(env._queue, (env._now, _BATCH_PRIORITY, next(env._eid), self))


class _Sleep(Event):
    """``env.timeout(delay)`` for a process to yield, without its checks (the same entry in
    the schedule: time, ``NORMAL``, the next event id). In :meth:`_Env.run_out` a task sleeps
    without one (:func:`_wait`)."""

    _ok = True  # (class attributes: one store less per event)
    _value: Any = None

    def __init__(self, env: simpy.Environment, delay: int) -> None:
        self.env = env
        self.callbacks = []
        heappush(env._queue, (env._now + delay, NORMAL, next(env._eid), self))  # type: ignore[attr-defined]


class _Timer(Event):
    """:class:`_Sleep` with one callback, ``cb``, instead of a process waiting on it."""

    _ok = True  # (class attributes: one store less per event)
    _value: Any = None

    def __init__(self, env: simpy.Environment, delay: int, cb: Callable[[Event], None]) -> None:
        self.env = env
        self.callbacks = [cb]
        heappush(env._queue, (env._now + delay, NORMAL, next(env._eid), self))  # type: ignore[attr-defined]


class _Ready(Event):
    """``Event(env)`` with one callback, ``cb``, succeeded at once with ``value`` (the same
    entry in the schedule as ``succeed``: now, ``NORMAL``, the next event id)."""

    _ok = True  # (class attributes: one store less per event)

    def __init__(
        self, env: simpy.Environment, value: Any, cb: Callable[[Event], None], eid: int = -1
    ) -> None:
        self.env = env
        self.callbacks = [cb]
        self._value = value
        eid = next(env._eid) if eid < 0 else eid  # type: ignore[attr-defined]  # (or one taken)
        heappush(env._queue, (env._now, NORMAL, eid, self))  # type: ignore[attr-defined]


class _Start(Event):
    """A process's start (as simpy's ``Initialize``): an ``URGENT`` event at the instant it
    is made, whose one callback is the process's resume."""

    _ok = True  # (class attributes: one store less per event)
    _value: Any = None

    def __init__(self, env: simpy.Environment, resume: Callable[[Event], None]) -> None:
        self.env = env
        self.callbacks = [resume]
        heappush(env._queue, (env._now, URGENT, next(env._eid), self))  # type: ignore[attr-defined]


class _SimGate:
    """The adaptive gate (:class:`sim.limiter.GateCore`) on SimPy events."""

    def __init__(self, env: simpy.Environment, core: GateCore) -> None:
        self.env = env
        self.core = core
        self._armed: set[int] = set()

    def acquire(self, rank: Rank = ()) -> Event | None:
        now = int(self.env.now)
        if self.core.try_acquire(now, rank):
            return None
        ev = Event(self.env)

        def wake() -> bool:
            ev.succeed()
            return True

        self.core.wait(rank, wake)
        self.changed()
        return ev

    def release(self, rank: Rank = ()) -> None:
        self.core.release(rank)
        self.changed()

    def changed(self) -> None:
        """After any change of the gate's state: wake who fits, arm the hold's end."""
        now = int(self.env.now)
        at = self.core.pump(now)
        if at is not None and at not in self._armed:
            self._armed.add(at)
            t = self.env.timeout(at - now)

            def fire(_ev: Event) -> None:
                self._armed.discard(at)
                self.changed()

            t.callbacks.append(fire)


class _Task:
    """A process run as SimPy runs a :class:`~simpy.events.Process`, without the bookkeeping
    the model does not use: the same start (an ``URGENT`` event at the instant it is made)
    and the same resumptions, but no end event — at its end ``ended`` (if any) is called
    at once. Nothing in the model waits for a process's end event except the groups of
    :class:`_AllEnded`, which schedule the one that matters. Its resume is bound where it
    is handed out, not kept: a task holding its own bound method would be a reference cycle,
    left to the cyclic garbage collector with everything it reaches (a run's generators, its
    classroom, its environment) — a quarter of a pipelined run's CPU went to those passes.
    A task that yields an ``int`` (in :meth:`_Env.run_out` only, :func:`_wait`) sleeps that
    many µs: it is itself the schedule's entry (the one an :class:`_Sleep` would have), and
    ``run_out`` resumes it when it comes up, as the sleep's one callback."""

    __slots__ = ("ended", "env", "gen")

    def __init__(
        self,
        env: simpy.Environment,
        gen: Generator[Event, Any, Any],
        ended: Callable[[], None] | None = None,
        start: bool = True,
    ) -> None:
        self.gen = gen
        self.ended = ended
        self.env = env
        if start:  # (else its maker starts it: ``_resume(_STARTED)``)
            _Start(env, self._resume)

    def _resume(self, event: Any) -> None:  # an event, or (yielded) a sleep's µs
        gen = self.gen
        while True:
            try:
                if event._ok:
                    event = gen.send(event._value)
                else:  # as Process._resume: the failure is thrown into the generator
                    event._defused = True  # type: ignore[attr-defined]
                    exc = type(event._value)(*event._value.args)
                    exc.__cause__ = event._value
                    event = gen.throw(exc)
            except StopIteration:
                if self.ended is not None:
                    self.ended()
                return
            if type(event) is int:  # a sleep of that many µs (:func:`_wait`): the task itself
                env = self.env  # is the entry in the schedule (an _Sleep's)
                heappush(env._queue, (env._now + event, NORMAL, next(env._eid), self))  # type: ignore[attr-defined,misc]
                return
            cbs = event.callbacks
            if cbs is not None:  # not processed yet: wait for it
                cbs.append(self._resume)
                return


_STARTED = _Start.__new__(_Start)  # a start event already processed (a task started inline)


class _AllEnded(Event):
    """Start a task per generator, in order; the event that ``env.all_of`` of their processes
    would be: the last one's end schedules one event, which triggers this one (the same two
    schedulings as a process's end event and the condition; the others' end events had no
    callbacks but the condition's count, so they are not made)."""

    _ok = True  # (class attributes: one store less per event)
    _value: Any = None

    def __init__(self, env: simpy.Environment, gens: list[Generator[Event, Any, Any]]) -> None:
        self.env = env
        self.callbacks = []
        self.left = len(gens)
        cbs: list[Any] | None = env._cbs  # type: ignore[attr-defined]  # (an _Env)
        queue = env._queue  # type: ignore[attr-defined]
        if cbs is not None and len(cbs) == 1 and not (queue and queue[0][1] == URGENT):
            # Started here, in order, as their start events would start them: the process
            # making the group (which yields it at once) is its event's one callback, and no
            # other URGENT event is due, so those starts would be the next events processed.
            # A group made meanwhile by these tasks gets start events (as SimPy's would).
            env._cbs = None  # type: ignore[attr-defined]
            for gen in gens:
                _Task(env, gen, self._ended, False)._resume(_STARTED)
            env._cbs = cbs  # type: ignore[attr-defined]
            return
        for gen in gens:
            _Task(env, gen, self._ended)

    def _ended(self) -> None:
        self.left -= 1
        if self.left == 0:
            if self._next():  # the end event and then this one would be the next processed
                self._fire()
            else:
                _Timer(self.env, 0, self._relay)  # the last process's end event

    def _relay(self, _ev: Event) -> None:
        if self._next():  # (the end event has no other callback)
            self._fire()
        else:  # this event triggered: scheduled now, as ``succeed`` does
            env = self.env
            heappush(env._queue, (env._now, NORMAL, next(env._eid), self))  # type: ignore[attr-defined]

    def _next(self) -> bool:
        """Whether an event scheduled now would be the next one processed: the callback
        running is its event's only one, called by :meth:`_Env.run_out` (not in a task
        started inline), and nothing is due now at ``NORMAL`` or before."""
        env = self.env
        cbs: list[Any] | None = env._cbs  # type: ignore[attr-defined]  # (an _Env)
        if cbs is None or len(cbs) != 1:
            return False
        queue = env._queue  # type: ignore[attr-defined]
        return not (queue and queue[0][0] == env._now and queue[0][1] <= NORMAL)

    def _fire(self) -> None:
        """Process this event here, as :meth:`_Env.run_out` would when it comes next: one
        or two schedulings less."""
        callbacks, self.callbacks = self.callbacks, None  # type: ignore[assignment]
        self.env._cbs = callbacks  # type: ignore[attr-defined]
        for callback in callbacks:
            callback(self)


_Fetch = tuple[int, int, int | None, int, Counts | None]
"""One client request's end (a plain tuple: one is made per request): the status the client
sees (HTTP, or 0 timeout, -1 network, -2 bad body), the provider's own status of the last
attempt, its Retry-After, the provider attempts it used, and the counts the client learns
(``None`` on a timeout)."""

_ONE_OK = Counts(requests=1)  # what a request answered 200 at once counts (read only)


_SEEN = {RESET: -1, TRUNCATED: -2}  # provider fault → what the client sees
_ONE_FAILED: dict[int, Counts] = {}


def _one_failed(status: int) -> Counts:
    """What one request answered ``status`` (not 200) counts: shared, read only (a call's
    stats only add it)."""
    got = _ONE_FAILED.get(status)
    if got is None:
        got = _ONE_FAILED[status] = Counts()
        got.count(status)
    return got


class _Env(simpy.Environment):
    """SimPy's environment with :meth:`run_out`: ``run()`` to an empty schedule with
    :meth:`step`'s body inlined (the same events in the same order, one call less each).
    The model's times are whole µs: ``_now`` is always an ``int``."""

    _now: int  # type: ignore[assignment]
    _cbs: list[Any] | None = None  # the callbacks being called by :meth:`run_out` (else None)
    _lean = False  # in :meth:`run_out`: its processes are tasks, which may sleep bare (_wait)

    def run_out(self) -> None:
        queue = self._queue
        pop = heapq.heappop
        self._lean = True
        try:
            while queue:
                entry: Any = pop(queue)
                self._now, _, _, event = entry  # (int times)
                if type(event) is _Task:  # a task's sleep ended: its one callback, the task
                    self._cbs = _WOKEN
                    event._resume(_STARTED)
                    continue
                callbacks, event.callbacks = event.callbacks, None  # type: ignore[assignment]
                self._cbs = callbacks
                for callback in callbacks:
                    callback(event)
                if not event._ok and not hasattr(event, "_defused"):
                    exc = type(event._value)(*event._value.args)
                    exc.__cause__ = event._value
                    raise exc
        finally:
            self._cbs = None
            self._lean = False


class _PlainEnv(_Env):
    """:class:`_Env` whose :meth:`run_out` is SimPy's own ``run()`` (the model without its
    shortcuts, :data:`_SHORTCUTS`)."""

    def run_out(self) -> None:
        self.run()


_WOKEN: list[Any] = [None]  # a task woken from its sleep runs as its event's one callback


def _wait(env: _Env, delay_us: int) -> Any:
    """A process's wait of ``delay_us`` µs, for it to yield at once: ``None`` if taken here (the
    sleep would be the next event processed, its one callback the process, which runs as
    its own event's one callback: the clock moves, no event), else the delay itself in
    :meth:`_Env.run_out` (the task is the sleep's entry: :meth:`_Task._resume`), else a
    :class:`_Sleep`. An event due at that time comes first (an earlier id), a batch after."""
    cbs = env._cbs
    t = env._now + delay_us
    if cbs is not None and len(cbs) == 1:
        queue = env._queue  # type: ignore[attr-defined]
        if not queue or queue[0][0] > t or (queue[0][0] == t and queue[0][1] > NORMAL):
            env._now = t
            return None
    if env._lean:
        return delay_us
    return _Sleep(env, delay_us)


def _answered(sleep: Any) -> Generator[Event, Any, bool]:
    """A call answered 200 after a wait (:func:`_wait`'s ``sleep``, not ``None``): that
    wait (:meth:`_World.call`)."""
    yield sleep
    return True


def _ANSWERED_NOW() -> Generator[Event, Any, bool]:
    """A call answered 200 with no latency: nothing to wait for."""
    return True
    yield  # a generator


_Policies = dict[tuple[int, bool], RetryPolicy]
_Singles = dict[tuple[int, bool], bool]
_Tables = tuple[_Policies, _Policies, tuple[bool, ...], tuple[bool, ...], _Singles, _Singles]


def _tables(scenario: Scenario, provider: Provider) -> _Tables:
    """A world's fixed tables, per step (0 content, 1 actions, 2 tts) and foreground: the
    route's and the client's retry policies; per step, whether its key is limited and
    whether a client's abort frees its slot; per step and foreground, whether a request is
    one provider attempt (no route retries, no shared capacity), and whether it is one on a
    key whose arrivals are not batched (a run's worlds share them)."""
    client = scenario.client
    fgs = (False, True)
    route = {(st, fg): client.route_policy(st, fg) for st in range(3) for fg in fgs}
    own = {(st, fg): client.client_policy(st, fg) for st in range(3) for fg in fgs}
    limited = tuple(provider.limited(st) for st in range(3))
    frees = tuple(provider.frees_on_disconnect(st) for st in range(3))
    shared = (scenario.quota_llm.shared, scenario.quota_llm.shared, scenario.quota_tts.shared)
    single = {k: route[k].max_retries == 0 and not shared[k[0]] and _SHORTCUTS for k in route}
    bare = {k: one and not limited[k[0]] for k, one in single.items()}
    return route, own, limited, frees, single, bare


class _World:
    def __init__(
        self, scenario: Scenario, provider: Provider, tables: _Tables | None = None
    ) -> None:
        self.env = _Env() if _SHORTCUTS else _PlainEnv()
        self.scenario = scenario
        self.client = scenario.client
        self.provider = provider
        self.batches: dict[bool, _Batch] = {}  # per key (TTS or not), this instant's
        self.timeout_us = round(scenario.request_timeout_s * 1e6)
        self._armed: set[int] = set()
        self._shape = scenario.client.provider_errors
        self._direct = self._shape == ErrorShape.DIRECT  # only then a Retry-After
        self._seen_of: dict[tuple[int, int], tuple[int, bool]] = {}  # :meth:`_seen`'s
        tables = _tables(scenario, provider) if tables is None else tables
        self._route, self._client, self._limited, self._frees, self._single, self._bare = tables
        # per step: Provider.quick_decide for its key (None where it does not apply)
        self._quick = tuple(
            provider.quick_decide(st, TTS_KEY if st == 2 else LLM_KEY) if _SHORTCUTS else None
            for st in range(3)
        )
        # per step * 2 + foreground: Provider.quick_first, the first attempt of a call on a key
        # without limits that is one attempt (:meth:`_request`; None where it does not apply)
        bare = self._bare
        firsts = [
            provider.quick_first(st, TTS_KEY if st == 2 else LLM_KEY, self.timeout_us, quick)
            if bare[st, False] or bare[st, True]
            else None
            for st, quick in enumerate(self._quick)
        ]
        self._first = [firsts[st] if bare[st, fg] else None for st in range(3) for fg in _FGS]
        if scenario.quota_llm.shared or scenario.quota_tts.shared:
            provider.arm = self._arm  # shared capacity: the provider decides, we wait

    def _arm(self, at_us: int) -> None:
        """A timer calling the provider's :meth:`~sim.provider.Provider.fire` at ``at_us``."""
        if at_us in self._armed:
            return
        self._armed.add(at_us)

        def fire(_ev: Event) -> None:
            self._armed.discard(at_us)
            self.provider.fire(int(self.env.now))

        self.env.timeout(max(0, at_us - int(self.env.now))).callbacks.append(fire)

    def _served(self, dec: Decision, deadline_us: int) -> Generator[Event, Any, Decision]:
        """Wait for a shared capacity to finish a request, or for the client's deadline (a
        request ending at the deadline is in time)."""
        assert dec.job is not None
        env = self.env
        ev = Event(env)
        self.provider.wait(dec.job, ev.succeed)
        if not ev.triggered:
            yield ev | env.timeout(deadline_us - int(env.now))
            if not ev.triggered:
                self.provider.fire(int(env.now))
            if not ev.triggered:
                self.provider.forget(dec.job)
                return _TIMEOUT
        done = ev.value
        assert isinstance(done, Decision)
        return done

    def _flush(self, batch: Event) -> None:
        """Decide a batch's arrivals (see :class:`_Batch`)."""
        assert isinstance(batch, _Batch)
        del self.batches[batch.key]
        env = self.env
        now = env._now
        decide = self._decide
        items = batch.items
        if len(items) == 1:  # :meth:`_decide`, inline
            call = items[0]
            quick = self._quick[call[1]]
            if quick is None:
                batch._value = self.provider.decide(call, now)
            else:
                batch._value = quick(call[0], call[2], call[3], call[4], now)
            return
        cbs = batch.cbs
        resumes = cbs[1:]
        assert len(resumes) == len(items)
        keys = list(map(self.provider.arrival_key, items))
        ranked = sorted(range(len(items)), key=keys.__getitem__)  # stable, as sorting the pairs
        del cbs[1:]  # the first resumes from the batch, right after this flush
        first = ranked[0]
        batch._value = decide(items[first], now)
        cbs.append(resumes[first])
        # each other one: its decision, and the id of the event succeeded now with it that
        # would resume it (taken here, in the same order); :meth:`_rest` resumes them
        eid = env._eid  # type: ignore[attr-defined]
        batch.rest = [(decide(items[i], now), next(eid), resumes[i]) for i in ranked[1:]]
        cbs.append(self._rest)

    def _rest(self, batch: Event) -> None:
        """Resume a batch's other arrivals in order (:meth:`_flush`), each here while its
        event would be the next one processed (nothing due before it: no ``URGENT`` event
        made by those resumed, no event of an earlier id), else from that event itself,
        scheduled with the id it would have had, with the others after it."""
        assert isinstance(batch, _Batch)
        env = self.env
        queue, now = env._queue, env._now  # type: ignore[attr-defined]
        rest = batch.rest
        for j, (dec, eid, resume) in enumerate(rest):
            if (queue and queue[0] < (now, NORMAL, eid)) or env._cbs is None:
                for dec, eid, resume in rest[j:]:
                    _Ready(env, dec, resume, eid)
                return
            batch._value = dec
            resume(batch)

    def _decide(self, call: Call, now_us: int) -> Decision:
        """The provider's decision on an arrival (:meth:`Provider.quick_decide` where it
        applies)."""
        quick = self._quick[call[1]]
        if quick is None:
            return self.provider.decide(call, now_us)
        return quick(call[0], call[2], call[3], call[4], now_us)

    def _arrival(self, cid: int, step: int, order: int, clip: int, attempt: int) -> Any:
        """A request's arrival on a limited key: its decision if it is alone (:meth:`_alone`),
        else the instant's batch that decides it, for the process to yield at once."""
        alone = self._alone()
        quick = self._quick[step] if alone else None
        if quick is not None:  # :meth:`_decide`, without a call tuple
            return quick(cid, order, clip, attempt, self.env._now)
        call = new_call((cid, step, order, clip, attempt, TTS_KEY if step == 2 else LLM_KEY))
        if alone:
            return self.provider.decide(call, self.env._now)
        tts = step == 2  # :meth:`_arrive`, inline
        batch = self.batches.get(tts) or _Batch(self, tts)
        batch.items.append(call)
        return batch

    def _alone(self) -> bool:
        """Whether an arrival on a limited key now would be its batch's only one, and the
        batch the next event processed, its flush resuming the process at once: the process
        runs as its event's only callback (called by :meth:`_Env.run_out`, not in a task
        started inline) and nothing else is due now (no batch either). The process may then
        take its decision at once (:meth:`_decide`, as the flush would): one event less."""
        env = self.env
        cbs = env._cbs
        if cbs is None or len(cbs) != 1:
            return False
        queue = env._queue
        return not (queue and queue[0][0] == env._now)

    def _arrive(self, call: Call) -> Any:
        """A request's arrival on a limited key: its decision if it is alone (:meth:`_alone`),
        else the instant's batch that decides it (:meth:`_flush`), for the process to yield
        at once. A batch per key: the model's calls use one LLM key and one TTS key, so per
        kind of step."""
        if self._alone():
            return self._decide(call, self.env._now)
        tts = call[1] == 2
        batch = self.batches.get(tts) or _Batch(self, tts)
        batch.items.append(call)
        return batch

    def fetch(
        self, cid: int, step: int, order: int, clip: int, fg: bool, first: int
    ) -> Generator[Event, Any, _Fetch]:
        """One client request: one provider attempt (arrival, admission, and the wait for
        the answer, or for the client's deadline when the answer would come later), or in
        the ``route`` error shape the route's own retries of it (before #788), all within
        the client's request timeout."""
        env = self.env
        key = TTS_KEY if step == 2 else LLM_KEY
        deadline = env._now + self.timeout_us
        counts: Counts | None = None  # made at the first failed attempt
        n = first
        limited = self._limited[step]
        decide = self.provider.decide
        while True:
            call = new_call((cid, step, order, clip, n, key))
            n += 1
            if limited:
                got = self._arrive(call)
                dec: Decision = (yield got) if type(got) is _Batch else got
            else:
                dec = decide(call, env._now)
            lat = dec[1]  # latency_us
            if lat == PENDING:
                dec = yield from self._served(dec, deadline)
                if dec is _TIMEOUT:
                    return (0, 0, None, n, None)
            else:
                now = env._now
                if now + lat > deadline:
                    got = _wait(env, deadline - now)
                    if got is not None:
                        yield got
                    if self._frees[step]:  # the client's abort frees its slot
                        self.provider.release(call, now + lat, int(env.now))
                    return (0, 0, None, n, None)
                if lat:
                    got = _wait(env, lat)
                    if got is not None:
                        yield got
            status = dec[0]
            if status == 200:
                if counts is None:
                    return (200, 200, None, n, _ONE_OK)
                counts.count(200)
                return (200, 200, None, n, counts)
            seen = _SEEN.get(status, status)
            if seen < 0:  # a transport fault of the answer: the client learns of one request
                return (seen, status, None, n, _one_failed(status))
            ra = None if dec.retry_after_ms is None else dec.retry_after_ms * 1000
            policy = self._route[step, fg]
            if policy.max_retries == 0:  # no retries in the route: after_attempt's FAIL
                got = _one_failed(status) if counts is None else counts
                if counts is not None:
                    counts.count(status)
                status = route_status(self._shape, step, seen)
                return (status, dec.status, ra if self._direct else None, n, got)
            if counts is None:
                counts = Counts()
            counts.count(status)
            verdict = after_attempt(policy, n - 1 - first, outcome_of(seen), ra)
            if verdict.fail:
                status = route_status(self._shape, step, seen)
                return (status, dec.status, ra if self._direct else None, n, counts)
            if int(env.now) + verdict.wait_us >= deadline:
                got = _wait(env, deadline - env._now)
                if got is not None:
                    yield got
                return (0, 0, None, n, None)
            counts.retries += 1
            got = _wait(env, verdict.wait_us)
            if got is not None:
                yield got

    def _abandon(self, call: Call, end_us: int) -> None:
        """The client gave up on an attempt admitted to end at ``end_us``: its slot is free
        from now where the step's quota frees slots on disconnect (``call``: its identity,
        the key taken from the step)."""
        if self._frees[call[1]]:
            call = new_call((*call[:5], TTS_KEY if call[1] == 2 else LLM_KEY))
            self.provider.release(call, end_us, self.env._now)

    def _seen(self, dec: Decision, step: int) -> tuple[int, int | None]:
        """What the client sees of a failed attempt in a route without retries (as
        :meth:`fetch` returns it): the status, and the Retry-After it passes on."""
        status = dec[0]
        got = self._seen_of.get((status, step))
        if got is None:  # (the status seen, whether it carries the Retry-After), made once
            seen = _SEEN.get(status, status)
            if seen < 0:  # a transport fault of the answer
                got = (seen, False)
            else:
                got = (route_status(self._shape, step, seen), self._direct)
            self._seen_of[status, step] = got
        if not got[1] or dec.retry_after_ms is None:
            return got[0], None
        return got[0], dec.retry_after_ms * 1000

    def call(
        self,
        cid: int,
        step: int,
        order: int,
        clip: int,
        fg: bool,
        stats: Counts,
        gate: _SimGate | None = None,
    ) -> Generator[Event, Any, bool]:
        """One step call with the client's retries (:class:`sim.rules.CallMachine`); True on
        success. A call with an adaptive gate tells it of every 429 and of its success; under
        the ``gate`` policy every attempt passes the gate at its rank (outline order, step,
        clip) and a 429 re-queues it there instead of spending the retry budget.

        Callers ``yield from`` it at once. A call without a gate whose request is one attempt
        on a key without limits is decided here, as :meth:`_call` would decide it first:
        answered 200 in time, it is only that answer's wait (no call generator); else
        :meth:`_call` goes on from that decision."""
        if gate is None:
            got = self._request(cid, step, order, clip, fg, stats)
            if got is None:
                return _ANSWERED_NOW()
            return got if type(got) is GeneratorType else _answered(got)
        return self._call(cid, step, order, clip, fg, stats, gate, None)

    def _request(self, cid: int, step: int, order: int, clip: int, fg: bool, stats: Counts) -> Any:
        """:meth:`call` without a gate, its first attempt decided now (for its caller to wait
        for at once): ``None`` if answered 200 at once (or after a wait taken here, :func:`_wait`),
        the wait to yield (:func:`_wait`'s) if answered 200 after it, else the call's
        generator. On a key without limits a plain 200 comes as its latency alone
        (:meth:`sim.provider.Provider.quick_first`)."""
        first = self._first[step + step + fg]
        if first is None:
            return self._call(cid, step, order, clip, fg, stats, None, None)
        env = self.env
        lat = first(cid, order, clip, env._now)
        if type(lat) is not int:  # not a plain 200 in time: its decision
            dec = cast(Decision, lat)
            lat = dec[1]
            if dec[0] != 200 or lat > self.timeout_us:
                return self._call(cid, step, order, clip, fg, stats, None, dec)
        stats.requests += 1  # (counted before its wait: nothing reads it meanwhile)
        if not lat:
            return None
        cbs = env._cbs  # :func:`_wait`, inline
        t = env._now + lat
        if cbs is not None and len(cbs) == 1:
            queue = env._queue
            if not queue or queue[0][0] > t or (queue[0][0] == t and queue[0][1] > NORMAL):
                env._now = t
                return None
        if env._lean:
            return lat
        return _Sleep(env, lat)

    def _call(
        self,
        cid: int,
        step: int,
        order: int,
        clip: int,
        fg: bool,
        stats: Counts,
        gate: _SimGate | None,
        first: Decision | None,
    ) -> Generator[Event, Any, bool]:
        """:meth:`call`'s generator; ``first``: its first attempt's decision, made by it."""
        held = gate if gate is not None and gate.core.policy is Policy.GATE else None
        machine: CallMachine | None = None  # made at the first attempt it must judge
        rank = (order, step, clip) if gate is not None else ()
        n, env = 0, self.env
        single = self._single[step, fg]  # a request is one attempt: :meth:`fetch`, inline
        limited, key = self._limited[step], TTS_KEY if step == 2 else LLM_KEY
        quick = None if limited else self._quick[step]
        while True:
            if held is not None:
                ev = held.acquire(rank)
                if ev is not None:
                    yield ev
            if single:
                deadline = env._now + self.timeout_us
                call = None
                if quick is not None:  # a key without limits: no call tuple, no batch
                    dec = quick(cid, order, clip, n, env._now) if first is None else first
                    first = None  # (the first decided by :meth:`call`, if given)
                elif limited:
                    got = self._arrival(cid, step, order, clip, n)
                    dec = (yield got) if type(got) is _Batch else got
                else:
                    call = new_call((cid, step, order, clip, n, key))
                    dec = self.provider.decide(call, env._now)
                n += 1
                now, lat = env._now, dec[1]  # (latency_us)
                late = now + lat > deadline  # the client gives up at its deadline
                got = _wait(env, deadline - now if late else lat) if late or lat else None
                if got is not None:
                    yield got
                if late:
                    self._abandon(call or new_call((cid, step, order, clip, n - 1, "")), now + lat)
                    stats.timeouts += 1
                    status, provider_status, ra = 0, 0, None
                else:
                    provider_status = dec[0]
                    if provider_status == 200:
                        stats.requests += 1
                        if gate is None:
                            return True  # the machine's verdict on a 200, no gate to tell
                        status, ra = 200, None
                    else:
                        stats.count(provider_status)
                        status, ra = self._seen(dec, step)
            else:
                status, provider_status, ra, n, counts = yield from self.fetch(
                    cid, step, order, clip, fg, n
                )
                stats.add(counts)
                if status == 200 and gate is None:
                    return True  # the machine's verdict on a 200, with no gate to tell
            if machine is None:
                machine = CallMachine(self._client[step, fg], gated=held is not None)
                jitter = partial(self.provider.jitter_u, cid, step, order, clip)  # keyed draw
            verdict = machine.step(status, provider_status, ra, jitter)
            if gate is not None:
                tell_gate(gate, verdict.tell, env._now, ra, rank if held is not None else None)
            kind = verdict.kind
            if kind is _DONE:
                return True
            if kind is _FAIL:
                return False
            stats.retries += 1  # WAIT and REQUEUE are retries (Verdict.retry)
            if kind is _WAIT:
                got = _wait(env, verdict.wait_us)
                if got is not None:
                    yield got

    def tts(
        self,
        cid: int,
        order: int,
        tts_c: int,
        stats: Counts,
        gate: _SimGate | None = None,
        fg: bool = False,
    ) -> Generator[Event, Any, bool]:
        """All speech clips of one scene; every clip is tried, any failure fails the scene."""
        k = self.provider.speeches(cid, order)
        if k == 0:
            return True
        env = self.env
        oks = [True]
        if gate is not None and (gate.core.policy is Policy.GATE or k > 1):
            gate_all = gate.core.policy is Policy.GATE  # every clip, every attempt gated

            def gated_clip(clip: int) -> Generator[Event, Any, None]:
                assert gate is not None
                if gate_all:
                    ok = yield from self.call(cid, _TTS, order, clip, fg, stats, gate)
                else:  # adaptive: every clip waits for the gate in order
                    ev = gate.acquire()
                    if ev is not None:
                        yield ev
                    ok = yield from self.call(cid, _TTS, order, clip, fg, stats, gate)
                    gate.release()
                if not ok:
                    oks[0] = False

            yield _AllEnded(env, [gated_clip(j) for j in range(k)])
            return oks[0]
        if tts_c <= 1 or k == 1:  # one worker: the clips in order, in this process
            for clip in range(k):
                got = self._request(cid, _TTS, order, clip, fg, stats)  # :meth:`call`'s
                if got is None:
                    continue
                if type(got) is not GeneratorType:
                    yield got
                elif not (yield from got):
                    oks[0] = False
            return oks[0]
        # A bounded map: min(c, k) workers take clips in order (= a FIFO semaphore of size c).
        nxt = [0]

        def worker() -> Generator[Event, Any, None]:
            while nxt[0] < k:
                clip = nxt[0]
                nxt[0] += 1
                got = self._request(cid, _TTS, order, clip, fg, stats)  # :meth:`call`'s
                if got is None:
                    continue
                if type(got) is not GeneratorType:
                    yield got
                elif not (yield from got):
                    oks[0] = False

        yield _AllEnded(env, [worker() for _ in range(min(tts_c, k))])
        return oks[0]


class _Classroom:
    """One classroom's loop on a :class:`_World`: the foreground first scene, then the
    loop over the rest (serial, hybrid or pipelined), as the profile says."""

    def __init__(self, w: _World, cid: int, mode: str, c: int, tts_c: int, adaptive: str) -> None:
        self.w = w
        self.env = w.env
        self.cid = cid
        self.mode = mode if isinstance(mode, Mode) else Mode(mode)
        self.c = c
        self.tts_c = tts_c
        self.adaptive = adaptive if isinstance(adaptive, Policy) else Policy(adaptive)
        self.stats = Counts()
        self.ready: list[tuple[int, int]] = []
        self.failed: list[int] = []
        self.status = RunStatus.COMPLETED
        self.t0 = 0
        self.end = 0
        self.llm_gate: _SimGate | None = None
        self.tts_gate: _SimGate | None = None
        self.awaiting: int | None = None  # the outline whose content the loop waits for

    def _gates(self, pending: int) -> None:
        parallel = is_parallel(self.mode, self.c, pending)
        gated = self.adaptive == Policy.GATE
        if gated:
            slots = content_slots(self.c, pending) + 1 if parallel else 1
            reserve = parallel and self.mode == Mode.PIPELINED  # keep a slot for the loop
            self.llm_gate = _SimGate(self.env, GateCore(slots, self.adaptive, reserve))
        if gated or (self.adaptive != Policy.OFF and self.tts_c > 1):
            self.tts_gate = _SimGate(self.env, GateCore(max(1, self.tts_c), self.adaptive))

    def llm_call(self, step: int, i: int, fg: bool = False) -> Generator[Event, Any, bool]:
        w = self.w
        gate = None if fg else self.llm_gate  # the ``gate`` policy's: every attempt gated
        return w.call(self.cid, step, i, 0, fg, self.stats, gate)  # its generator

    def _llm(self, step: int, i: int, fg: bool = False) -> Any:
        """:meth:`llm_call` for a caller that waits for it at once: without a gate, its first
        attempt decided now (:meth:`_World._request`: ``None`` if answered 200 at once, the
        wait to yield if answered 200 after it, else the call's generator), unless
        a subclass replaces :meth:`llm_call`; else :meth:`llm_call`'s generator."""
        if (fg or self.llm_gate is None) and type(self).llm_call is _LLM_CALL:
            return self.w._request(self.cid, step, i, 0, fg, self.stats)
        return self.llm_call(step, i, fg)

    def frontier(self, i: int) -> None:
        """The scene whose LLM work the loop does or awaits next (the gate keeps it a slot)."""
        gate = self.llm_gate
        if gate is not None and gate.core.reserve:
            gate.core.frontier = i
            gate.changed()

    def scene_tail(self, i: int, fg: bool = False) -> Generator[Event, Any, bool]:
        """Actions, then every clip; the scene is added on success."""
        got = self._llm(_ACTIONS, i, fg)
        if got is None:
            ok = True
        elif type(got) is not GeneratorType:
            yield got
            ok = True
        else:
            ok = yield from got
        if ok and not fg:
            self.frontier(i + 1)  # the loop's next LLM call is for the next scene
        if ok:
            fg_c = self.tts_c if self.w.client.foreground_tts_at_concurrency else 1
            tts_c, gate = (fg_c, None) if fg else (self.tts_c, self.tts_gate)
            ok = yield from self.w.tts(self.cid, i, tts_c, self.stats, gate, fg)
        if ok:
            self.ready.append((i, int(self.env.now) - self.t0))
        else:
            self.failed.append(i)
        return ok

    def run(self, delay_us: int) -> Generator[Event, Any, None]:
        if delay_us:  # a staggered tenant arrives later
            yield self.env.timeout(delay_us)
        self.t0 = int(self.env.now)
        first = 0
        if self.w.client.foreground_first_scene:  # the preview page, before the loop
            ok = yield from self.llm_call(_CONTENT, 0, True)
            ok = ok and (yield from self.scene_tail(0, True))
            if not ok:
                if 0 not in self.failed:
                    self.failed.append(0)
                self.status = RunStatus.FIRST_SCENE_FAILED
                self.end = int(self.env.now) - self.t0
                return
            first = 1
        pending = list(range(first, self.w.scenario.outlines))
        self._gates(len(pending))
        if is_parallel(self.mode, self.c, len(pending)):
            yield from self.parallel_loop(pending)
        else:
            yield from self.serial_loop(pending)
        self.end = int(self.env.now) - self.t0

    def serial_loop(self, pending: list[int]) -> Generator[Event, Any, None]:
        for i in pending:
            got = self._llm(_CONTENT, i)
            if got is None:
                pass
            elif type(got) is not GeneratorType:
                yield got
            elif not (yield from got):
                self.failed.append(i)
                self.status = RunStatus.PAUSED
                return
            if not (yield from self.scene_tail(i)):
                self.status = RunStatus.PAUSED
                return

    def _content_done(self, pending: list[int]) -> dict[int, Event]:
        """Start the content prefetch: a FIFO semaphore of ``min(c, pending)`` slots (as
        workers taking outlines in order), or the adaptive gate's tasks."""
        env = self.env
        done = {i: env.event() for i in pending}
        slots = content_slots(self.c, len(pending))
        handoff_first = self.w.client.handoff == Handoff.ACTIONS_FIRST
        if self.adaptive in (Policy.OFF, Policy.GATE):
            queue = iter(pending)

            def worker() -> Generator[Event, Any, None]:
                for i in queue:
                    got = self._llm(_CONTENT, i)
                    if got is None:
                        ok = True
                    elif type(got) is not GeneratorType:
                        yield got
                        ok = True
                    else:
                        ok = yield from got
                    done[i].succeed(ok)
                    if handoff_first and self.awaiting == i:
                        # JavaScript's hand-off: the loop's await resumes (and issues
                        # actions i) before the slot goes to the next content
                        got = _wait(env, 0)
                        if got is not None:
                            yield got

            for _ in range(slots):
                _Task(env, worker())
            return done
        gate = _SimGate(env, GateCore(slots, self.adaptive))

        def task(i: int) -> Generator[Event, Any, None]:
            ev = gate.acquire()
            if ev is not None:
                yield ev
            ok = yield from self.w.call(self.cid, _CONTENT, i, 0, False, self.stats, gate)
            gate.release()
            done[i].succeed(ok)

        for i in pending:
            _Task(env, task(i))
        return done

    def parallel_loop(self, pending: list[int]) -> Generator[Event, Any, None]:
        done = self._content_done(pending)
        if self.mode == Mode.HYBRID:
            yield self.env.all_of(list(done.values()))
        content_failed = paused = False
        for i in pending:
            self.frontier(i)
            self.awaiting = i
            ok = yield done[i]
            self.awaiting = None
            if not ok:
                self.failed.append(i)
                content_failed = True
                continue
            if not (yield from self.scene_tail(i)):
                paused = True
                break
        self.frontier(LOOP_DONE)  # the content still queued runs to the end
        pauses = self.w.client.content_failure_pauses
        self.status = final_status(paused, content_failed, pauses)


_LLM_CALL = _Classroom.llm_call  # :meth:`_Classroom._llm` stands in only for this one


def _result(cr: _Classroom, seed: int, tenants: int, tenant: int, log: Sequence[Any]) -> RunResult:
    """The classroom's :class:`RunResult` (:func:`sim.timeline.run_result`)."""
    prov = cr.w.provider
    d, row = prov.draws_for(cr.cid)
    if d.hi - d.lo > 1:  # a batch of classrooms: their playback table, made once
        plays = d.playback_row(row)
        play = {i: plays[i] for i, _ in cr.ready}
    else:
        play = {i: d.playback_us(row, i, prov.speeches(cr.cid, i)) for i, _ in cr.ready}
    tl = Timeline(cr.ready, cr.failed, cr.stats, cr.status, cr.end)
    return run_result(
        cr.w.scenario,
        tl,
        play,
        world="sim",
        mode=cr.mode,
        concurrency=cr.c,
        tts_concurrency=cr.tts_c,
        seed=seed,
        classroom=cr.cid,
        tenants=tenants,
        tenant=tenant,
        requests_log=records_from_log(log) if log else (),
    )


def _run_one(
    sc: Scenario,
    cfg: RunConfig,
    seed: int,
    run_id: int,
    draws: Draws | None = None,
    tables: _Tables | None = None,
    tts_c: int | None = None,
) -> list[RunResult]:
    """One run: ``cfg.tenants`` classrooms on one provider (ids ``run_id * tenants + j``);
    ``tts_c``: the clips at once, when the caller knows it."""
    prov = Provider(sc, seed, draws=draws, keep_log=cfg.records)
    w = _World(sc, prov, tables)
    c = cfg.c
    if tts_c is None:
        tts_c = tts_concurrency(cfg.mode, c, cfg.tts_concurrency, sc.client.tts_at_concurrency)
    tenants = cfg.tenants
    offsets = tenant_offsets_us(seed, run_id, tenants, cfg.stagger_s, cfg.stagger_dist)
    rooms = []
    for j in range(tenants):
        cr = _Classroom(w, run_id * tenants + j, cfg.mode, c, tts_c, cfg.adaptive)
        _Task(w.env, cr.run(offsets[j]))
        rooms.append(cr)
    w.env.run_out()
    results = []
    for j, cr in enumerate(rooms):
        log = [e for e in prov.log if e[0] == cr.cid] if cfg.records else []
        results.append(_result(cr, seed, tenants, j, log))
    return results


def simulate_simpy(
    scenario: Scenario, config: RunConfig, reps: int, *, seed: int = 0, first_run: int = 0
) -> list[RunResult]:
    """The SimPy engine: ``reps`` runs with run ids ``first_run ..`` (each of
    ``config.tenants`` classrooms, in order), draws made in one batch. The public entry
    point is :func:`sim.simulate`, which checks the ids and picks the engine."""
    lo = first_run * config.tenants
    draws = Draws(scenario, seed, lo, lo + reps * config.tenants)
    tables = _tables(scenario, Provider(scenario, seed, keep_log=False))
    sc, c = scenario, config.c
    tts_c = tts_concurrency(config.mode, c, config.tts_concurrency, sc.client.tts_at_concurrency)
    out: list[RunResult] = []
    for r in range(first_run, first_run + reps):
        out.extend(_run_one(scenario, config, seed, r, draws, tables, tts_c))
    return out
