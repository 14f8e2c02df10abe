"""The server job's loop alone (sim.job_machine): feed events, check the commands.

Expected values come from the rules in docs/server-path.md: serial content -> actions per
outline, a failed step skips the scene, then every clip of every generated scene in order
through ``media_c`` lanes; a freed lane takes the next clip; the last clip ends the job.
"""

from __future__ import annotations

import numpy as np
import pytest

from sim.job_machine import Call, Ended, JobDone, JobMachine, LoopEnded, Start
from sim.rules import Step

C, A, T = Step.CONTENT, Step.ACTIONS, Step.TTS


def test_serial_loop_skips_failures_then_media_in_order() -> None:
    jm = JobMachine(media_c=2)
    assert jm.feed(Start((0, 1, 2), serial=True)) == [Call(C, 0)]
    assert jm.feed(Ended(C, 0, 0, True)) == [Call(A, 0)]
    assert jm.feed(Ended(A, 0, 0, True, clips=2)) == [Call(C, 1)]
    assert jm.feed(Ended(C, 1, 0, False)) == [Call(C, 2)]  # content failed: scene 1 skipped
    assert jm.feed(Ended(C, 2, 0, True)) == [Call(A, 2)]
    # scenes 0 (2 clips) and 2 (1 clip): plan (0,0) (0,1) (2,0); min(2, 3) = 2 lanes open
    assert jm.feed(Ended(A, 2, 0, True, clips=1)) == [Call(T, 0, 0), Call(T, 0, 1)]
    assert jm.feed(Ended(T, 0, 1, True)) == [Call(T, 2, 0)]  # the freed lane takes the next
    assert jm.feed(Ended(T, 0, 0, False)) == []  # nothing left to start; (2,0) still out
    assert jm.feed(Ended(T, 2, 0, True)) == [JobDone()]
    assert (jm.scenes, jm.failed, jm.media_clips, jm.clips_failed) == ([0, 2], [1], 3, 1)
    assert jm.done


def test_failed_actions_skips_the_scene() -> None:
    jm = JobMachine(media_c=1)
    jm.feed(Start((0, 1), serial=True))
    jm.feed(Ended(C, 0, 0, True))
    assert jm.feed(Ended(A, 0, 0, False)) == [Call(C, 1)]
    jm.feed(Ended(C, 1, 0, True))
    assert jm.feed(Ended(A, 1, 0, True, clips=1)) == [Call(T, 1, 0)]
    assert jm.failed == [0]


def test_a_job_without_clips_ends_when_its_loop_does() -> None:
    assert JobMachine(3).feed(Start((), serial=True)) == [JobDone()]
    jm = JobMachine(3)
    jm.feed(Start((4,), serial=True))
    assert jm.feed(Ended(C, 4, 0, False)) == [JobDone()]  # "No scenes were generated"
    assert (jm.scenes, jm.failed, jm.media_clips) == ([], [4], 0)


def test_pipelined_loop_records_outcomes_and_media_waits_for_loop_end() -> None:
    jm = JobMachine(media_c=4)
    assert jm.feed(Start((0, 1, 2), serial=False)) == []  # the prefetch issues the calls
    # outcomes in the prefetch's order: content 1 fails while 0 and 2 go on
    for ev in (Ended(C, 0, 0, True), Ended(C, 1, 0, False), Ended(A, 0, 0, True, clips=1)):
        assert jm.feed(ev) == []
    assert jm.feed(Ended(C, 2, 0, True)) == []
    assert jm.feed(Ended(A, 2, 0, True, clips=2)) == []
    # plan (0,0) (2,0) (2,1): 3 clips < 4 lanes, all start at once, in plan order
    assert jm.feed(LoopEnded()) == [Call(T, 0, 0), Call(T, 2, 0), Call(T, 2, 1)]
    assert jm.feed(Ended(T, 2, 1, True)) == []
    assert jm.feed(Ended(T, 0, 0, True)) == []
    assert jm.feed(Ended(T, 2, 0, True)) == [JobDone()]


def test_loop_end_with_an_open_outline_is_refused() -> None:
    jm = JobMachine(1)
    jm.feed(Start((0, 1), serial=False))
    jm.feed(Ended(C, 0, 0, False))
    with pytest.raises(AssertionError):
        jm.feed(LoopEnded())


@pytest.mark.parametrize(("clips", "media_c"), [(7, 3), (2, 5), (6, 1), (9, 9)])
def test_media_lanes_bounded_and_plan_order(clips: int, media_c: int) -> None:
    """Clip ends in a random order: in flight never above min(media_c, k), every clip of
    the plan started once in plan order, one JobDone after the k-th end."""
    rng = np.random.default_rng(clips * 100 + media_c)
    jm = JobMachine(media_c)
    jm.feed(Start((0,), serial=True))
    jm.feed(Ended(C, 0, 0, True))
    out = jm.feed(Ended(A, 0, 0, True, clips=clips))
    started = [c for c in out if isinstance(c, Call)]
    flight = list(started)
    peak, done = len(flight), 0
    while flight:
        c = flight.pop(int(rng.integers(len(flight))))
        for cmd in jm.feed(Ended(T, c.order, c.clip, bool(rng.integers(2)))):
            if isinstance(cmd, Call):
                flight.append(cmd)
                started.append(cmd)
            else:
                done += 1
        peak = max(peak, len(flight))
    assert peak == min(media_c, clips)
    assert [(c.order, c.clip) for c in started] == [(0, k) for k in range(clips)]
    assert done == 1 and jm.done
