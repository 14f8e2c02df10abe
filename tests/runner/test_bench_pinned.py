"""``bench``'s pinned-tree timing child: its work counts are this tree's own model results
(speed itself is never asserted)."""

from __future__ import annotations

from pathlib import Path

from runner.experiments import bench
from sim.config import RunConfig
from sim.model import simulate_simpy
from sim.scenario import load_scenario

ROOT = Path(bench.__file__).resolve().parents[2]


def test_child_counts_each_cells_requests_per_classroom_from_the_model() -> None:
    reps = 3
    rates = bench._time_tree(ROOT, reps, "old")  # "old": the SimPy part only
    base = load_scenario("default")
    for name, quota, mode, c in bench.PINNED_CELLS:
        sc = bench.quota_scenario(base) if quota else base
        runs = simulate_simpy(sc, RunConfig.of(mode, c), reps, seed=1)
        expected = sum(r.requests for r in runs) / reps
        assert rates[name + bench.PER] == expected
        assert rates[name] > 0 and rates[name + bench.REQ] > 0
        # requests per CPU second over classrooms per CPU second is requests per classroom
        ratio = rates[name + bench.REQ] / rates[name]
        assert abs(ratio - expected) <= 1e-9 * expected
