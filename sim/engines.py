"""The model world's one entry point, :func:`simulate`, and its one engine rule.

Two engines compute the same runs: SimPy (:mod:`sim.model`, every scenario) and the
vectorised exact path (:mod:`sim.fast`, proven equal run for run where it applies).
:func:`pick_engine` is the only place that chooses between them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .config import RunConfig
from .errors import UserError

if TYPE_CHECKING:
    from .scenario import Scenario
    from .schema import RunResult

__all__ = ["ENGINES", "FAST_MIN_REPS", "pick_engine", "simulate"]

ENGINES = ("auto", "simpy", "fast")
FAST_MIN_REPS = 200  # below this the vectorised path's set-up costs more than SimPy saves


def pick_engine(scenario: Scenario, config: RunConfig, reps: int, engine: str = "auto") -> str:
    """The engine for ``reps`` runs of ``config``: ``auto`` takes the vectorised path when it
    applies (:func:`sim.fast.fast_fits`: quota-free keys, no retries inside the route,
    one classroom, no limiter) and pays (``reps >= FAST_MIN_REPS``), else SimPy; ``simpy``
    and ``fast`` as asked (``fast`` where it does not apply is a one-line error)."""
    if engine not in ENGINES:
        raise UserError(f"engine: must be one of {', '.join(ENGINES)}; got {engine!r}")
    if engine == "auto":
        from .fast import fast_fits

        return "fast" if reps >= FAST_MIN_REPS and fast_fits(scenario, config) else "simpy"
    return engine


def simulate(
    scenario: Scenario,
    config: RunConfig,
    *,
    seed: int = 0,
    run_id: int = 0,
    reps: int = 1,
    engine: str = "auto",
) -> list[RunResult]:
    """Simulate ``reps`` runs of ``config`` (run ids ``run_id ..``), each of
    ``config.tenants`` classrooms sharing the keys (classroom ids ``run * tenants + j``, which
    key the draws); one result per classroom, in order. ``engine`` as :func:`pick_engine`."""
    if seed < 0 or run_id < 0:
        raise UserError(f"seed and run_id: must be >= 0, got {seed}, {run_id}")
    if reps < 1:
        raise UserError(f"reps: must be >= 1, got {reps}")
    if pick_engine(scenario, config, reps, engine) == "fast":
        from .fast import simulate_fast

        return simulate_fast(scenario, config, reps, seed=seed, first_run=run_id).results()
    from .model import simulate_simpy

    return simulate_simpy(scenario, config, reps, seed=seed, first_run=run_id)
