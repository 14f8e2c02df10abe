"""``scenebench bench``'s grid times (issue 24): how long the full default grids take on 2 cores.

Two grids, each timed on a measured fraction and scaled (the scaling is stated in the output):

* the **browser grid** of ``scenebench sweep --upstream pr696`` (:func:`~runner.experiments.
  sweep.default_spec`: ``default``, ``content-heavy``, ``tts-heavy`` × in-flight quotas 1, 2,
  3, 5, 10, 0 × 21 settings × 2,000 runs on the model). Every cell is run through the sweep's
  own :func:`~runner.experiments.sweep.run_cell` on the engine the sweep picks for 2,000 runs
  (:func:`sim.engines.pick_engine`): a cell on a fast engine (the vectorised path, the
  limited-key engine) at its full size, a SimPy
  cell twice, at ``small`` and ``large`` runs; the SimPy cells' summed CPU time is a fixed
  part (set-up, the frame) plus a part per run, both read off the two sizes, and the grid's
  is that line at 2,000 runs;
* the **runs grid** of ``scenebench sweep`` (:data:`~runner.experiments.runs_sweep.FULL`:
  c 1, 2, 3, 5 × key limit 1, 2, 3, 5, 0 × load 10, 30, 60 runs/h × run cap 1, 2, 4, 8, each
  20 deployments of 20 runs): every cell at ``replicates`` deployments, the CPU time per
  simulated run scaled to the grid's runs.

Both grids' cells are independent, so the sweep's worker processes share them out; the time on
``cores`` cores is the CPU time divided by ``cores`` (even shares assumed, the same machine).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from sim.engines import pick_engine
from sim.scenario import Scenario

from .runs_sweep import run_runs_cell, runs_grid, runs_spec
from .sweep import Cell, apply_quota, default_spec, grid_cells, run_cell

__all__ = ["run_grid_bench", "scale_line"]

CORES = 2
TARGET_S = 120.0  # issue 24: the full default grid in at most 2 minutes on 2 cores


def browser_grid(small: int, large: int) -> dict[str, Any]:
    """The browser grid's CPU time, measured on every cell (see the module docstring)."""
    spec = default_spec(quick=False, scenarios=None, backends=("sim",), upstreams=["pr696"])
    scenarios = {sc.name: sc for sc in spec.scenario_objects()}
    full = spec.sim_reps
    fast_s, simpy_s = 0.0, {small: 0.0, large: 0.0}
    cells = {"fast": 0, "fast_quota": 0, "simpy": 0}
    by_engine = {"fast": 0.0, "fast_quota": 0.0}
    for cell in grid_cells(spec):
        sc = scenarios[cell.scenario]
        engine = pick_engine(apply_quota(sc, cell.quota), cell.config, full)
        if engine != "simpy":  # a fast engine: the cell at its full size
            cpu_s = _cpu_of_cell(cell, sc)
            fast_s += cpu_s
            by_engine[engine] += cpu_s
            cells[engine] += 1
            continue
        cells["simpy"] += 1
        for n in (small, large):
            simpy_s[n] += _cpu_of_cell(dataclasses.replace(cell, reps=n), sc)
    per_run, fixed, simpy_full = scale_line(simpy_s[small], simpy_s[large], small, large, full)
    total = fast_s + simpy_full
    return {
        "cells": cells,
        "runs_per_cell": full,
        "simpy_sizes_measured": [small, large],
        "simpy_cpu_s_measured": {str(k): v for k, v in simpy_s.items()},
        "simpy_cpu_s_per_run": per_run,  # summed over the SimPy cells: one run of each
        "simpy_fixed_cpu_s": fixed,
        "cpu_s": total,
        "cpu_s_by_engine": {**by_engine, "simpy": simpy_full},
        "cores": CORES,
        "grid_s": total / CORES,
        "target_s": TARGET_S,
    }


def scale_line(
    small_s: float, large_s: float, small: int, large: int, full: int
) -> tuple[float, float, float]:
    """(per run, fixed, at ``full`` runs): the line through the CPU times of ``small`` and
    ``large`` runs (neither part below 0)."""
    per_run = max(0.0, (large_s - small_s) / (large - small))
    fixed = max(0.0, small_s - per_run * small)
    return per_run, fixed, fixed + per_run * full


def _cpu_of_cell(cell: Cell, sc: Scenario) -> float:
    """CPU seconds of one cell through the sweep's :func:`run_cell`."""
    t0 = time.process_time()
    run_cell(cell, sc)
    return time.process_time() - t0


def runs_cells_grid(replicates: int) -> dict[str, Any]:
    """The runs grid's time per simulated run, measured on every cell (module docstring)."""
    spec = runs_spec(quick=False, scenarios=None)
    sc = spec.scenario_objects()[0]
    cells = runs_grid(spec)
    t0 = time.process_time()
    runs = 0
    for cell in cells:
        df = run_runs_cell(dataclasses.replace(cell, replicates=replicates), sc)
        runs += len(df)
    cpu = time.process_time() - t0
    per_run = cpu / runs
    grid_runs = len(cells) * spec.replicates * spec.runs
    return {
        "cells": len(cells),
        "runs_per_cell": spec.replicates * spec.runs,
        "measured_runs": runs,
        "cpu_s_per_run": per_run,
        "grid_runs": grid_runs,
        "cpu_s": per_run * grid_runs,
        "cores": CORES,
        "grid_s": per_run * grid_runs / CORES,
    }


def run_grid_bench(*, quick: bool = False) -> dict[str, Any]:
    """Both grids' times on :data:`CORES` cores (``quick``: smaller fractions)."""
    b = browser_grid(*((2, 6) if quick else (5, 25)))
    r = runs_cells_grid(1 if quick else 2)
    n = b["cells"]
    small, large = b["simpy_sizes_measured"]
    per_classroom = (
        f"SimPy {b['simpy_cpu_s_per_run'] / n['simpy'] * 1e3:.2f} ms CPU per classroom; "
        if n["simpy"]
        else ""
    )
    lines = [
        f"grid time on {CORES} cores (CPU time of a measured fraction, scaled; cells shared "
        "evenly by the sweep's workers)",
        f"  browser grid (sweep --upstream pr696: 3 scenarios x 6 quotas x 21 settings x "
        f"{b['runs_per_cell']:,} runs; at full size {n['fast']} cells on the vectorised path "
        f"and {n['fast_quota']} on the limited-key engine; {n['simpy']} SimPy cells at {small} "
        f"and {large} runs, scaled to {b['runs_per_cell']:,} along the line through both): "
        f"{b['grid_s']:,.0f} s (CPU {b['cpu_s']:,.0f} s; {per_classroom}target "
        f"{TARGET_S:.0f} s)",
        f"  runs grid (sweep: {r['cells']} cells of c x key limit x load x run cap, "
        f"{r['runs_per_cell']} runs each; {r['measured_runs']:,} runs measured): "
        f"{r['cpu_s_per_run'] * 1e3:.2f} ms CPU per simulated run, {r['grid_s']:,.0f} s "
        f"for the grid's {r['grid_runs']:,} runs",
    ]
    return {"browser": b, "runs": r, "lines": lines}
