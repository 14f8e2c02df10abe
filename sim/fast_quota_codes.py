"""The integer codes the limited-key engine (:mod:`sim.fast_quota`) and its compiled loop
(:mod:`sim.fast_quota_loop`) share: written once here, read by both (no numba: importing
:mod:`sim.fast_quota` does not import numba).

Where a code stands for something defined elsewhere it is taken from there (the steps from
:class:`sim.rules.Step`, the provider's decision statuses from :mod:`sim.provider`, the run
statuses' indices from :data:`sim.fast.STATUSES`). The compiled loop reads these as constants
frozen when it is compiled, and numba's on-disk cache does not track this module: before the
loop's first call in a process, :func:`sim.fast_quota_loop.recompile_if_stale` compares the
codes compiled in with these and compiles the loop again if one changed.
"""

from __future__ import annotations

from .fast import STATUSES
from .provider import RESET, TRUNCATED, Call, arrival_order
from .rules import RunStatus, Step

__all__ = [
    "ACTIONS",
    "COMPLETED",
    "CONTENT",
    "C_5XX",
    "C_OK",
    "C_RAND",
    "C_RESET",
    "C_STALL",
    "C_TRUNC",
    "FIRST_FAILED",
    "PAUSED",
    "RANK_ACTIONS_FIRST",
    "RANK_IN_ORDER",
    "REASONS",
    "RESET",
    "RS_5XX",
    "RS_INFL",
    "RS_OK",
    "RS_RAND",
    "RS_RESET",
    "RS_STALL",
    "RS_TRUNC",
    "TRUNCATED",
    "TTS",
]

# the browser loop's steps (tables and callers are indexed by them)
CONTENT, ACTIONS, TTS = int(Step.CONTENT), int(Step.ACTIONS), int(Step.TTS)

# what an attempt's draws decide (:meth:`sim.provider.KeyState.decide`'s order): a random 429,
# else a 5xx, else a reset, a stall or a truncated body (sim.fast_quota._codes)
C_OK, C_RAND, C_5XX, C_RESET, C_STALL, C_TRUNC = range(6)

# the reason a request is logged with (sim.schema.RequestRecord.reason), by index
REASONS = ("ok", "5xx", "inflight", "random", "reset", "stall", "truncated")
RS_OK, RS_5XX, RS_INFL, RS_RAND, RS_RESET, RS_STALL, RS_TRUNC = range(len(REASONS))

# how a run ended: its index into sim.fast.STATUSES
COMPLETED = STATUSES.index(RunStatus.COMPLETED)
PAUSED = STATUSES.index(RunStatus.PAUSED)
FIRST_FAILED = STATUSES.index(RunStatus.FIRST_SCENE_FAILED)


def _ranks(actions_first: bool) -> tuple[int, ...]:
    """Each step's rank among arrivals on a key at one instant (the first field of
    :func:`sim.provider.arrival_order`)."""
    steps = (CONTENT, ACTIONS, TTS)
    return tuple(arrival_order(Call(0, s, 0, 0, 0, ""), actions_first)[0] for s in steps)


RANK_ACTIONS_FIRST = _ranks(True)  # the actions-first hand-off: (1, 0, 2)
RANK_IN_ORDER = _ranks(False)  # (0, 1, 2)
