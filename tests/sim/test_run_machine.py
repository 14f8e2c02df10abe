"""The run machine alone (sim/run_machine.py), driven by a tiny oracle loop in the test: every
expected time is derived here from the rules (upstream engine.ts, retry.ts, deadline.ts)."""

from __future__ import annotations

import heapq
from collections.abc import Callable

from sim.rules import Step
from sim.run_machine import (
    Answer,
    Cancel,
    Claimed,
    Phase,
    Released,
    ReqId,
    RunMachine,
    RunSpec,
    Send,
    SetTimer,
    Timer,
)

S = 1_000_000
Reply = Callable[[ReqId], tuple[int, int]]  # request -> (latency µs, status)


def drive(spec: RunSpec, reply: Reply, jitter: float = 0.0) -> tuple[RunMachine, list[Send]]:
    """Claim the run at 0 and play every request out: latency, status, deadline (504)."""
    m = RunMachine(spec, lambda q: jitter)
    heap: list[tuple[int, int, object]] = [(0, 0, Claimed(spec.run))]
    seq, sent = 1, []
    while heap:
        t = heap[0][0]
        evs = []
        while heap and heap[0][0] == t:
            evs.append(heapq.heappop(heap)[2])
        for cmd in m.feed(t, evs):  # type: ignore[arg-type]
            if isinstance(cmd, Send):
                sent.append(cmd)
                lat, status = reply(cmd.req)
                if t + lat > cmd.deadline_us:
                    item: tuple[int, object] = (cmd.deadline_us, Answer(cmd.req, 504, 0))
                else:
                    item = (t + lat, Answer(cmd.req, status, status))
                heapq.heappush(heap, (item[0], seq, item[1]))
            elif isinstance(cmd, SetTimer):
                heapq.heappush(heap, (cmd.at_us, seq, Timer(cmd.tag)))
            seq += 1
    return m, sent


def ok_1s(fail: Callable[[ReqId], int | None] = lambda q: None) -> Reply:
    def reply(q: ReqId) -> tuple[int, int]:
        f = fail(q)
        return S, 200 if f is None else f

    return reply


def test_all_ok_serial_timeline_is_the_sum_of_its_steps() -> None:
    # outline, agents, then per scene content, actions, clips one by one (c <= 1): 1 s each
    m, _ = drive(RunSpec(run=0, clips=(2, 1, 3), c=0), ok_1s())
    r = m.record
    assert r.phase == Phase.COMPLETED
    assert r.outline_us == 1 * S
    ready = [2 + 4, 2 + 4 + 3, 2 + 4 + 3 + 5]
    assert r.ready == [(k, t * S) for k, t in enumerate(ready)]
    assert r.end_us == ready[-1] * S


def test_a_clip_failing_after_its_retries_pauses_the_run_at_that_scene() -> None:
    # scene 1's clip 1 answers 500: 6 attempts (SCENE_MAX_RETRIES 5), sleeps 1+2+4+8+16 s
    m, sent = drive(
        RunSpec(run=0, clips=(2, 2, 2), c=0),
        ok_1s(lambda q: 500 if (q.step, q.order, q.clip) == (Step.TTS, 1, 1) else None),
    )
    r = m.record
    start = 2 + 4 + 1 + 1 + 1  # outline, agents, scene 0, content 1, actions 1, clip 0
    assert r.phase == Phase.PAUSED and r.paused_at == "scene:1:narration"
    assert r.pause_status == 500
    assert r.end_us == (start + 6 * 1 + (1 + 2 + 4 + 8 + 16)) * S
    assert r.ready == [(0, 6 * S)] and r.failed_scenes == (1,)
    assert sum(1 for s in sent if (s.req.step, s.req.order) == (Step.TTS, 1)) == 1 + 6
    assert not any(s.req.order == 2 for s in sent)  # nothing after the pause


def test_clips_at_c_wait_for_their_siblings_then_fail_the_scene() -> None:
    # c = 3, scene 0 (budget 2 retries: 3 attempts, sleeps 1 + 2 s): clip 0 fails, clips 1..3
    # still all run (allSettled; 3 slots, the 4th clip takes the first freed slot)
    m, sent = drive(
        RunSpec(run=0, clips=(4, 1), c=3),
        ok_1s(lambda q: 503 if (q.step, q.clip) == (Step.TTS, 0) else None),
    )
    r = m.record
    assert r.paused_at == "scene:0:narration" and r.ready == []
    assert sorted({s.req.clip for s in sent if s.req.step == Step.TTS}) == [0, 1, 2, 3]
    assert r.end_us == (2 + 2 + 3 * 1 + 1 + 2) * S  # the failing clip is the last to settle


def test_content_ahead_reaches_the_provider_before_actions_in_one_feed() -> None:
    # c = 2, 4 scenes: when content(1) ends the freed slot starts content(3) before actions(1)
    m, sent = drive(RunSpec(run=0, clips=(0, 0, 0, 0), c=2), ok_1s())
    at = [
        s
        for s in sent
        if s.t_us
        == sent[
            next(i for i, s in enumerate(sent) if (s.req.step, s.req.order) == (Step.CONTENT, 3))
        ].t_us
    ]
    assert [(s.req.step, s.req.order) for s in at] == [(Step.CONTENT, 3), (Step.ACTIONS, 1)]
    assert m.record.phase == Phase.COMPLETED


def test_an_ahead_content_failure_skips_and_pauses_at_the_lowest_after_the_rest() -> None:
    # c = 2, 5 scenes: contents 2 and 3 answer 400 (not retried): skipped; scenes 1 and 4
    # are written; then the run pauses at scene:2:content
    m, _ = drive(
        RunSpec(run=0, clips=(0,) * 5, c=2),
        ok_1s(lambda q: 400 if q.step == Step.CONTENT and q.order in (2, 3) else None),
    )
    r = m.record
    assert [k for k, _ in r.ready] == [0, 1, 4]
    assert r.skipped == [2, 3] and r.paused_at == "scene:2:content" and r.pause_status == 400
    assert r.end_us == r.ready[-1][1]  # decided at the next loop iteration, same instant


def test_an_actions_failure_pauses_at_once_and_aborts_the_contents_ahead() -> None:
    # c = 2, 4 scenes, content takes 10 s: actions(1) fails with 401 at once; content(3) is in
    # flight (started when content(1) ended) and is cancelled
    def reply(q: ReqId) -> tuple[int, int]:
        if q.step == Step.ACTIONS and q.order == 1:
            return S, 401
        return (10 * S if q.step == Step.CONTENT else S), 200

    m = RunMachine(RunSpec(run=0, clips=(0,) * 4, c=2), lambda q: 0.0)
    cancels: list[Cancel] = []
    heap: list[tuple[int, int, object]] = [(0, 0, Claimed(0))]
    seq = 1
    while heap:
        t, _, ev = heapq.heappop(heap)
        for cmd in m.feed(t, [ev]):  # type: ignore[list-item]
            seq += 1
            if isinstance(cmd, Send):
                lat, st = reply(cmd.req)
                heapq.heappush(heap, (t + lat, seq, Answer(cmd.req, st, st)))
            elif isinstance(cmd, Cancel):
                cancels.append(cmd)
    r = m.record
    assert r.paused_at == "scene:1:actions" and r.phase == Phase.PAUSED
    # outline 1 + agents 1 + scene 0 (10 + 1) = 13; content 1, 2 ahead at 13 → 23; actions(1)
    # at 23 → fails at 24; content 3 started at 23 is in flight and is aborted
    assert r.end_us == 24 * S
    assert [(c.req.step, c.req.order) for c in cancels] == [(Step.CONTENT, 3)]


def test_same_instant_events_are_handled_in_canonical_order_whatever_the_feed_order() -> None:
    def run(order: int) -> list[object]:
        m = RunMachine(RunSpec(run=0, clips=(0, 0, 0, 0), c=3), lambda q: 0.0)
        m.feed(0, [Claimed(0)])
        m.feed(1, [Answer(ReqId(Step.OUTLINE, 0, 0, 0, 0), 200, 200)])
        m.feed(2, [Answer(ReqId(Step.AGENTS, 0, 0, 0, 0), 200, 200)])
        m.feed(3, [Answer(ReqId(Step.CONTENT, 0, 0, 0, 0), 200, 200)])
        m.feed(4, [Answer(ReqId(Step.ACTIONS, 0, 0, 0, 0), 200, 200)])  # pool of 3 starts
        evs = [
            Answer(ReqId(Step.CONTENT, 0, k, 0, 0), 200 if k != 2 else 500, 0) for k in (1, 2, 3)
        ]
        return m.feed(5, evs[::order])

    assert run(1) == run(-1)


def test_outline_attempts_are_back_to_back_and_its_failure_pauses() -> None:
    m, sent = drive(RunSpec(run=0, clips=(1,)), lambda q: (2 * S, 503))
    assert [(s.req.step, s.t_us) for s in sent] == [(Step.OUTLINE, a * 2 * S) for a in range(3)]
    assert m.record.paused_at == "outline" and m.record.end_us == 6 * S


def test_the_outline_deadline_covers_the_whole_step() -> None:
    # 3 attempts of 200 s each; the step's 300 s deadline ends the second one as 504
    m, sent = drive(RunSpec(run=0, clips=(1,)), lambda q: (200 * S, 503))
    assert [s.deadline_us for s in sent] == [300 * S, 300 * S]
    assert m.record.paused_at == "outline" and m.record.end_us == 300 * S


def test_an_agents_failure_falls_back_to_presets_and_the_run_goes_on() -> None:
    m, _ = drive(
        RunSpec(run=0, clips=(0,)), ok_1s(lambda q: 500 if q.step == Step.AGENTS else None)
    )
    r = m.record
    assert r.agents_preset and r.phase == Phase.COMPLETED and r.ready == [(0, 4 * S)]


def test_without_auto_confirm_the_execution_is_released_awaiting() -> None:
    m = RunMachine(RunSpec(run=7, clips=(0,), confirm_auto=False), lambda q: 0.0)
    m.feed(0, [Claimed(7)])
    cmds = m.feed(S, [Answer(ReqId(Step.OUTLINE, 7, 0, 0, 0), 200, 200)])
    assert cmds == [Released(7, Phase.AWAITING, S)]
    cmds = m.feed(3 * S, [Claimed(7)])
    assert [type(c) for c in cmds] == [Send] and cmds[0].req.step == Step.AGENTS  # type: ignore[union-attr]


def _media_reply(fail: Callable[[ReqId], int | None] = lambda q: None) -> Reply:
    def reply(q: ReqId) -> tuple[int, int]:
        f = fail(q)
        return (10 * S if q.step == Step.MEDIA else S), 200 if f is None else f

    return reply


def test_the_media_lane_runs_after_scene_0_one_item_at_a_time_and_completion_waits() -> None:
    # 2 scenes without clips: scene 0 written at 4 s (outline, agents, content, actions); the
    # lane starts then, before scene 1's content; 3 items of 10 s end at 34 s
    m, sent = drive(RunSpec(run=0, clips=(0, 0), media=3), _media_reply())
    r = m.record
    at4 = [(s.req.step, s.req.order) for s in sent if s.t_us == 4 * S]
    assert at4 == [(Step.MEDIA, 0), (Step.CONTENT, 1)]
    assert [s.t_us for s in sent if s.req.step == Step.MEDIA] == [4 * S, 14 * S, 24 * S]
    assert r.ready == [(0, 4 * S), (1, 6 * S)] and r.media_ok == 3
    assert r.phase == Phase.COMPLETED and r.end_us == 34 * S


def test_a_media_failure_never_pauses_and_a_pause_waits_for_the_item_in_hand() -> None:
    m, _ = drive(
        RunSpec(run=0, clips=(0, 0), media=2),
        _media_reply(lambda q: 500 if q.step == Step.MEDIA else None),
    )
    assert m.record.phase == Phase.COMPLETED and m.record.media_failed == 2
    # actions(1) fails (401) at 6 s: the image in hand (4..14 s) finishes, no other starts
    m, sent = drive(
        RunSpec(run=0, clips=(0, 0), media=3),
        _media_reply(lambda q: 401 if (q.step, q.order) == (Step.ACTIONS, 1) else None),
    )
    r = m.record
    assert r.paused_at == "scene:1:actions" and r.end_us == 14 * S and r.media_ok == 1
    assert sum(1 for s in sent if s.req.step == Step.MEDIA) == 1
