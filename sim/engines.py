"""The model world's one entry point, :func:`simulate`, and its one engine rule.

Three engines compute the same runs: SimPy (:mod:`sim.model`, every scenario), the
vectorised exact path for quota-free cells (:mod:`sim.fast`) and the vectorised exact engine
for limited keys (:mod:`sim.fast_quota`), both proven equal run for run where they apply.
:func:`pick_engine` is the only place that chooses between them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .config import RunConfig
from .errors import UserError

if TYPE_CHECKING:
    from .scenario import Scenario
    from .schema import RunResult

__all__ = ["ENGINES", "FAST_MIN_REPS", "QUOTA_MIN_REPS", "pick_engine", "simulate"]

ENGINES = ("auto", "simpy", "fast", "fast_quota")
FAST_MIN_REPS = 200  # below this the vectorised path's set-up costs more than SimPy saves
QUOTA_MIN_REPS = 200  # the same for the limited-key engine (lock step pays with many runs)


def pick_engine(scenario: Scenario, config: RunConfig, reps: int, engine: str = "auto") -> str:
    """The engine for ``reps`` runs of ``config``: ``auto`` takes the vectorised path when it
    applies (:func:`sim.fast.fast_fits`: quota-free keys, no retries inside the route,
    one classroom, no limiter) and pays (``reps >= FAST_MIN_REPS``), else the limited-key
    engine when it applies (:func:`sim.fast_quota.quota_fits`: in-flight caps only, one
    classroom, no limiter) and pays (``reps >= QUOTA_MIN_REPS``), else SimPy; ``simpy``,
    ``fast`` and ``fast_quota`` as asked (where it does not apply, a one-line error)."""
    if engine == "compiled":
        raise UserError(
            "engine: compiled is the generation-runs engine (--upstream runs); for classroom "
            f"cells use one of {', '.join(ENGINES)}"
        )
    if engine not in ENGINES:
        raise UserError(f"engine: must be one of {', '.join(ENGINES)}; got {engine!r}")
    if engine == "auto":
        from .fast import fast_fits

        if reps >= FAST_MIN_REPS and fast_fits(scenario, config):
            return "fast"
        from .fast_quota import quota_fits

        if reps >= QUOTA_MIN_REPS and quota_fits(scenario, config):
            return "fast_quota"
        return "simpy"
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
    picked = pick_engine(scenario, config, reps, engine)
    if picked == "fast":
        from .fast import simulate_fast

        return simulate_fast(scenario, config, reps, seed=seed, first_run=run_id).results()
    if picked == "fast_quota":
        from .fast_quota import simulate_quota

        return simulate_quota(scenario, config, reps, seed=seed, first_run=run_id).results()
    from .model import simulate_simpy

    return simulate_simpy(scenario, config, reps, seed=seed, first_run=run_id)
