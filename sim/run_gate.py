"""The key-wide gate of a generation-runs server (``--adaptive gate`` under ``runs``).

One :class:`~sim.keygate.KeyGate` per provider key (the LLM key, the TTS key), shared by every
run on the server; its cap is the key's in-flight limit (unlimited: a cap that never binds) and
its rules are :class:`~sim.limiter.GateCore`'s ``gate`` policy: AIMD on the cap, a 429 caps the
gate at the other attempts it had in flight (the key's limit, learned) and holds new starts for
1 s (the runs' client reads no Retry-After). A 429 sends the attempt back to the gate without
spending the retry budget (:class:`~sim.rules.CallMachine` ``gated``, at most
:data:`~sim.rules.MAX_429_WAITS` times). The media key has no gate: the model gives the image
provider no limit, and each run sends one media item at a time.

Waiting order, lowest first (``docs/runs.md``, "The key-wide gate"): a :class:`GateOrder`
(:func:`gate_rank`), the deployment's ``RunsConfig.gate_order`` (``--gate-order``); the
default is the one the comparison there chose:

* ``tiers`` (the default): ``(tier, arrival, run, scene, step, clip)``. Tier 0 is a run's work
  before its first scene is written (the outline, the agent profiles, scene 0's content,
  actions and clips), so a new run's first scene passes ahead of the older runs' later work;
  tier 1 is the rest, by the run's arrival (first come, first served between runs).
* ``need``: earliest need time first, ``(need, run, scene, step, clip)``: the moment the run's
  learner will need the work if nothing stalls. For the work before the first scene, the
  run's arrival; for scene k >= 1, the time the run's first scene was written plus the
  playback of scenes 0..k-1 (the learner's keyed draws, :meth:`sim.draws.Draws.playback_us`).
  Scene k >= 1's work is made only after scene 0 is written, so its need time is known when
  it is offered and never changes (a re-queued attempt gets the same one).
* ``need-arrival``: the same from the arrival (scene k at arrival + playback before it).
* ``fifo``: ``(arrival, run, scene, step, clip)``.

Inside a run, every order puts the scene it plays next (its actions and clips, the content it
waits for) ahead of the content generated ahead; a re-queued attempt keeps its rank.

Deadlines: an attempt's per-attempt deadline starts when it passes the gate (upstream's
``AbortSignal`` starts with the request); the outline's deadline is the whole step's and keeps
running while it waits: an outline attempt still waiting at it is withdrawn and answers 504
without reaching the provider.

The class is sans-IO: a driver offers the round's requests, tells the gate how each admitted
one ended (in canonical order), cancels, expires, and after every round takes what
:meth:`RunGates.pump` admits and the time to pump again.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .keygate import KeyGate, key_cap
from .rules import Step
from .run_machine import LLM_KEY, TTS_KEY
from .runs_config import GATE_ORDERS, GateOrder
from .scenario import Scenario

__all__ = ["GATE_ORDERS", "Admitted", "GateOrder", "RunGates", "gate_rank"]

Req = tuple[int, ...]  # (step, run, order, clip, attempt): a ReqId or the fast engine's tuple


@dataclass(frozen=True, slots=True)
class Admitted:
    """A request that passed its gate at ``t_us``: send it now on ``key``, give up at
    ``deadline_us``."""

    req: Req
    key: str
    deadline_us: int


def gate_rank(
    req: Req,
    arrival_us: int,
    before_us: int = 0,
    order: str = GateOrder.TIERS,
    first_us: int | None = None,
) -> tuple[int, ...]:
    """A request's place at its gate (lowest first; see the module docstring);
    ``before_us``: the playback time of its run's scenes before the request's scene;
    ``first_us``: when the run's first scene was written (None: not yet)."""
    step, run, scene, clip = req[0], req[1], req[2], req[3]
    if order in ("need", "need-arrival"):
        since = first_us if order == "need" and scene > 0 and first_us is not None else arrival_us
        return (since + before_us, run, scene, step, clip)
    if order == "tiers":
        return (0 if scene == 0 else 1, arrival_us, run, scene, step, clip)
    return (arrival_us, run, scene, step, clip)


class RunGates:
    """The server's key-wide gates and the requests waiting at them or holding a slot."""

    def __init__(
        self,
        sc: Scenario,
        arrivals_us: list[int],
        playback_us: Callable[[int], Sequence[int]] | None = None,
        order: str = GateOrder.TIERS,
        first_scene_us: Callable[[int], int | None] | None = None,
    ) -> None:
        """``playback_us(run)``: the run's scenes' playback times, in scene order (asked once
        per run, at its first request past scene 0; None: every scene plays 0 s);
        ``order``: a :class:`GateOrder` (a bad one: ValueError); ``first_scene_us(run)``: when
        the run's first scene was written (None: not yet)."""
        self.gates = {
            LLM_KEY: KeyGate(key_cap(sc.quota_llm.max_inflight)),
            TTS_KEY: KeyGate(key_cap(sc.quota_tts.max_inflight)),
        }
        self.arrivals_us = arrivals_us
        self.playback_us = playback_us
        self.order = GateOrder(order)
        self.first_scene_us = first_scene_us
        self._before: dict[int, list[int]] = {}  # run -> playback before each scene
        # waiting: req -> (key, window or absolute deadline, absolute?)
        self.waiting: dict[Req, tuple[str, int, bool]] = {}
        self.held: dict[Req, tuple[str, tuple[int, ...]]] = {}
        self.admitted: list[Admitted] = []
        self.wakes: set[int] = set()  # hold ends a driver was told to pump at
        self._now = 0

    def offer(self, t_us: int, req: Req, key: str, deadline_us: int) -> int | None:
        """Queue request ``req`` made at ``t_us`` with the deadline the run gave it; returns
        a time at which to :meth:`expire` it (an outline's step deadline), else None."""
        gate = self.gates.get(key)
        if gate is None:  # the media key: no gate
            self.admitted.append(Admitted(req, key, deadline_us))
            return None
        whole = req[0] == Step.OUTLINE  # the step's deadline, running since the claim
        self.waiting[req] = (key, deadline_us if whole else deadline_us - t_us, whole)
        run, first = req[1], None
        if req[2] > 0 and self.order == "need" and self.first_scene_us is not None:
            first = self.first_scene_us(run)
        rank = gate_rank(req, self.arrivals_us[run], self._before_us(req), self.order, first)
        gate.wait(rank, lambda: self._wake(req, rank))
        return deadline_us if whole else None

    def _before_us(self, req: Req) -> int:
        """The playback time of ``req``'s run's scenes before its scene."""
        run, scene = req[1], req[2]
        if self.playback_us is None or scene == 0 or not self.order.startswith("need"):
            return 0
        before = self._before.get(run)
        if before is None:
            before, total = [], 0
            for play in self.playback_us(run):
                before.append(total)
                total += play
            self._before[run] = before
        return before[scene]

    def _wake(self, req: Req, rank: tuple[int, ...]) -> bool:
        got = self.waiting.pop(req, None)
        if got is None:
            return False  # withdrawn (a pause, an expired outline)
        key, dl, whole = got
        self.held[req] = (key, rank)
        self.admitted.append(Admitted(req, key, dl if whole else self._now + dl))
        return True

    def pump(self, t_us: int) -> tuple[list[Admitted], list[int]]:
        """Admit what fits now, lowest rank first per key (LLM, then TTS); returns the
        admitted requests and the new times at which to pump again (a hold's end)."""
        self._now = t_us
        wake: list[int] = []
        for gate in self.gates.values():
            at = gate.pump(t_us)
            if at is not None and at not in self.wakes:
                self.wakes.add(at)
                wake.append(at)
        out, self.admitted = self.admitted, []
        return out, wake

    def ended(self, t_us: int, req: Req, status: int, provider_status: int) -> None:
        """An admitted request ended (its answer, or its deadline: 504): tell its gate and
        free the slot (call in canonical order)."""
        got = self.held.pop(req, None)
        if got is None:
            return
        key, rank = got
        core = self.gates[key]
        if provider_status == 429:
            core.on_429(t_us, None)
        elif status == 200:
            core.on_success(t_us)
        core.release(rank)

    def cancel(self, req: Req) -> bool:
        """A pause aborts ``req``: True when it was still waiting (it never reached the
        provider); a slot it held is freed."""
        if self.waiting.pop(req, None) is not None:
            return True
        got = self.held.pop(req, None)
        if got is not None:
            self.gates[got[0]].release(got[1])
        return False

    def expire(self, req: Req) -> bool:
        """An outline's step deadline: True when the attempt was still waiting (withdrawn;
        the run is answered 504)."""
        return self.waiting.pop(req, None) is not None
