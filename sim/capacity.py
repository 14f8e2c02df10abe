"""Capacity of one server key for the server path: closed forms and an M/G/1-style bound.

Notation: ``N`` scenes per job; content ``C``, actions ``A`` and clip ``T`` seconds;
``k`` clips per scene; a key that allows ``K`` requests in flight (and ``R``
requests per minute). No faults, no retries.

* **Work per job** on a key (slot-seconds): LLM ``W = N·(E[C] + E[A])``, TTS
  ``W_T = N·E[k]·E[T]``. ``c`` does not change it: prefetch moves work earlier, it
  does not remove any.
* **Saturation.** Jobs arriving at ``λ`` per second offer ``ρ = λ·W/K`` of the key
  (its *utilisation*); the key keeps up only while ``ρ < 1`` on every key, and, with a
  rate limit, while ``λ·2N < R/60`` (two LLM requests per scene). So
  ``λ_sat = min(K/W, K_T/W_T, R/(120·N))`` — the same for every ``c``. Past it, the
  backlog grows without bound whatever the client does: the deployer must buy more
  in-flight slots (``K ≥ λ·W / ρ_target``) or a higher rate limit, not tune ``c``.
* **One job alone** (constant latencies, unlimited key): the loop takes
  :func:`sim.analytic.pipelined_makespan` ``(N, c, C, A)`` (serial for ``c <= 1``) and the
  media step ``ceil(N·k / m)·T`` with ``m`` clips at once.
* **M/G/1-style bound.** With the key-wide gate (FIFO by job arrival) the key serves jobs
  in order; treat it as one server of speed ``K`` with service ``S = W_job/K``
  (``W_job`` the job's random LLM work). Pollaczek–Khinchine: mean wait
  ``W_q = λ·E[S²] / (2·(1 − ρ))``, ``ρ = λ·E[S]``; and, with the heavy-traffic
  exponential tail ``P(wait > t) ≈ ρ·exp(−ρ·t / W_q)``, the wait's p-quantile
  ``(W_q/ρ)·ln(ρ/(1 − p))`` (0 when ``ρ <= 1 − p``). The job-latency line drawn is
  ``T_job(c) + wait``. It applies below saturation (``ρ < 1``) and when the LLM key is
  the bottleneck; it ignores that a job cannot use more than about ``c + 1`` slots.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .analytic import pipelined_makespan, serial_makespan
from .dists import Dist
from .scenario import Scenario

__all__ = [
    "KeyLoad",
    "job_alone_s",
    "job_work_s",
    "key_load",
    "mg1_line",
    "mg1_wait_quantile_s",
    "mg1_wait_s",
    "saturation_of",
    "saturation_per_hour",
    "second_moment",
]

_GRID = 20_000


def second_moment(d: Dist) -> float:
    """``E[X²]`` of a latency distribution, from its quantile function on a midpoint grid
    (exact for a constant)."""
    u = (np.arange(_GRID, dtype=float) + 0.5) / _GRID
    x = np.asarray(d.quantile(u), dtype=float)
    return float(np.mean(x * x))


def job_work_s(sc: Scenario) -> tuple[float, float]:
    """Expected slot-seconds a job puts on the LLM key and on the TTS key."""
    n = sc.outlines
    content = sum(sc.content_dist(i).mean for i in range(n))
    return content + n * sc.actions.mean, n * sc.speech_actions.mean * sc.tts.mean


def saturation_per_hour(
    work_llm_s: float,
    work_tts_s: float,
    outlines: int,
    llm_inflight: int,
    tts_inflight: int = 0,
    rpm: float = 0.0,
) -> float:
    """Jobs per hour at which a key saturates: ``3600·min(K/W, K_T/W_T, R/(120·N))``;
    unlimited keys (0) do not bound it (``inf`` if nothing does)."""
    bounds = [math.inf]
    if llm_inflight > 0 and work_llm_s > 0:
        bounds.append(llm_inflight / work_llm_s * 3600.0)
    if tts_inflight > 0 and work_tts_s > 0:
        bounds.append(tts_inflight / work_tts_s * 3600.0)
    if rpm > 0:
        bounds.append(rpm * 60.0 / (2 * outlines))
    return min(bounds)


def job_alone_s(
    n: int,
    c: int,
    content_s: float,
    actions_s: float,
    clips: int,
    tts_s: float,
    media_c: int = 1,
    mode: str = "pipelined",
) -> float:
    """A job's latency alone on an unlimited key, constant latencies: the loop (content →
    actions, prefetch at ``c``) then ``clips`` clips ``media_c`` at a time."""
    loop = (
        serial_makespan(n, content_s, actions_s)
        if mode == "serial" or c <= 1
        else pipelined_makespan(n, c, content_s, actions_s)
    )
    return loop + math.ceil(clips / max(1, media_c)) * tts_s


def mg1_wait_s(lam_per_s: float, s_mean: float, s_second: float) -> float:
    """Pollaczek–Khinchine mean wait ``λ·E[S²] / (2(1 − ρ))``; ``inf`` when ``ρ >= 1``."""
    rho = lam_per_s * s_mean
    if rho >= 1.0:
        return math.inf
    return lam_per_s * s_second / (2.0 * (1.0 - rho))


def mg1_wait_quantile_s(lam_per_s: float, s_mean: float, s_second: float, p: float) -> float:
    """The wait's ``p``-quantile under the exponential tail ``P(W > t) ≈ ρ·exp(−ρt/W_q)``."""
    rho = lam_per_s * s_mean
    if rho >= 1.0:
        return math.inf
    if rho <= 1.0 - p:
        return 0.0
    wq = mg1_wait_s(lam_per_s, s_mean, s_second)
    return wq / rho * math.log(rho / (1.0 - p))


@dataclass(frozen=True)
class KeyLoad:
    """A scenario's job on one key: work, the service moments of the M/G/1 view, saturation."""

    work_llm_s: float
    work_tts_s: float
    service_mean_s: float  # E[S], S = W_job / K
    service_second: float  # E[S²]
    saturation_per_hour: float

    def utilisation(self, per_hour: float) -> float:
        """``ρ``: the offered load over capacity at ``per_hour`` jobs per hour."""
        return per_hour / self.saturation_per_hour if self.saturation_per_hour > 0 else math.inf

    def wait_quantile_s(self, per_hour: float, p: float) -> float:
        return mg1_wait_quantile_s(per_hour / 3600.0, self.service_mean_s, self.service_second, p)


def key_load(sc: Scenario, llm_inflight: int, tts_inflight: int = 0) -> KeyLoad:
    """The :class:`KeyLoad` of ``sc``'s job on a key of ``llm_inflight`` (``tts_inflight``)
    slots; the LLM key's service moments treat a job's content and actions latencies as
    independent: ``Var W = Σ Var C_i + N·Var A``."""
    w_llm, w_tts = job_work_s(sc)
    n = sc.outlines
    var = sum(second_moment(sc.content_dist(i)) - sc.content_dist(i).mean ** 2 for i in range(n))
    var += n * (second_moment(sc.actions) - sc.actions.mean**2)
    k = max(1, llm_inflight) if llm_inflight > 0 else 1
    s_mean = w_llm / k
    s_second = (var + w_llm**2) / k**2
    sat = saturation_per_hour(w_llm, w_tts, n, llm_inflight, tts_inflight, sc.quota_llm.rpm)
    return KeyLoad(w_llm, w_tts, s_mean, s_second, sat)


def saturation_of(rows: Sequence[dict[str, Any]], c: int) -> float | None:
    """The first arrival rate at which p95 job latency exceeds twice its value at the lowest
    rate measured (the hockey stick's knee); None if it never does."""
    g = sorted((r for r in rows if r["c"] == c), key=lambda r: r["per_hour"])
    if not g:
        return None
    base = g[0]["p95_s"]
    return next((r["per_hour"] for r in g if r["p95_s"] > 2.0 * base), None)


def mg1_line(sc: Scenario, load: KeyLoad, c: int, per_hour: float, p: float = 0.95) -> float:
    """``T_job(c)`` (mean latencies, a job alone) plus the M/G/1-style wait's p-quantile."""
    n = sc.outlines
    alone = job_alone_s(
        n,
        c,
        sc.content.mean,
        sc.actions.mean,
        round(n * sc.speech_actions.mean),
        sc.tts.mean,
    )
    return alone + load.wait_quantile_s(per_hour, p)
