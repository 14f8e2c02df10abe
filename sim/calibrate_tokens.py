"""Calibrate tokens per call and output speed from a trace with token columns (issue 12).

A trace may carry ``input_tokens`` and ``output_tokens`` (characters for ``tts``) beside
``step, seconds``. For each step with output counts, :func:`fit_tokens` fits

* the output speed and the time to first token by least squares on
  ``seconds = ttft + output / output_tps`` (slope ``1/output_tps``, intercept the mean
  time to first token), when the slope is positive;
* the distribution of the output and of the input counts, and of each call's time to
  first token (``seconds - output / output_tps``), with :func:`sim.calibrate.fit_step`
  (lognormal, gamma or exponential by AIC; empirical under 20 observations).

:func:`apply_token_fits` writes them into the scenario: ``[tokens.<step>]`` with
``output_tps`` and ``latency.<step>`` as the time to first token, so a call's latency is
derived from its drawn tokens (:mod:`sim.tokens`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from .dists import Dist, Empirical
from .scenario import STEPS, Scenario
from .tokens import StepTokens

__all__ = ["TOKEN_COLUMNS", "TokenFit", "apply_token_fits", "fit_tokens"]

TOKEN_COLUMNS = ("input_tokens", "output_tokens")


@dataclass(frozen=True)
class TokenFit:
    step: str
    n: int
    output_tps: float  # 0: no positive slope, latency not derived
    ttft_mean_s: float
    r2: float
    output: Dist
    input: Dist | None
    ttft: Dist | None


def _dist(step: str, x: np.ndarray[Any, Any]) -> Dist:
    from .calibrate import fit_step

    fits = fit_step(step, x)
    return fits[0].dist if fits else Empirical(tuple(float(v) for v in x))


def _one(step: str, g: pd.DataFrame) -> TokenFit | None:
    g = g.dropna(subset=["output_tokens"])
    if len(g) < 3:
        return None
    out = g["output_tokens"].to_numpy(dtype=float)
    sec = g["seconds"].to_numpy(dtype=float)
    slope, icpt = np.polyfit(out, sec, 1) if np.ptp(out) > 0 else (0.0, float(sec.mean()))
    resid = sec - (icpt + slope * out)
    ss = float(((sec - sec.mean()) ** 2).sum())
    r2 = 1 - float((resid**2).sum()) / ss if ss > 0 else 0.0
    tps = 1.0 / slope if slope > 0 else 0.0
    ttft = None
    if tps:
        ttft_obs = sec - out / tps
        ttft = _dist(step, np.clip(ttft_obs, 1e-6, None))
    inp = None
    if "input_tokens" in g and g["input_tokens"].notna().all():
        inp = _dist(step, g["input_tokens"].to_numpy(dtype=float))
    return TokenFit(step, len(g), tps, float(icpt), r2, _dist(step, out), inp, ttft)


def fit_tokens(trace: pd.DataFrame) -> dict[str, TokenFit]:
    """Token fits for every step whose rows carry ``output_tokens``."""
    if "output_tokens" not in trace.columns:
        return {}
    fits = {}
    for step, g in trace.groupby("step"):
        f = _one(str(step), g)
        if f is not None:
            fits[str(step)] = f
    return fits


def apply_token_fits(sc: Scenario, fits: dict[str, TokenFit]) -> Scenario:
    """``sc`` with ``[tokens.<step>]`` from the fits; a derived step's latency becomes its
    time to first token."""
    if not fits:
        return sc
    tokens = dict(sc.tokens)
    changes: dict[str, Any] = {}
    sources = list(sc.sources)
    for step in STEPS:
        f = fits.get(step)
        if f is None:
            continue
        old = tokens.get(step)
        derived = f.output_tps > 0 and f.ttft is not None
        tokens[step] = StepTokens(
            input=f.input if step != "tts" else None,
            output=f.output,
            max_tokens=old.max_tokens if old is not None else 0,
            output_tps=f.output_tps if derived else 0.0,
        )
        if derived:
            changes[step] = f.ttft
            sources.append(
                f"{step}: {f.output_tps:.1f} tokens/s and time to first token "
                f"{f.ttft_mean_s:.2f} s fitted by least squares to {f.n} calls (R² {f.r2:.3f})"
            )
    if "content" in changes:
        changes["content_by_type"] = {}
    return dataclasses.replace(sc, tokens=tokens, sources=tuple(sources), **changes)
