"""Closed forms and bounds for makespan and time to first scene.

Notation: ``N`` scenes; content ``C``, actions ``A`` and clip ``T`` seconds;
``k`` clips per scene run ``t`` at a time, so a scene's tail after its content is
``S = A + ceil(k/t)·T`` (with ``t = 1``: ``A + k·T``). Unlimited quota, no faults.

* serial: ``N·(C + S)``; first scene at ``C + S``;
* hybrid, cap ``c``: ``ceil(N/c)·C + N·S``; first scene at ``ceil(N/c)·C + S``;
* pipelined, cap ``c``: content ``i`` ends at ``(floor(i/c)+1)·C`` and scene ``i``
  at ``max(end of scene i-1, that) + S``; when ``c >= ceil(C/S)`` this is
  ``C + N·S``, the critical path; first scene at ``C + S``.

For random latencies the pipelined makespan with unlimited quota is bounded
below by the critical path ``C_0 + Σ S_i`` and, for ``c >= N``, equals the longest
path ``max_i (C_i + Σ_{j>=i} S_j)`` (equal to ``C_0 + Σ S_i`` whenever content 0 is
on the longest path).

Shared capacity (issue 12, :mod:`sim.sharing`): an LLM server whose aggregate
throughput at ``n`` requests in service is ``T(n)``, efficiency ``e(n) = T(n)/T(1)``
(``T`` flat after its last point). ``w`` requests of equal solo time ``C`` started
together finish together after ``w·C/e(w)``. So hybrid with cap ``c`` (TTS elsewhere,
actions alone on the server) takes ``Σ_waves w·C/e(w) + N·S`` exactly, and the
pipelined makespan is at least the LLM work over the best rate it can reach,
``N·(C+A)/max_{n<=c+1} e(n)`` (``c`` contents and one actions in service), and at least
the critical path: with a flat curve and no TTS pipelining gives no speedup at all.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = [
    "harmonic",
    "hybrid_exponential_mean",
    "hybrid_makespan",
    "hybrid_ttfs",
    "longest_path",
    "min_useful_concurrency",
    "pipelined_lower_bound",
    "pipelined_makespan",
    "pipelined_speedup_bound",
    "scene_tail",
    "serial_makespan",
    "serial_ttfs",
    "shared_efficiency",
    "shared_hybrid_makespan",
    "shared_pipelined_speedup_bound",
]


def scene_tail(actions_s: float, tts_s: float, clips: int, tts_concurrency: int = 1) -> float:
    """``S = A + ceil(k/t)·T``: a scene's actions plus its clips, ``t`` at a time."""
    t = max(1, tts_concurrency)
    return actions_s + math.ceil(clips / t) * tts_s


def serial_makespan(n: int, content_s: float, tail_s: float) -> float:
    return n * (content_s + tail_s)


def serial_ttfs(content_s: float, tail_s: float) -> float:
    return content_s + tail_s


def hybrid_makespan(n: int, c: int, content_s: float, tail_s: float) -> float:
    """Barrier after ``ceil(N/c)`` waves of content, then ``N`` tails in series."""
    c = max(1, c)
    return math.ceil(n / c) * content_s + n * tail_s


def hybrid_ttfs(n: int, c: int, content_s: float, tail_s: float) -> float:
    """First scene after the barrier; ``c <= 1`` (or one outline) runs the serial loop."""
    if c <= 1 or n <= 1:
        return serial_ttfs(content_s, tail_s)
    return math.ceil(n / c) * content_s + tail_s


def pipelined_makespan(n: int, c: int, content_s: float, tail_s: float) -> float:
    """Exact pipelined makespan for constant latencies (the max-plus recurrence).

    As upstream, ``c <= 1`` runs the serial loop.
    """
    if c <= 1:
        return serial_makespan(n, content_s, tail_s)
    t = 0.0
    for i in range(n):
        t = max(t, (i // c + 1) * content_s) + tail_s
    return t


def min_useful_concurrency(content_s: float, tail_s: float) -> int:
    """Smallest cap with which pipelined reaches ``C + N·S``: ``ceil(C/S)`` (at least 1)."""
    if tail_s <= 0:
        return 10**9
    return max(1, math.ceil(content_s / tail_s))


def pipelined_speedup_bound(n: int, content_s: float, tail_s: float) -> float:
    """Best speedup of pipelined over serial: ``N(C+S) / (C+N·S)``; → ``(C+S)/S`` as N grows."""
    return serial_makespan(n, content_s, tail_s) / (content_s + n * tail_s)


def harmonic(n: int) -> float:
    return sum(1.0 / i for i in range(1, n + 1))


def hybrid_exponential_mean(n: int, content_mean_s: float, tail_s: float) -> float:
    """Mean hybrid makespan, ``c >= N``, exponential content, constant tails: ``H_N·μ + N·S``."""
    return harmonic(n) * content_mean_s + n * tail_s


def pipelined_lower_bound(contents_s: Sequence[float], tails_s: Sequence[float]) -> float:
    """Critical-path bound ``C_0 + Σ S_i`` for one run's realised latencies."""
    return contents_s[0] + sum(tails_s)


def longest_path(contents_s: Sequence[float], tails_s: Sequence[float]) -> float:
    """``max_i (C_i + Σ_{j>=i} S_j)``: pipelined makespan with ``c >= N`` and no quota."""
    best = 0.0
    suffix = 0.0
    for c_i, s_i in zip(reversed(contents_s), reversed(tails_s), strict=True):
        suffix += s_i
        best = max(best, c_i + suffix)
    return best


def shared_efficiency(curve: Sequence[float], n: int) -> float:
    """``e(n) = T(n)/T(1)`` of an aggregate-throughput curve (flat after its last point)."""
    if not curve or n <= 1:
        return 1.0
    return curve[min(n, len(curve)) - 1] / curve[0]


def shared_hybrid_makespan(
    n: int, c: int, content_s: float, tail_s: float, curve: Sequence[float]
) -> float:
    """Hybrid on a shared LLM server, constant latencies: waves of ``min(c, left)`` contents
    finishing together after ``w·C/e(w)``, then ``N`` tails with the server to themselves."""
    if c <= 1 or n <= 1:
        return serial_makespan(n, content_s, tail_s)
    total, left = 0.0, n
    while left > 0:
        w = min(c, left)
        total += w * content_s / shared_efficiency(curve, w)
        left -= w
    return total + n * tail_s


def shared_pipelined_speedup_bound(
    n: int,
    c: int,
    content_s: float,
    actions_s: float,
    tail_s: float,
    curve: Sequence[float],
) -> float:
    """Best pipelined speedup over serial on a shared LLM server (TTS elsewhere):
    ``N(C+S) / max(N(C+A)/max_{k<=c+1} e(k), C + N·S)``. A flat curve and ``S = A`` (no
    TTS) give exactly 1: no speedup."""
    if c <= 1:
        return 1.0
    best = max(shared_efficiency(curve, k) for k in range(1, c + 2))
    floor = max(n * (content_s + actions_s) / best, content_s + n * tail_s)
    return serial_makespan(n, content_s, tail_s) / floor
