"""One server-side generation run's loop as a pure, sans-IO state machine.

Upstream OpenMAIC (after 1.1.2) generates a classroom in a durable *generation run* on the
server (``lib/server/generation/run/engine.ts``; the rules, with the versions read, are in
``docs/runs.md``). :class:`RunMachine` is that loop written once: it never waits and does no
I/O. A driver (the SimPy model :mod:`sim.runs_model`, the fast engine :mod:`sim.runs_fast`,
the asyncio world) feeds it the events of one instant and does what the commands say.

Events (:data:`RunEvent`): :class:`Claimed` (a server worker took the run: an execution
begins), :class:`Answer` (a request ended: the status the client saw, the provider's own),
:class:`Timer` (a timer the machine set has fired). Commands (:data:`RunCommand`):
:class:`Send` (make this request, give up at ``deadline_us`` and answer 504 then),
:class:`Cancel` (abort an in-flight request: no answer for it is fed afterwards),
:class:`SetTimer`, :class:`Released` (the execution ended: the run awaits its outline's
confirmation, is paused, or is completed).

The loop: the outline (its stream attempts under one deadline), then — confirmed at once, or
after the server confirms it and claims the run again — the agent profiles, scene 0 alone,
the later scenes' content generated ahead through a FIFO pool (:class:`_Pool`), actions serial,
each scene's narration clips (:class:`_Clips`), and the media lane (:class:`_Media`) once
scene 0 is written. Every call's retries are a :class:`~sim.rules.CallMachine`.

Same-instant order: :meth:`RunMachine.feed` takes every event of one instant at once and
handles them in the canonical order of :func:`event_key` — by request identity
``(step, run, order, clip, attempt)``, an answer before a timer of the same identity, a
claim first — whatever order they physically came in. A driver only groups events by
instant (it may feed one instant several times, e.g. a claim after a finished run; the
machine accepts that). A :class:`Send` cancelled within the same feed is dropped with its
:class:`Cancel` (it never reaches the provider).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from functools import lru_cache, partial
from typing import NamedTuple, cast

from .rules import Act, CallMachine, Counts, RetryPolicy, Step
from .upstream import CLIENT_RETRY, FOREGROUND_RETRY

__all__ = [
    "LLM_KEY",
    "MEDIA_KEY",
    "TTS_KEY",
    "Answer",
    "Cancel",
    "Claimed",
    "Phase",
    "Released",
    "ReqId",
    "RunCommand",
    "RunEvent",
    "RunMachine",
    "RunRecord",
    "RunSpec",
    "Send",
    "SetTimer",
    "Timer",
    "event_key",
    "step_id",
]

LLM_KEY = "llm-key"
TTS_KEY = "tts-key"
MEDIA_KEY = "media-key"
US = 1_000_000


class Phase(StrEnum):
    """A run's state (upstream ``types.ts``)."""

    PREPARING = "preparing"
    OUTLINING = "outlining"
    AWAITING = "awaiting_outline_confirmation"
    GENERATING = "generating"
    PAUSED = "paused"
    COMPLETED = "completed"


class ReqId(NamedTuple):
    """One attempt of one call; its order is the canonical same-instant order."""

    step: int  # sim.rules.Step: 0 content, 1 actions, 2 tts (clip), 3 outline, 4 agents, 5 media
    run: int
    order: int  # the scene (0 for the outline and the agents; the item for media)
    clip: int  # the clip within the scene's narration (0 otherwise)
    attempt: int  # 0-based, within the call


# A ReqId without the NamedTuple's Python-level ``__new__`` (the same value; every field given)
_req_id = cast(Callable[[tuple[int, int, int, int, int]], ReqId], partial(tuple.__new__, ReqId))


@dataclass(frozen=True, slots=True)
class Claimed:
    """A server worker claimed the run: an execution begins."""

    run: int


@dataclass(frozen=True, slots=True)
class Answer:
    """A request ended. ``status``: what the client saw — the HTTP status, 504 when the
    attempt's deadline passed first, -1 a statusless failure (reset connection, cut body);
    ``provider_status``: the provider's own status (0: none came in time)."""

    req: ReqId
    status: int
    provider_status: int


@dataclass(frozen=True, slots=True)
class Timer:
    """A :class:`SetTimer` fired; ``tag`` is the attempt it starts."""

    tag: ReqId


RunEvent = Claimed | Answer | Timer


@dataclass(frozen=True, slots=True)
class Send:
    """Make request ``req`` on ``key`` now (``t_us``); at ``deadline_us`` give up on it and
    feed an :class:`Answer` with status 504 (an answer at the deadline is in time)."""

    req: ReqId
    key: str
    deadline_us: int
    t_us: int


@dataclass(frozen=True, slots=True)
class Cancel:
    """Abort the in-flight request ``req`` (a pause); feed no answer for it."""

    req: ReqId
    t_us: int


@dataclass(frozen=True, slots=True)
class SetTimer:
    """Feed :class:`Timer` ``tag`` at ``at_us`` (never earlier than the feed's instant)."""

    at_us: int
    tag: ReqId


@dataclass(frozen=True, slots=True)
class Released:
    """The execution ended at ``t_us``: ``phase`` AWAITING (the outline needs confirming),
    PAUSED or COMPLETED (final; :attr:`RunMachine.record` has the rest)."""

    run: int
    phase: Phase
    t_us: int


RunCommand = Send | Cancel | SetTimer | Released


# The members the loop reads on every call and event, as module names (a Python 3.11 enum
# member read from its class costs a few hundred ns; these are the same members)
_CONTENT, _ACTIONS, _TTS = Step.CONTENT, Step.ACTIONS, Step.TTS
_OUTLINE, _AGENTS, _MEDIA = Step.OUTLINE, Step.AGENTS, Step.MEDIA
_PREPARING, _OUTLINING, _AWAITING = Phase.PREPARING, Phase.OUTLINING, Phase.AWAITING
_GENERATING, _PAUSED, _COMPLETED = Phase.GENERATING, Phase.PAUSED, Phase.COMPLETED
_FINAL = (Phase.PAUSED, Phase.COMPLETED)


def event_key(ev: RunEvent) -> tuple[int, ...]:
    """The canonical order of events at one instant."""
    if isinstance(ev, Claimed):
        return (-1, ev.run, 0, 0, 0, 0)
    if isinstance(ev, Answer):
        return (*ev.req, 0)
    return (*ev.tag, 1)


def step_id(step: int, order: int) -> str:
    """Upstream's step id: ``outline``, ``agents``, ``scene:<k>:content|actions|narration``."""
    if step == _OUTLINE:
        return "outline"
    if step == _AGENTS:
        return "agents"
    if step == _MEDIA:
        return f"media:{order}"
    name = ("content", "actions", "narration")[step]
    return f"scene:{order}:{name}"


@dataclass(frozen=True)
class RunSpec:
    """One run's fixed inputs: ``clips[k]`` speech clips of scene ``k`` (its narration
    requests), ``c`` the parsed ``PARALLEL_SCENE_CONCURRENCY``, whether the outline is
    confirmed at once (``confirm_auto``) and the agents generated (``agents_auto``), the
    deadlines (µs), the outline's attempts, the retry budgets (first scene / later) and the
    media lane's ``media`` items (one attempt each under ``media_deadline_us``)."""

    run: int
    clips: tuple[int, ...]
    c: int = 0
    confirm_auto: bool = True
    agents_auto: bool = True
    outline_deadline_us: int = 300 * US
    agents_deadline_us: int = 120 * US
    content_deadline_us: int = 300 * US
    actions_deadline_us: int = 60 * US
    clip_deadline_us: int = 30 * US
    outline_attempts: int = 3
    first_retry: RetryPolicy = FOREGROUND_RETRY
    later_retry: RetryPolicy = CLIENT_RETRY
    media: int = 0
    media_deadline_us: int = 300 * US
    gated: bool = False  # a key-wide gate (sim.run_gate): a 429 re-queues, budget unspent

    @property
    def scenes(self) -> int:
        return len(self.clips)


@dataclass
class RunRecord:
    """What happened to one run (µs on the driver's clock)."""

    phase: Phase = Phase.PREPARING
    claims_us: list[int] = field(default_factory=list)
    outline_us: int | None = None  # the outline's success
    agents_preset: bool = False  # the agent profiles fell back to presets
    ready: list[tuple[int, int]] = field(default_factory=list)  # (scene, µs) in write order
    skipped: list[int] = field(default_factory=list)  # scenes whose ahead content failed
    paused_at: str | None = None  # upstream's step id
    pause_status: int | None = None  # the failing attempt's status
    end_us: int | None = None
    counts: Counts = field(default_factory=Counts)
    media_ok: int = 0
    media_failed: int = 0

    @property
    def failed_scenes(self) -> tuple[int, ...]:
        """Scenes not written: skipped ones and the scene a pause stopped at."""
        out = set(self.skipped)
        if self.paused_at is not None and self.paused_at.startswith("scene:"):
            out.add(int(self.paused_at.split(":")[1]))
        return tuple(sorted(out))


Jitter = Callable[[ReqId], float]
_ONE_ATTEMPT = RetryPolicy(max_retries=0)  # agents, a media item: one attempt, no retry


@lru_cache(maxsize=32)
def _outline_policy(attempts: int) -> RetryPolicy:
    """The outline's stream attempts: back to back (no sleep)."""
    return RetryPolicy(max_retries=attempts - 1, initial_delay_s=0.0)


Done = Callable[[bool, int], None]


class _Call:
    """One step call with upstream's retries (:class:`~sim.rules.CallMachine`)."""

    __slots__ = ("base", "cm", "deadline_us", "done", "key", "m", "step_deadline_us", "wait")

    def __init__(
        self,
        m: RunMachine,
        base: ReqId,
        policy: RetryPolicy,
        deadline_us: int,
        done: Done,
        step_deadline_us: int | None = None,
    ) -> None:
        self.m = m
        self.base = base
        self.cm = CallMachine(policy, m.spec.gated)
        self.deadline_us = deadline_us
        self.step_deadline_us = step_deadline_us
        self.done = done
        step = base.step
        self.key = TTS_KEY if step == _TTS else MEDIA_KEY if step == _MEDIA else LLM_KEY
        self.wait: ReqId | None = None

    def send(self) -> None:
        m = self.m
        b = self.base
        req = ReqId(b.step, b.run, b.order, b.clip, self.cm.attempts)
        dl = m.t + self.deadline_us
        if self.step_deadline_us is not None:
            dl = min(dl, self.step_deadline_us)
        m.inflight[req] = self
        m.out.append(Send(req, self.key, dl, m.t))

    def on_answer(self, req: ReqId, status: int, provider_status: int) -> None:
        m = self.m
        if status == 200:  # what the general path below does with a 200, in short
            self.cm.attempts += 1
            m.record.counts.requests += 1
            self.done(True, 200)
            return
        seen = 500 if status < 0 else (504 if status == 0 else status)
        if seen == 504 and provider_status == 0:
            m.record.counts.timeouts += 1
        else:
            m.record.counts.count(seen)
        step, run, order, clip = req[0], req[1], req[2], req[3]
        v = self.cm.step(
            seen, provider_status, None, lambda i: m.jitter(ReqId(step, run, order, clip, i))
        )
        over = self.step_deadline_us is not None and m.t >= self.step_deadline_us
        if v.kind is Act.DONE:
            self.done(True, 200)
        elif v.kind is Act.FAIL or over:
            self.done(False, seen)
        else:
            m.record.counts.retries += 1
            if v.wait_us == 0:
                self.send()
            else:
                self.wait = ReqId(step, run, order, clip, self.cm.attempts)
                m.timers[self.wait] = self
                m.out.append(SetTimer(m.t + v.wait_us, self.wait))

    def on_timer(self) -> None:
        self.wait = None
        self.send()

    def abort(self) -> None:
        """A pause: the in-flight attempt is cancelled, a retry sleep dropped."""
        m = self.m
        for req, call in list(m.inflight.items()):
            if call is self:
                del m.inflight[req]
                m.out.append(Cancel(req, m.t))
                m.cancels = True
        if self.wait is not None:
            m.timers.pop(self.wait, None)
            self.wait = None


class _Pool:
    """``lazyBoundedMap`` over the pending contents: a FIFO of ``size`` slots, held through
    an item's retries; a queued item starts only if the pool was not aborted."""

    def __init__(self, m: RunMachine, pending: list[int]) -> None:
        self.m = m
        self.queue = deque(pending)
        self.free = min(m.spec.c, len(pending))
        self.calls: dict[int, _Call] = {}
        self.results: dict[int, bool] = {}
        self.fail_status: dict[int, int] = {}
        self.aborted = False
        self.pump()

    def pump(self) -> None:
        while self.free > 0 and self.queue and not self.aborted:
            k = self.queue.popleft()
            self.free -= 1
            call = self.m.call(_CONTENT, k, 0, self._done_fn(k))
            self.calls[k] = call
            call.send()

    def _done_fn(self, k: int) -> Done:
        def done(ok: bool, status: int) -> None:
            self.calls.pop(k, None)
            self.results[k] = ok
            if not ok:
                self.fail_status[k] = status
            self.free += 1  # the checkpoint is committed, then the slot is freed
            self.pump()
            self.m.pool_result(k)

        return done

    def abort(self) -> None:
        self.aborted = True
        self.queue.clear()
        for call in list(self.calls.values()):
            call.abort()
        self.calls.clear()


class _Clips:
    """A scene's narration clips: a bounded map of ``min(c, clips)`` that waits for all
    (``allSettled``) when ``c > 1`` and there are several clips, else serial stopping at
    the first failure."""

    def __init__(self, m: RunMachine, k: int, n: int) -> None:
        self.m = m
        self.k = k
        self.queue = deque(range(n))
        self.parallel = m.spec.c > 1 and n > 1
        self.free = min(m.spec.c, n) if self.parallel else 1
        self.running = 0
        self.failed: int | None = None  # the first failed clip's status, in clip order
        self.failed_clip = n
        self.pump()

    def pump(self) -> None:
        while self.free > 0 and self.queue:
            j = self.queue.popleft()
            self.free -= 1
            self.running += 1
            self.m.call(_TTS, self.k, j, self._done_fn(j)).send()
        if self.running == 0 and not self.queue:
            self.m.narration_done(self.k, self.failed)

    def _done_fn(self, j: int) -> Done:
        def done(ok: bool, status: int) -> None:
            self.running -= 1
            self.free += 1
            if not ok and j < self.failed_clip:
                self.failed, self.failed_clip = status, j
            if not ok and not self.parallel:
                self.queue.clear()
            self.pump()

        return done


class _Media:
    """The media lane: the items one at a time in order, one attempt each, failures counted
    (never a pause). ``stop`` lets the item in hand finish and starts no other."""

    def __init__(self, m: RunMachine) -> None:
        self.m = m
        self.next = 0
        self.busy = False
        self.stopped = False
        self.pump()

    @property
    def settled(self) -> bool:
        return not self.busy and (self.stopped or self.next >= self.m.spec.media)

    def pump(self) -> None:
        m = self.m
        if self.busy or self.stopped or self.next >= m.spec.media:
            return
        i, self.next, self.busy = self.next, self.next + 1, True
        base = ReqId(_MEDIA, m.spec.run, i, 0, 0)
        m.make_call(base, _ONE_ATTEMPT, m.spec.media_deadline_us, self._done).send()

    def _done(self, ok: bool, status: int) -> None:
        r = self.m.record
        if ok:
            r.media_ok += 1
        else:
            r.media_failed += 1
        self.busy = False
        self.pump()
        if self.settled:
            self.m.media_settled()


class RunMachine:
    """One generation run (see the module docstring). :meth:`feed` is the only input;
    :attr:`record` the result."""

    def __init__(self, spec: RunSpec, jitter: Jitter) -> None:
        self.spec = spec
        self.jitter = jitter
        self.record = RunRecord()
        self.t = 0
        self.out: list[RunCommand] = []
        self.inflight: dict[ReqId, _Call] = {}
        self.timers: dict[ReqId, _Call] = {}
        self.pool: _Pool | None = None
        self.pool_tried = False
        self.waiting_for: int | None = None
        self.skip_status: dict[int, int] = {}
        self.media: _Media | None = None
        self.deferred: tuple[str, int] | None = None  # a pause waiting for the image in hand
        self.completing = False  # completion waiting for the media lane
        self.cancels = False  # a Cancel in this feed's commands (then they are pruned)

    @property
    def finished(self) -> bool:
        return self.record.phase in _FINAL

    def feed(self, t_us: int, events: Iterable[RunEvent]) -> list[RunCommand]:
        """Handle every event of instant ``t_us`` (canonical order); the commands, in order."""
        if t_us < self.t:
            raise RuntimeError(f"driver bug: time went back: {t_us} < {self.t}")
        self.t = t_us
        self.out = []
        self.cancels = False
        evs = list(events)
        if len(evs) > 1:
            evs.sort(key=event_key)
        for ev in evs:
            if isinstance(ev, Claimed):
                self._claimed()
            elif isinstance(ev, Answer):
                call = self.inflight.pop(ev.req, None)
                if call is not None:
                    call.on_answer(ev.req, ev.status, ev.provider_status)
            else:
                call = self.timers.pop(ev.tag, None)
                if call is not None:
                    call.on_timer()
        return _prune(self.out) if self.cancels else self.out

    # -- the loop ---------------------------------------------------------------------
    def call(self, step: int, order: int, clip: int, done: Done) -> _Call:
        sp = self.spec
        first = order == 0
        policy = sp.first_retry if first else sp.later_retry
        dl = (sp.content_deadline_us, sp.actions_deadline_us, sp.clip_deadline_us)[step]
        return self.make_call(_req_id((step, sp.run, order, clip, 0)), policy, dl, done)

    def make_call(
        self,
        base: ReqId,
        policy: RetryPolicy,
        deadline_us: int,
        done: Done,
        step_deadline_us: int | None = None,
    ) -> _Call:
        """A step call (every call of the loop is made here; a driver may make its own)."""
        return _Call(self, base, policy, deadline_us, done, step_deadline_us)

    def _claimed(self) -> None:
        r = self.record
        r.claims_us.append(self.t)
        if r.phase == _PREPARING:
            r.phase = _OUTLINING
            sp = self.spec
            policy = _outline_policy(sp.outline_attempts)
            step_dl = self.t + sp.outline_deadline_us
            base = ReqId(_OUTLINE, sp.run, 0, 0, 0)
            self.make_call(base, policy, sp.outline_deadline_us, self._outline_done, step_dl).send()
        elif r.phase == _AWAITING:
            r.phase = _GENERATING
            self._agents()
        else:
            raise RuntimeError(f"driver bug: run {self.spec.run} claimed while {r.phase}")

    def _outline_done(self, ok: bool, status: int) -> None:
        if not ok:
            self._pause(step_id(_OUTLINE, 0), status)
            return
        self.record.outline_us = self.t
        if self.spec.confirm_auto:
            self.record.phase = _GENERATING
            self._agents()
        else:
            self.record.phase = _AWAITING
            self.out.append(Released(self.spec.run, _AWAITING, self.t))

    def _agents(self) -> None:
        sp = self.spec
        if not sp.agents_auto:
            self._content(0)
            return
        base = ReqId(_AGENTS, sp.run, 0, 0, 0)

        def done(ok: bool, status: int) -> None:
            self.record.agents_preset = not ok  # any failure → presets, no pause
            self._content(0)

        self.make_call(base, _ONE_ATTEMPT, sp.agents_deadline_us, done).send()

    def _content(self, k: int) -> None:
        sp = self.spec
        if k >= sp.scenes:
            self._finish()
            return
        if k >= 1 and not self.pool_tried:
            self.pool_tried = True
            pending = list(range(k, sp.scenes))
            if sp.c > 1 and len(pending) > 1:
                self.pool = _Pool(self, pending)
        pool = self.pool
        if k >= 1 and pool is not None:
            if k in pool.results:
                self._content_result(k, pool.results[k], pool.fail_status.get(k, 0))
            else:
                self.waiting_for = k
            return

        def done(ok: bool, status: int) -> None:
            if ok:
                self._actions(k)
            else:
                self._pause(step_id(_CONTENT, k), status)

        self.call(_CONTENT, k, 0, done).send()

    def pool_result(self, k: int) -> None:
        if self.waiting_for == k and not self.finished:
            self.waiting_for = None
            pool = self.pool
            assert pool is not None
            self._content_result(k, pool.results[k], pool.fail_status.get(k, 0))

    def _content_result(self, k: int, ok: bool, status: int) -> None:
        if ok:
            self._actions(k)
        else:  # skipped: the run goes on and pauses at the lowest skipped scene at the end
            self.record.skipped.append(k)
            self.skip_status[k] = status
            self._content(k + 1)

    def _actions(self, k: int) -> None:
        def done(ok: bool, status: int) -> None:
            if ok:
                _Clips(self, k, self.spec.clips[k])
            else:
                self._pause(step_id(_ACTIONS, k), status)

        self.call(_ACTIONS, k, 0, done).send()

    def narration_done(self, k: int, failed_status: int | None) -> None:
        if failed_status is not None:
            self._pause(step_id(_TTS, k), failed_status)
            return
        self.record.ready.append((k, self.t))  # narration and the write: one step
        if k == 0 and self.spec.media > 0 and self.media is None:
            self.media = _Media(self)  # the course exists: the lane starts before scene 1
        self._content(k + 1)

    def media_settled(self) -> None:
        if self.deferred is not None:
            step, status = self.deferred
            self.deferred = None
            self._commit_pause(step, status)
        elif self.completing:
            self.completing = False
            self._finish()

    def _finish(self) -> None:
        r = self.record
        if r.skipped:
            k = min(r.skipped)
            self._pause(step_id(_CONTENT, k), self.skip_status[k])
            return
        if self.media is not None and not self.media.settled:
            self.completing = True  # settleMedia: completion waits for every item
            return
        r.phase = _COMPLETED
        r.end_us = self.t
        self.out.append(Released(self.spec.run, _COMPLETED, self.t))

    def _pause(self, step: str, status: int) -> None:
        if self.pool is not None:
            self.pool.abort()
        media = self.media
        if media is not None:
            media.stopped = True  # gently: the item in hand finishes first
            if not media.settled:
                self.deferred = (step, status)
                return
        self._commit_pause(step, status)

    def _commit_pause(self, step: str, status: int) -> None:
        r = self.record
        r.phase = _PAUSED
        r.paused_at = step
        r.pause_status = status
        r.end_us = self.t
        self.out.append(Released(self.spec.run, _PAUSED, self.t))


def _prune(out: list[RunCommand]) -> list[RunCommand]:
    """Drop a :class:`Send` and its :class:`Cancel` made in the same feed."""
    cancelled = {c.req for c in out if isinstance(c, Cancel)}
    if not cancelled:
        return out
    sent = {c.req for c in out if isinstance(c, Send)}
    both = cancelled & sent
    return [c for c in out if not (isinstance(c, Send | Cancel) and c.req in both)]
