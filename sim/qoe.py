"""What a learner feels: playback, startup delay and stalls, and a decision rule on them.

OpenMAIC's classroom plays scene 1 while the loop generates the rest behind it. The
learner model (one pure function, :func:`qoe_us`, called by the SimPy model, the real
pipeline and the vectorised fast path):

* a scene plays for its **playback time**: the audio of each of its speech clips (a
  keyed draw per clip from ``[playback] clip``) plus a per-scene constant for the
  non-speech actions (``non_speech_s``);
* the learner **starts** (``start``): ``first_scene`` (the default) when the whole first
  scene is ready (under upstream's current profile that is the foreground scene);
  ``buffer`` when the scenes ready, in order, hold at least ``buffer_s`` of playback
  (or all of them are ready); ``all_scenes`` when the last scene is ready (no stalls);
* then plays the scenes **back to back in outline order**, and waits whenever the next
  one is not ready yet: every such wait is a **stall** (a wait of 0 is none);
* a scene that **failed or was never generated** (its content failed and the loop
  skipped it, or the run paused or ended before it) is **skipped**: the learner goes on
  to the next ready scene in order, and the classroom ends after the last ready one.
  Ready times are increasing in outline order (the loop adds scenes in order), so
  skipping never hides a wait: the wait for the scene after a failed one is counted.
  What the failures cost the learner is counted by the failure metrics (P(any failed
  scene)), not as stall.

Metrics of a run: ``startup_s`` (when the learner starts; NaN when no scene was ready),
``stall_s`` (total wait after the start), ``stalls`` (number of waits), ``playback_s``
(playback time of the ready scenes), ``stall_ratio`` = stall / playback (NaN when the
playback is 0), ``last_scene_s`` (when the last scene was ready; NaN when none was).
Times are whole microseconds inside, so both worlds get the same floats.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .dists import Dist, LogNormal, dist_from_mapping, field_name
from .rules import ScenarioError, check_number

__all__ = [
    "DEFAULT_PLAYBACK",
    "QOE_FIELDS",
    "START_RULES",
    "Candidate",
    "Choice",
    "Playback",
    "QoE",
    "QoERule",
    "choose_concurrency",
    "playback_from_mapping",
    "qoe_of_run",
    "qoe_us",
]

I64 = NDArray[np.int64]
F64 = NDArray[np.float64]
START_RULES = ("first_scene", "buffer", "all_scenes")
QOE_FIELDS = ("startup_s", "stall_s", "stalls", "stall_ratio", "last_scene_s", "playback_s")
_FIELDS = {"clip", "non_speech_s", "start", "buffer_s"}


@dataclass(frozen=True)
class Playback:
    """How long scenes play and when the learner starts (see the module docstring)."""

    clip: Dist = field(default_factory=lambda: LogNormal(8.0, 0.5))
    non_speech_s: float = 5.0
    start: str = "first_scene"
    buffer_s: float = 0.0

    def __post_init__(self) -> None:
        check_number("playback.non_speech_s", self.non_speech_s, hi=3600.0)
        if self.start not in START_RULES:
            raise ScenarioError(
                f"playback.start: must be one of {', '.join(START_RULES)}; got {self.start!r}"
            )
        check_number("playback.buffer_s", self.buffer_s, hi=86400.0)
        if self.start == "buffer" and self.buffer_s <= 0:
            raise ScenarioError(
                f"playback.buffer_s: must be > 0 with start = 'buffer', got {self.buffer_s!r}"
            )

    @property
    def non_speech_us(self) -> int:
        return round(self.non_speech_s * 1e6)

    @property
    def buffer_us(self) -> int:
        return round(self.buffer_s * 1e6)

    def to_mapping(self) -> dict[str, Any]:
        return {
            "clip": self.clip.to_mapping(),
            "non_speech_s": self.non_speech_s,
            "start": self.start,
            "buffer_s": self.buffer_s,
        }


DEFAULT_PLAYBACK = Playback()


def playback_from_mapping(m: Mapping[str, Any]) -> Playback:
    """A :class:`Playback` from a ``[playback]`` table (absent fields: the defaults)."""
    if not isinstance(m, Mapping):
        raise ScenarioError(f"playback: must be a table, got {m!r}")
    for k in m:
        if k not in _FIELDS:
            raise ScenarioError(
                f"playback.{field_name(k)}: unknown field; allowed: {', '.join(sorted(_FIELDS))}"
            )
    clip = DEFAULT_PLAYBACK.clip
    if "clip" in m:
        try:
            clip = dist_from_mapping(m["clip"])
        except (ValueError, TypeError) as e:
            raise ScenarioError(f"playback.clip.{e}") from None
    start = m.get("start", DEFAULT_PLAYBACK.start)
    if not isinstance(start, str):
        allowed = ", ".join(START_RULES)
        raise ScenarioError(f"playback.start: must be one of {allowed}; got {start!r}")
    return Playback(
        clip=clip,
        non_speech_s=m.get("non_speech_s", DEFAULT_PLAYBACK.non_speech_s),
        start=start,
        buffer_s=m.get("buffer_s", DEFAULT_PLAYBACK.buffer_s),
    )


@dataclass(frozen=True)
class QoE:
    """The learner's metrics of runs, as arrays of one value per run (seconds)."""

    startup_s: F64
    stall_s: F64
    stalls: I64
    stall_ratio: F64
    last_scene_s: F64
    playback_s: F64

    def row(self, r: int) -> dict[str, Any]:
        """Run ``r`` as plain Python numbers (the fields of :class:`sim.schema.RunResult`)."""
        return {
            "startup_s": float(self.startup_s[r]),
            "stall_s": float(self.stall_s[r]),
            "stalls": int(self.stalls[r]),
            "stall_ratio": float(self.stall_ratio[r]),
            "last_scene_s": float(self.last_scene_s[r]),
            "playback_s": float(self.playback_s[r]),
        }


def _start_us(ready: I64, play: I64, start: str, buffer_us: int) -> I64:
    """When each run's learner starts (-1: no scene ready)."""
    ok = ready >= 0
    last: I64 = np.where(ok, ready, -1).max(axis=1)
    if start == "all_scenes":
        return last
    lowest = np.where(ok, ready, np.iinfo(np.int64).max).min(axis=1)
    first: I64 = np.where(ok.any(axis=1), lowest, -1)
    if start == "first_scene":
        return first
    # buffer: the first ready scene (in order) at which the ready prefix holds buffer_us
    buffered = np.cumsum(np.where(ok, play, 0), axis=1) >= buffer_us
    hit = ok & buffered
    col = np.where(hit.any(axis=1), hit.argmax(axis=1), 0)
    at = ready[np.arange(len(ready)), col]
    out: I64 = np.where(hit.any(axis=1), at, last)
    return out


def qoe_us(
    ready_us: I64,
    play_us: I64,
    start: str = "first_scene",
    buffer_us: int = 0,
    *,
    compiled: bool = False,
) -> QoE:
    """The learner's metrics of runs: ``ready_us`` (runs, N) the time each scene was ready
    (µs from the run's start, -1 when it never was), ``play_us`` (runs, N) its playback
    time in µs. The model of the module docstring; every world calls this function. With
    ``compiled``, the integers come from :func:`sim.runs_nb_records.learner_ints` (one
    compiled pass per run, the same integers; it imports numba, which the real world never
    does)."""
    ready = np.atleast_2d(np.asarray(ready_us, dtype=np.int64))
    play = np.atleast_2d(np.asarray(play_us, dtype=np.int64))
    if ready.shape != play.shape:
        raise ValueError(f"ready_us and play_us: shapes differ, {ready.shape} vs {play.shape}")
    if compiled:
        from .runs_nb_records import learner_ints

        s, stall, stalls, playback, last = learner_ints(
            ready, play, START_RULES.index(start), buffer_us
        )
    else:
        s, stall, stalls, playback, last = _learner_ints(ready, play, start, buffer_us)
    any_ok = s >= 0
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(playback > 0, stall / np.where(playback > 0, playback, 1), np.nan)
    return QoE(
        startup_s=np.where(any_ok, s / 1e6, np.nan),
        stall_s=stall / 1e6,
        stalls=stalls,
        stall_ratio=np.where(any_ok, ratio, np.nan),
        last_scene_s=np.where(any_ok, last / 1e6, np.nan),
        playback_s=playback / 1e6,
    )


def _learner_ints(ready: I64, play: I64, start: str, buffer_us: int) -> tuple[I64, ...]:
    """Per run: its start, stall, stalls, playback and last ready scene (-1 where none), in
    µs and counts, by whole-array passes."""
    s = _start_us(ready, play, start, buffer_us)
    # The learner, free at ``clock`` (at first ``s``), waits for each ready scene in turn:
    # clock = max(clock, ready_j) + play_j. In integers, clock after scene j is
    # done_j + M_j: done_j the playback of the ready scenes up to j, M_j the running max of
    # s and ready_k - (playback before k) over the ready k <= j. So a scene is waited for
    # exactly when it raises M, by what it raises it: the stall is M's rise over s.
    ok = ready >= 0
    okplay = np.where(ok, play, 0)
    before = np.cumsum(okplay, axis=1) - okplay
    m = np.concatenate([s[:, None], np.where(ok, ready - before, s[:, None])], axis=1)
    m = np.maximum.accumulate(m, axis=1)
    stall = m[:, -1] - s
    stalls = (m[:, 1:] > m[:, :-1]).sum(axis=1)
    playback = okplay.sum(axis=1)
    last = np.where(ready >= 0, ready, -1).max(axis=1)
    return s, stall, stalls, playback, last


def qoe_of_run(
    n: int, ready: Sequence[tuple[int, int]], play_us: Mapping[int, int], playback: Playback
) -> dict[str, Any]:
    """One run's metrics: ``ready`` (outline order, µs) of the scenes added, ``play_us``
    their playback times; :func:`qoe_us` on one row, in plain integers (the same numbers:
    tests/sim/test_qoe.py compares them; a run's result is made once per classroom)."""
    r = [-1] * n
    p = [0] * n
    for order, t in ready:
        r[order] = t
        p[order] = play_us[order]
    s, last = _start_of_run(r, p, playback.start, playback.buffer_us)
    clock = s  # when the learner is free for the next scene
    stall = stalls = playback_us = 0
    for t, play in zip(r, p, strict=True):
        if t < 0:
            continue
        wait = t - clock if t > clock else 0
        stall += wait
        stalls += wait > 0
        clock += wait + play
        playback_us += play
    any_ok = s >= 0
    nan = math.nan
    ratio = stall / playback_us if playback_us > 0 else nan
    return {
        "startup_s": s / 1e6 if any_ok else nan,
        "stall_s": stall / 1e6,
        "stalls": stalls,
        "stall_ratio": ratio if any_ok else nan,
        "last_scene_s": last / 1e6 if any_ok else nan,
        "playback_s": playback_us / 1e6,
    }


def _start_of_run(r: list[int], p: list[int], start: str, buffer_us: int) -> tuple[int, int]:
    """:func:`_start_us` of one run (-1: no scene ready), and its last ready time."""
    last = max(r)  # -1 when no scene is ready
    if start == "all_scenes" or last < 0:
        return last, last
    if start == "first_scene":
        return min(t for t in r if t >= 0), last
    held = 0  # buffer: the first ready scene (in order) at which the ready prefix holds it
    for t, play in zip(r, p, strict=True):
        if t >= 0:
            held += play
            if held >= buffer_us:
                return t, last
    return last, last


# -- the decision rule ---------------------------------------------------------------------
@dataclass(frozen=True)
class QoERule:
    """Pick a concurrency on what learners feel. A candidate *c* is admissible when

    (a) P(any failed scene) <= serial's + ``failure_budget_pp`` points, and
    (b) its mean stall time and mean startup delay are each no worse than serial's by
        more than max(``*_tol_rel`` × serial's, ``*_tol_abs_s``);

    among the admissible, (c) the least mean stall (compared at ``stall_resolution_s``),
    then the earliest mean last scene, then the smallest *c*. Serial (c = 1) is always
    admissible, so the rule always answers."""

    failure_budget_pp: float = 1.0
    stall_tol_rel: float = 0.05
    stall_tol_abs_s: float = 1.0
    startup_tol_rel: float = 0.05
    startup_tol_abs_s: float = 1.0
    stall_resolution_s: float = 0.1

    def text(self) -> str:
        return (
            f"(a) P(any failed scene) <= serial's + {self.failure_budget_pp:g} point(s); "
            f"(b) mean stall <= serial's + max({100 * self.stall_tol_rel:g}%, "
            f"{self.stall_tol_abs_s:g} s) and mean startup delay <= serial's + "
            f"max({100 * self.startup_tol_rel:g}%, {self.startup_tol_abs_s:g} s); "
            f"(c) among those the least mean stall (to {self.stall_resolution_s:g} s), "
            "then the earliest mean last scene, then the smallest c"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "failure_budget_pp": self.failure_budget_pp,
            "stall_tol_rel": self.stall_tol_rel,
            "stall_tol_abs_s": self.stall_tol_abs_s,
            "startup_tol_rel": self.startup_tol_rel,
            "startup_tol_abs_s": self.startup_tol_abs_s,
            "stall_resolution_s": self.stall_resolution_s,
            "text": self.text(),
        }


@dataclass(frozen=True)
class Candidate:
    """One cell's means as the rule reads them."""

    concurrency: int
    p_any_failed: float
    startup_s: float
    stall_s: float
    last_scene_s: float


@dataclass(frozen=True)
class Choice:
    concurrency: int
    admissible: tuple[int, ...]
    why_not: dict[int, str]


def _worse(x: float, base: float, rel: float, abs_s: float) -> bool:
    return math.isnan(x) or x > base + max(rel * base, abs_s)


def choose_concurrency(rule: QoERule, serial: Candidate, cells: Sequence[Candidate]) -> Choice:
    """Apply ``rule`` to the candidates (serial included or not) against ``serial``."""
    why: dict[int, str] = {}
    ok = [serial]
    for c in cells:
        if c.concurrency == serial.concurrency:
            continue
        if math.isnan(c.p_any_failed) or c.p_any_failed > (
            serial.p_any_failed + rule.failure_budget_pp / 100
        ):
            why[c.concurrency] = "failures"
        elif _worse(c.stall_s, serial.stall_s, rule.stall_tol_rel, rule.stall_tol_abs_s):
            why[c.concurrency] = "stall"
        elif _worse(c.startup_s, serial.startup_s, rule.startup_tol_rel, rule.startup_tol_abs_s):
            why[c.concurrency] = "startup"
        else:
            ok.append(c)
    res = rule.stall_resolution_s

    def key(c: Candidate) -> tuple[float, float, int]:
        last = c.last_scene_s if not math.isnan(c.last_scene_s) else math.inf
        return (round(c.stall_s / res), last, c.concurrency)

    best = min(ok, key=key)
    return Choice(best.concurrency, tuple(sorted(c.concurrency for c in ok)), why)
