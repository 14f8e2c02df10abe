"""The fast generation-runs engine: an integer-µs event loop on a heap (time, then the order
items were scheduled in) driving the same machines and provider as the SimPy model
(:mod:`sim.runs_world`); :func:`sim.runs.check_engines` proves the two equal request for
request."""

from __future__ import annotations

import heapq
import itertools

from .runs_config import RunsConfig
from .runs_world import Item, RunsWorld
from .scenario import Scenario

__all__ = ["run_fast"]


def run_fast(sc: Scenario, cfg: RunsConfig, seed: int) -> RunsWorld:
    """Run a deployment to its end; the world holds the machines, records and log."""
    heap: list[tuple[int, int, Item]] = []
    seq = itertools.count()

    def schedule(at: int, item: Item) -> None:
        heapq.heappush(heap, (at, next(seq), item))

    w = RunsWorld(sc, cfg, seed, schedule)
    while heap:
        t = heap[0][0]
        items: list[Item] = []
        while heap and heap[0][0] == t:
            items.append(heapq.heappop(heap)[2])
        w.instant(t, items)
    return w
