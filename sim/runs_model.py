"""The SimPy model of generation runs (the reference): SimPy keeps the clock and only waits;
every decision is the machines' (:mod:`sim.run_machine`, :mod:`sim.run_server`) and the
provider's (:mod:`sim.provider`), handled per instant by :mod:`sim.runs_world`. Items due at one
instant are gathered as their timeouts fire and handled together after every normal event of
that instant (as :mod:`sim.model` batches arrivals)."""

from __future__ import annotations

import simpy
from simpy.events import NORMAL, Event, EventPriority

from .runs_config import RunsConfig
from .runs_world import Item, RunsWorld
from .scenario import Scenario

__all__ = ["run_simpy"]

_FLUSH_PRIORITY = EventPriority(NORMAL + 1)  # after every normal event of the instant


def run_simpy(sc: Scenario, cfg: RunsConfig, seed: int) -> RunsWorld:
    """Run a deployment to its end on SimPy; the world holds the machines, records and log."""
    env = simpy.Environment()
    pending: dict[int, list[Item]] = {}
    world: list[RunsWorld] = []

    def flush(_ev: Event) -> None:
        t = int(env.now)
        world[0].instant(t, pending.pop(t))

    def schedule(at: int, item: Item) -> None:
        def fire(_ev: Event) -> None:
            t = int(env.now)
            got = pending.get(t)
            if got is None:
                got = pending[t] = []
                fl = Event(env)
                fl._ok = True
                fl._value = None
                fl.callbacks.append(flush)
                env.schedule(fl, _FLUSH_PRIORITY)
            got.append(item)

        env.timeout(at - int(env.now)).callbacks.append(fire)

    world.append(RunsWorld(sc, cfg, seed, schedule))
    env.run()
    return world[0]
