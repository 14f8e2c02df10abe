"""One server job's loop as a pure, sans-IO machine both worlds drive.

The old server job path (``POST /api/generate-classroom``, see ``docs/server-path.md``):
the scene loop over the job's outlines — a failed content or actions *skips* the scene, a
job never pauses — then the media step, every clip of every generated scene in order
through a bounded map of ``media_c``. :class:`JobMachine` owns those decisions: which step
call starts next, what a failure does, when the media step starts, which clip a free media
lane takes, when the job ends. It never waits and does no I/O; a driver
(:class:`sim.jobs._Job`, :class:`runner.world.job_port._JobPipeline`) executes each
:class:`Call` with its own call loop (a :class:`~sim.rules.CallMachine` inside) and feeds
back an :class:`Ended`.

Serial loop (``Start(serial=True)``): content ``i``, then actions ``i`` if it succeeded,
then content ``i + 1``; after the last outline the media step's first ``min(media_c, k)``
clips. Pipelined loop (``serial=False``): the content prefetch and its hand-off order are
the browser loop's (shared with the browser path in each world); the machine records every
step's outcome as it ends and starts the media step on :class:`LoopEnded`. Media: each
ended clip frees its lane, which takes the next clip of the plan; the last one ends the job
(:class:`JobDone`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .rules import Step

__all__ = [
    "Call",
    "Ended",
    "JobCommand",
    "JobDone",
    "JobEvent",
    "JobMachine",
    "LoopEnded",
    "Start",
    "first_call",
    "loop_call",
    "media_plan",
]


@dataclass(frozen=True, slots=True)
class Start:
    """The scene loop begins over ``pending`` (in order); ``serial``: the machine issues
    the loop's calls itself."""

    pending: tuple[int, ...]
    serial: bool


@dataclass(frozen=True, slots=True)
class Ended:
    """A step call ended. ``clips``: the scene's speech clips (after a successful actions)."""

    step: int
    order: int
    clip: int
    ok: bool
    clips: int = 0


@dataclass(frozen=True, slots=True)
class LoopEnded:
    """The (pipelined) scene loop has handed every outline on."""


@dataclass(frozen=True, slots=True)
class Call:
    """Start this step call (``clip``: the clip within the scene, media only)."""

    step: int
    order: int
    clip: int = 0


@dataclass(frozen=True, slots=True)
class JobDone:
    """Every clip has ended: the job is over."""


JobEvent = Start | Ended | LoopEnded


def media_plan(scenes: Sequence[int], clips: Callable[[int], int]) -> list[tuple[int, int]]:
    """The media step's work: every clip ``(order, k)`` of every generated scene, in the
    order the scenes were generated (``clips(order)``: the scene's speech clips)."""
    return [(i, k) for i in scenes for k in range(clips(i))]


JobCommand = Call | JobDone


class JobMachine:
    """The job's loop; :meth:`feed` one event, get the commands it causes, in order."""

    def __init__(self, media_c: int) -> None:
        self.media_c = media_c
        self.pending: tuple[int, ...] = ()
        self.serial = True
        self.scenes: list[int] = []  # generated, in the order they were
        self.failed: list[int] = []
        self.clips_of: dict[int, int] = {}
        self.plan: list[tuple[int, int]] = []
        self.issued = 0
        self.ended = 0
        self.clips_failed = 0
        self.media = False
        self.done = False

    @property
    def media_clips(self) -> int:
        return len(self.plan)

    def feed(self, ev: JobEvent) -> list[JobCommand]:
        assert not self.done, "the job has ended"
        if isinstance(ev, Start):
            self.pending, self.serial = ev.pending, ev.serial
            if not ev.serial:
                return []
            return [Call(Step.CONTENT, ev.pending[0])] if ev.pending else self._media()
        if isinstance(ev, LoopEnded):
            assert not self.serial
            return self._media()
        if ev.step == Step.TTS:
            return self._clip_ended(ev.ok)
        return self._step_ended(ev)

    def _step_ended(self, ev: Ended) -> list[JobCommand]:
        i = ev.order
        if not ev.ok:  # a failed content or actions skips the scene
            self.failed.append(i)
        elif ev.step == Step.ACTIONS:
            self.scenes.append(i)
            self.clips_of[i] = ev.clips
        if not self.serial:
            return []
        if ev.ok and ev.step == Step.CONTENT:
            return [Call(Step.ACTIONS, i)]
        k = self.pending.index(i) + 1
        return [Call(Step.CONTENT, self.pending[k])] if k < len(self.pending) else self._media()

    def _media(self) -> list[JobCommand]:
        assert not self.media
        assert sorted(self.scenes + self.failed) == sorted(self.pending), "an outline is open"
        self.media = True
        self.plan = media_plan(self.scenes, self.clips_of.__getitem__)
        self.issued = min(self.media_c, len(self.plan))
        if not self.issued:
            self.done = True
            return [JobDone()]
        return [Call(Step.TTS, i, k) for i, k in self.plan[: self.issued]]

    def _clip_ended(self, ok: bool) -> list[JobCommand]:
        assert self.media
        self.ended += 1
        if not ok:
            self.clips_failed += 1
        if self.issued < len(self.plan):  # the freed lane takes the next clip
            i, k = self.plan[self.issued]
            self.issued += 1
            return [Call(Step.TTS, i, k)]
        if self.ended == len(self.plan):
            self.done = True
            return [JobDone()]
        return []


def first_call(cmds: Sequence[JobCommand]) -> Call | None:
    """The first :class:`Call` among ``cmds`` (a media lane's next clip)."""
    return next((c for c in cmds if isinstance(c, Call)), None)


def loop_call(cmds: Sequence[JobCommand]) -> Call | None:
    """The serial loop's next content or actions call (``None``: the media step is next)."""
    c = first_call(cmds)
    return c if c is not None and c.step != Step.TTS else None
