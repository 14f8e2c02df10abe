"""The runs cell table on tiny hand-built deployments whose figures are derived here."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from runner.store.runs_cells import RUN_COLUMNS, paired_deltas, runs_cell_table, weighted_quantile


def _runs(c: int, m: int, ttfs: list[list[float]], **extra: list[list[object]]) -> pd.DataFrame:
    """One cell: ``ttfs[r]`` are the runs of deployment ``r``."""
    rows = []
    for r, xs in enumerate(ttfs):
        for i, t in enumerate(xs):
            row = {
                "backend": "sim", "scenario": "s", "quota": 3, "preset": "", "load_per_h": 10.0,
                "max_concurrent": m, "concurrency": c, "adaptive": "off", "replicate": r,
                "run": i, "refused": False, "paused": False, "scenes_failed": 0,
                "wait_s": 0.0, "ttfs_s": t, "stall_s": 1.0, "completed": True, "span_h": 2.0,
            }  # fmt: skip
            for k, v in extra.items():
                row[k] = v[r][i]
            rows.append(row)
    return pd.DataFrame(rows, columns=RUN_COLUMNS)


def test_unit_weights_give_numpys_inverted_cdf_quantile():
    x = np.array([5.0, 1.0, 3.0, 9.0, 7.0])
    for q in (0.5, 0.95, 0.2):
        got = weighted_quantile(x, np.ones((1, 5)), q)[0]
        assert got == np.quantile(x, q, method="inverted_cdf")
    # doubling one value's weight is the same as repeating it
    w = np.array([[1.0, 2.0, 1.0, 1.0, 1.0]])
    assert weighted_quantile(x, w, 0.5)[0] == np.quantile(
        [5, 1, 1, 3, 9, 7], 0.5, method="inverted_cdf"
    )


def test_a_shift_of_every_run_is_the_paired_difference_with_no_spread():
    base_t = [[30.0, 50.0, 70.0], [40.0, 45.0], [100.0, 20.0, 60.0, 80.0]]
    base = _runs(1, 4, base_t)
    cell = _runs(2, 4, [[t + 10.0 for t in xs] for xs in base_t])
    d = paired_deltas(cell, base, n_boot=200)
    # every run 10 s later: every resample's p95 is 10 s later, stalls and pauses equal
    assert d["ttfs_p95_delta_s"] == pytest.approx(10.0)
    assert d["ttfs_p95_delta_lo_s"] == pytest.approx(10.0) and d[
        "ttfs_p95_delta_hi_s"
    ] == pytest.approx(10.0)
    assert d["stall_delta_s"] == 0.0 and d["p_paused_delta"] == 0.0


def test_shares_are_counted_over_requests_and_started_runs():
    # deployment 0: 4 requests, 1 refused; of the 3 started, 1 paused, 2 with a failed scene
    t = [[10.0, 20.0, 30.0, 40.0]]
    cell = _runs(
        1, 4, t,
        refused=[[False, False, False, True]],
        paused=[[True, False, False, False]],
        scenes_failed=[[1, 1, 0, 0]],
        completed=[[False, True, True, False]],
    )  # fmt: skip
    (row,) = runs_cell_table(cell).to_dict("records")
    assert row["runs"] == 4 and row["started"] == 3 and row["replicates"] == 1
    assert row["p_refused"] == 0.25 and row["p_paused"] == pytest.approx(1 / 3)
    assert row["p_any_failed"] == pytest.approx(2 / 3)
    # ttfs over the 3 started runs: inverted-CDF median of (10, 20, 30) is 20; p95 is 30
    assert row["ttfs_p50_s"] == 20.0 and row["ttfs_p95_s"] == 30.0
    # 2 completed runs in one deployment of 2 hours
    assert row["runs_per_h"] == 1.0
    assert row["ttfs_p95_delta_s"] == 0.0  # the baseline against itself
