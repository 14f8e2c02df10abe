"""Shared capacity: load-dependent latency and "slow instead of 429" (issue 12).

A key with a shared capacity (``Quota.throughput`` or ``Quota.parallel``) serves its
admitted requests the way a self-hosted server or a busy provider does:

* **processor sharing with a batch-efficiency curve.** ``throughput`` lists the
  aggregate tokens/s at 1, 2, 3, … requests in service (flat after the last entry).
  A request's *work* is its solo latency (µs, as drawn); with ``n`` in service each
  progresses ``T(n) / (n·T(1))`` solo-µs per µs. A flat curve (``T(n) = T(1)``)
  conserves work: ``n`` requests take as long together as one after another. A
  vLLM-like curve (``T`` growing with ``n``) lets them finish sooner together, each
  slower than alone. Without a curve a request in service runs at solo speed.
* **a FIFO queue.** At most ``parallel`` requests are in service (0: all); the rest
  wait in arrival order (``OLLAMA_NUM_PARALLEL = 1`` is a FIFO queue). More than
  ``max_queue`` waiting (0: no cap) → the newcomer is answered ``queue_status`` at once
  (Ollama's 503 when its queue is full); a request still waiting ``max_hold_s`` after
  it arrived is answered ``queue_status`` then (a provider that holds the connection
  open, e.g. DeepSeek's 10 minutes, before giving up).

:class:`SharedCore` is the one implementation both worlds use: pure arithmetic on
integer µs (progress kept as exact fractions, so the result never depends on when it
is asked), no waiting. A world tells it of arrivals (:meth:`SharedCore.add`) and asks
it when the next thing happens (:meth:`SharedCore.next_event_us`); when its timer fires
it calls :meth:`SharedCore.advance`, which returns the requests finished by then, in a
fixed order. Rules at one instant: completions first (freeing their slots), then the
queue's head moves into the freed slots, then holds that expire; a request starting
service at its hold's end is served.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction

__all__ = ["Finished", "SharedCore", "ps_rate"]


def ps_rate(curve: Sequence[float], n: int) -> Fraction:
    """Solo-µs of progress per µs of each of ``n`` requests in service: ``T(n)/(n·T(1))``
    (1 without a curve)."""
    if not curve or n <= 0:
        return Fraction(1)
    t_n = Fraction(curve[min(n, len(curve)) - 1])
    return t_n / (n * Fraction(curve[0]))


@dataclass(frozen=True)
class Finished:
    """A request the core is done with: at ``at_us``, served (``expired`` False) or
    answered ``queue_status`` after waiting its hold out (``expired`` True)."""

    key: Hashable
    at_us: int
    expired: bool


@dataclass
class _Job:
    key: Hashable
    arrival_us: int
    work: Fraction
    started_us: int = -1


@dataclass
class SharedCore:
    """One key's shared capacity (see the module doc)."""

    curve: tuple[float, ...] = ()
    parallel: int = 0
    max_queue: int = 0
    max_hold_us: int = 0
    last_us: int = 0
    serving: list[_Job] = field(default_factory=list)
    queue: deque[_Job] = field(default_factory=deque)

    def __len__(self) -> int:
        return len(self.serving) + len(self.queue)

    def rate(self) -> Fraction:
        return ps_rate(self.curve, len(self.serving))

    def _next_completion(self) -> int | None:
        if not self.serving:
            return None
        least = min(j.work for j in self.serving)
        r = self.rate()
        if least <= 0:
            return self.last_us
        q = least / r
        return self.last_us + -(-q.numerator // q.denominator)

    def _next_expiry(self) -> int | None:
        if not self.max_hold_us or not self.queue:
            return None
        return min(j.arrival_us for j in self.queue) + self.max_hold_us

    def next_event_us(self) -> int | None:
        """When the next completion or hold expiry happens (``None``: nothing pending)."""
        times = [t for t in (self._next_completion(), self._next_expiry()) if t is not None]
        return min(times) if times else None

    def _progress(self, t: int) -> None:
        if t > self.last_us and self.serving:
            done = self.rate() * (t - self.last_us)
            for j in self.serving:
                j.work -= done
        self.last_us = max(self.last_us, t)

    def _start_waiting(self, t: int) -> None:
        while self.queue and (self.parallel == 0 or len(self.serving) < self.parallel):
            j = self.queue.popleft()
            j.started_us = t
            self.serving.append(j)

    def advance(self, now_us: int) -> list[Finished]:
        """Move to ``now_us``; the requests finished on the way, by time, then in the
        order they joined."""
        out: list[Finished] = []
        while True:
            t = self.next_event_us()
            if t is None or t > now_us:
                break
            self._progress(t)
            done = [j for j in self.serving if j.work <= 0]
            if done:
                self.serving = [j for j in self.serving if j.work > 0]
                out.extend(Finished(j.key, t, False) for j in done)
            self._start_waiting(t)
            if self.max_hold_us:
                gone = [j for j in self.queue if j.arrival_us + self.max_hold_us <= t]
                if gone:
                    self.queue = deque(j for j in self.queue if j.arrival_us + self.max_hold_us > t)
                    out.extend(Finished(j.key, t, True) for j in gone)
        self._progress(now_us)
        return out

    def add(self, now_us: int, key: Hashable, work_us: int) -> bool:
        """A request arrives with ``work_us`` solo-µs of work; False when the queue is full
        (it is not taken). Call :meth:`advance` to ``now_us`` first."""
        self._progress(now_us)
        job = _Job(key, now_us, Fraction(work_us))
        if self.parallel == 0 or len(self.serving) < self.parallel:
            job.started_us = now_us
            self.serving.append(job)
            return True
        if self.max_queue and len(self.queue) >= self.max_queue:
            return False
        self.queue.append(job)
        return True
