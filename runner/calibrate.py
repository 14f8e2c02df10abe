"""Traces for calibration, taken from the fake provider's own request log."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from sim.scenario import Scenario
from sim.schema import RunResult

from .run import run_classroom

__all__ = ["make_example_trace", "trace_from_results"]


def trace_from_results(results: Iterable[RunResult]) -> pd.DataFrame:
    """``step, seconds`` of every answered (non-429) request in the results' provider logs."""
    rows = [
        {"step": q.step, "seconds": round(q.t_end_s - q.t_start_s, 6)}
        for r in results
        for q in r.requests_log
        if q.status != 429
    ]
    return pd.DataFrame(rows, columns=["step", "seconds"])


def make_example_trace(
    scenario: Scenario, path: Path, *, classrooms: int = 12, seed: int = 7
) -> pd.DataFrame:
    """Run classrooms through the real pipeline (virtual clock) and save their call durations."""
    results = [
        run_classroom(scenario, "pipelined", 3, seed=seed, run_id=r, clock="virtual")
        for r in range(classrooms)
    ]
    df = trace_from_results(results)
    df.to_csv(path, index=False)
    return df
