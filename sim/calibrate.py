"""Fit a scenario's latency distributions from observed call durations.

A trace is a table of ``step, seconds`` rows (CSV or JSONL), e.g. taken from
server logs (``scenebench`` writes one from its own provider log with
``runner.experiments.calibration.trace_from_results``). For each step the candidates are
fitted by maximum likelihood — lognormal (median, sigma), gamma (shape, mean),
exponential (mean) — compared by AIC and the Kolmogorov–Smirnov statistic, and
the best by AIC is written into a scenario TOML (an empirical distribution when
fewer than 20 observations make a fit meaningless).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import tomli_w
from scipy import stats

from .dists import Dist, Empirical, Exponential, Gamma, LogNormal
from .scenario import STEPS, Scenario, ScenarioError

__all__ = ["Fit", "fit_step", "fit_trace", "read_trace", "scenario_from_fits", "write_scenario"]

MIN_FIT = 20  # fewer calls of a step than this: its empirical distribution, not a fit
SUMMARY_COLUMNS = (
    "step",
    "rank",
    "candidate",
    "n",
    "mean_s",
    "params",
    "aic",
    "ks_stat",
    "ks_pvalue",
    "delta_aic",
)


@dataclass(frozen=True)
class Fit:
    """One candidate distribution fitted to one step's observations."""

    step: str
    name: str
    dist: Dist
    n: int
    log_likelihood: float
    aic: float
    ks_stat: float
    ks_pvalue: float


def read_trace(path: str | Path) -> pd.DataFrame:
    """A trace file as a ``step, seconds`` frame; a clear ``ScenarioError`` if it is not one."""
    p = Path(path)
    try:
        if p.suffix in (".jsonl", ".ndjson"):
            rows = [json.loads(line) for line in p.read_text().splitlines() if line.strip()]
            df = pd.DataFrame(rows)
        else:
            df = pd.read_csv(p)
    except (OSError, ValueError) as e:
        raise ScenarioError(
            f"trace: cannot read {str(p)!r} ({e}); expected a CSV or JSONL of step, seconds"
        ) from None
    for col in ("step", "seconds"):
        if col not in df.columns:
            raise ScenarioError(
                f"trace.{col}: missing column; a trace has columns step "
                f"({'|'.join(STEPS)}) and seconds"
            )
    bad = sorted(set(df["step"]) - set(STEPS))
    if bad:
        raise ScenarioError(f"trace.step: must be one of {', '.join(STEPS)}; got {bad[0]!r}")
    sec = pd.to_numeric(df["seconds"], errors="coerce")
    if sec.isna().any() or (sec < 0).any() or not np.isfinite(sec).all():
        raise ScenarioError("trace.seconds: must be finite numbers >= 0")
    if not len(df):
        raise ScenarioError(f"trace: {str(p)!r} has no calls; it needs rows of step, seconds")
    out = pd.DataFrame({"step": df["step"].astype(str), "seconds": sec.astype(float)})
    for col in ("input_tokens", "output_tokens"):  # optional (sim.calibrate_tokens)
        if col in df.columns:
            v = pd.to_numeric(df[col], errors="coerce")
            if (v < 0).any() or np.isinf(v).any():
                raise ScenarioError(f"trace.{col}: must be counts >= 0 (or empty)")
            out[col] = v.astype(float)
    return out


def _fit(step: str, name: str, dist: Dist, x: np.ndarray[Any, Any], logpdf: Any, k: int) -> Fit:
    ll = float(np.sum(logpdf(x)))
    ks = stats.kstest(x, lambda v: _cdf(dist, v))
    return Fit(step, name, dist, len(x), ll, 2 * k - 2 * ll, float(ks.statistic), float(ks.pvalue))


def _cdf(dist: Dist, v: Any) -> Any:
    if isinstance(dist, LogNormal):
        return stats.lognorm(s=dist.sigma, scale=dist.median_s).cdf(v)
    if isinstance(dist, Gamma):
        return stats.gamma(a=dist.shape, scale=dist.mean_s / dist.shape).cdf(v)
    if isinstance(dist, Exponential):
        return stats.expon(scale=dist.mean_s).cdf(v)
    raise TypeError(type(dist).__name__)


def fit_step(step: str, seconds: np.ndarray[Any, Any]) -> list[Fit]:
    """Candidates fitted to one step's durations, best (lowest AIC) first."""
    x = np.asarray(seconds, dtype=float)
    x = x[x > 0]
    if len(x) < MIN_FIT:
        return []
    fits = []
    logs = np.log(x)
    mu, sd = float(logs.mean()), float(logs.std())
    if sd > 0:
        ln = LogNormal(float(np.exp(mu)), sd)
        fits.append(_fit(step, "lognormal", ln, x, stats.lognorm(s=sd, scale=np.exp(mu)).logpdf, 2))
    a, _, scale = stats.gamma.fit(x, floc=0)
    g = Gamma(float(a), float(a * scale))
    fits.append(_fit(step, "gamma", g, x, stats.gamma(a=a, scale=scale).logpdf, 2))
    e = Exponential(float(x.mean()))
    fits.append(_fit(step, "exponential", e, x, stats.expon(scale=x.mean()).logpdf, 1))
    return sorted(fits, key=lambda f: f.aic)


def fit_trace(trace: pd.DataFrame) -> dict[str, list[Fit]]:
    """Fits for every step present in the trace."""
    return {step: fit_step(step, g["seconds"].to_numpy()) for step, g in trace.groupby("step")}


def scenario_from_fits(
    base: Scenario, fits: Mapping[str, list[Fit]], trace: pd.DataFrame, *, name: str | None = None
) -> Scenario:
    """``base`` with each traced step's latency replaced by its best fit (or its empirical)."""
    changes: dict[str, Any] = {}
    sources = list(base.sources)
    for step in STEPS:
        obs = trace.loc[trace["step"] == step, "seconds"].to_numpy()
        if not len(obs):
            continue
        cands = fits.get(step, [])
        if cands:
            best = cands[0]
            changes[step] = best.dist
            sources.append(
                f"{step}: {best.name} fitted by maximum likelihood to {best.n} "
                f"observed calls (AIC {best.aic:.1f}, KS {best.ks_stat:.3f})"
            )
        else:
            changes[step] = Empirical(tuple(float(v) for v in obs))
            sources.append(f"{step}: empirical, {len(obs)} observed calls (too few to fit)")
    if "content" in changes:
        changes["content_by_type"] = {}
    return dataclasses.replace(
        base, name=name or f"{base.name}-calibrated", sources=tuple(sources), **changes
    )


def write_scenario(sc: Scenario, path: str | Path) -> Path:
    p = Path(path)
    m = sc.to_mapping()
    p.write_text(tomli_w.dumps(m))
    return p


def fit_summary(fits: Mapping[str, list[Fit]]) -> pd.DataFrame:
    """One row per (step, candidate): parameters, AIC, KS statistic and p-value."""
    rows = []
    for step, cands in fits.items():
        for rank, f in enumerate(cands):
            rows.append(
                {
                    "step": step,
                    "rank": rank + 1,
                    "candidate": f.name,
                    "n": f.n,
                    "mean_s": f.dist.mean,
                    "params": f.dist.to_mapping(),
                    "aic": f.aic,
                    "ks_stat": f.ks_stat,
                    "ks_pvalue": f.ks_pvalue,
                    "delta_aic": f.aic - cands[0].aic if cands else math.nan,
                }
            )
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


__all__ += ["fit_summary"]
