"""Calibration: ``scenebench calibrate`` (:func:`calibrate`: fit a trace, write a scenario)
and traces for it, taken from the fake provider's own request log."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from sim.calibrate import (
    MIN_FIT,
    fit_summary,
    fit_trace,
    read_trace,
    scenario_from_fits,
    write_scenario,
)
from sim.calibrate_tokens import TokenFit, apply_token_fits, fit_tokens
from sim.config import RunConfig
from sim.errors import UserError
from sim.scenario import Scenario, load_scenario
from sim.schema import RunResult

from ..store.folders import write_atomic
from ..world.run import run

__all__ = ["Calibration", "calibrate", "make_example_trace", "trace_from_results"]


@dataclass(frozen=True)
class Calibration:
    """What :func:`calibrate` fitted and wrote."""

    scenario: Scenario
    summary: pd.DataFrame  # one row per (step, candidate), :func:`sim.calibrate.fit_summary`
    token_fits: dict[str, TokenFit]

    def lines(self) -> list[str]:
        """The candidates' table, then a line per token fit."""
        cols = ["step", "rank", "candidate", "n", "mean_s", "aic", "ks_stat", "ks_pvalue"]
        if self.summary.empty:
            out = [f"no step has {MIN_FIT} calls to fit: each keeps its observed (empirical) times"]
        else:
            table = self.summary[cols].to_string(index=False, float_format=lambda x: f"{x:.4g}")
            out = [table]
        for f in self.token_fits.values():
            speed = f"{f.output_tps:.1f} tok/s" if f.output_tps else "no speed (flat)"
            out.append(
                f"{f.step}: tokens per call {f.output.mean:.0f} out"
                + (f", {f.input.mean:.0f} in" if f.input is not None else "")
                + f"; output speed {speed}, time to first token {f.ttft_mean_s:.2f} s "
                f"(R² {f.r2:.3f}, {f.n} calls)"
            )
        return out


def _check_out(out: Path) -> None:
    if out.is_dir():
        raise UserError(f"--out {out} is a folder; name a .toml file")
    if not out.parent.is_dir():
        raise UserError(f"--out {out}: folder {str(out.parent)!r} does not exist")


def calibrate(
    trace: str | Path, out: Path, *, base: str = "default", name: str | None = None
) -> Calibration:
    """Fit the trace's latencies (best fit by AIC per step) and, with token columns, tokens per
    call and output speed, onto scenario ``base``; write the result to ``out`` (TOML,
    atomically). A bad ``out`` is a :class:`UserError` naming ``--out``; a bad trace a
    :class:`sim.scenario.ScenarioError`."""
    _check_out(out)
    frame = read_trace(trace)
    fits = fit_trace(frame)
    sc = scenario_from_fits(load_scenario(base), fits, frame, name=name)
    token_fits = fit_tokens(frame)  # with token columns: tokens per call and output speed
    sc = apply_token_fits(sc, token_fits)
    try:
        write_atomic(out, lambda p: write_scenario(sc, p))
    except OSError as e:
        raise UserError(f"cannot write --out {out}: {e.strerror or e}") from None
    return Calibration(sc, fit_summary(fits), token_fits)


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
    cfg = RunConfig.of("pipelined", 3, records=True)
    results = [x for r in range(classrooms) for x in run(scenario, cfg, seed=seed, run_id=r)]
    df = trace_from_results(results)
    df.to_csv(path, index=False)
    return df
