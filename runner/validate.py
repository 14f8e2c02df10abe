"""``scenebench validate``: is the model right?

* ``exact``: for every cell of a grid, the real pipeline under the virtual clock
  and the model, on the same seeds, must give the same timeline run for run:
  every scene's ready time and every request's start and end within 1e-6 s, the
  same statuses, 429s and retries. The first diverging event of the first
  diverging run is printed.
* ``wall``: the real pipeline on real sockets (uvicorn on 127.0.0.1, time
  compressed) against the model on the same cells. With common random numbers,
  real run ``r`` and model run ``r`` see the same draws, so they are compared in
  pairs: relative error of the mean and p95 makespan, time to first scene and
  429s, with a 95% interval of the paired relative difference. The model's
  population (many more runs) is reported beside. The harness's own overhead
  floor is measured first and the time scale is picked so that it stays under
  1% of model time.
"""

from __future__ import annotations

import asyncio
import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from scipy import stats

from sim.fast import quota_free, simulate_fast
from sim.model import simulate, simulate_many
from sim.scenario import MODES, Scenario, load_scenario
from sim.schema import RequestRecord, RunResult

from .pipeline import Clock
from .run import run_classroom, run_classroom_async, run_tenants, warm_up
from .server import ServerProcess
from .sweep import DEFAULT_QUOTAS, apply_quota

__all__ = [
    "ExactReport",
    "WallCell",
    "first_divergence",
    "measure_overhead_floor",
    "validate_exact",
    "validate_wall",
]

TOL_S = 1e-6


def _event(r: RequestRecord) -> str:
    return (
        f"{r.step} o{r.order} clip {r.clip} attempt {r.attempt} status {r.status} "
        f"[{r.t_start_s:.6f}, {r.t_end_s:.6f}] in flight {r.inflight_at_arrival}"
    )


def first_divergence(real: RunResult, model: RunResult) -> str | None:
    """None when the two timelines agree; else a line naming the first diverging event."""
    ev_r = sorted(
        real.requests_log, key=lambda q: (q.t_start_s, q.step, q.order, q.clip, q.attempt)
    )
    ev_m = sorted(
        model.requests_log, key=lambda q: (q.t_start_s, q.step, q.order, q.clip, q.attempt)
    )
    for a, b in zip(ev_r, ev_m, strict=False):
        same = (
            (a.step, a.order, a.clip, a.attempt, a.status)
            == (b.step, b.order, b.clip, b.attempt, b.status)
            and abs(a.t_start_s - b.t_start_s) <= TOL_S
            and abs(a.t_end_s - b.t_end_s) <= TOL_S
        )
        if not same:
            return f"first diverging request: real {_event(a)} | model {_event(b)}"
    if len(ev_r) != len(ev_m):
        longer, who = (ev_r, "real") if len(ev_r) > len(ev_m) else (ev_m, "model")
        return (
            f"{who} has {abs(len(ev_r) - len(ev_m))} more requests, first: "
            f"{_event(longer[min(len(ev_r), len(ev_m))])}"
        )
    if real.scene_order != model.scene_order:
        return f"scene order: real {real.scene_order} | model {model.scene_order}"
    for o, a_t, b_t in zip(real.scene_order, real.scene_ready_s, model.scene_ready_s, strict=True):
        if abs(a_t - b_t) > TOL_S:
            return f"scene {o} ready: real {a_t:.6f} s | model {b_t:.6f} s"
    for k in ("status", "http_429", "http_5xx", "retries", "requests", "timeouts", "failed_orders"):
        if getattr(real, k) != getattr(model, k):
            return f"{k}: real {getattr(real, k)!r} | model {getattr(model, k)!r}"
    if abs(real.makespan_s - model.makespan_s) > TOL_S:
        return f"makespan: real {real.makespan_s:.6f} s | model {model.makespan_s:.6f} s"
    return _qoe_divergence(real, model)


def _qoe_divergence(real: RunResult, model: RunResult) -> str | None:
    """The learner's metrics (:mod:`sim.qoe`): equal counts, times within 1e-6 s (NaN = NaN)."""
    if real.stalls != model.stalls:
        return f"stalls: real {real.stalls} | model {model.stalls}"
    for k in ("startup_s", "stall_s", "stall_ratio", "last_scene_s", "playback_s"):
        a, b = getattr(real, k), getattr(model, k)
        if math.isnan(a) != math.isnan(b) or (not math.isnan(a) and abs(a - b) > TOL_S):
            return f"{k}: real {a!r} | model {b!r}"
    return None


@dataclass
class ExactReport:
    cells: int = 0
    runs: int = 0
    requests: int = 0
    http_429: int = 0
    retries: int = 0
    divergences: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.divergences


def _exact_cell(
    sc: Scenario,
    q: int | None,
    mode: str,
    c: int,
    runs: int,
    seed: int,
    adaptive: str = "off",
    tenants: int = 1,
    stagger_s: float = 0.0,
    stagger_dist: str = "constant",
) -> tuple[int, int, int, str | None]:
    s = sc if q is None else apply_quota(sc, q)
    n_req = n429 = nretry = 0
    for r in range(runs):
        models: list[RunResult] = []
        if tenants == 1:
            reals = [
                run_classroom(s, mode, c, seed=seed, run_id=r, clock="virtual", adaptive=adaptive)
            ]
            one = simulate(s, mode, c, seed=seed, run_id=r, records=True, adaptive=adaptive)
            assert isinstance(one, RunResult)
            models = [one]
        else:
            reals = run_tenants(
                s,
                mode,
                c,
                tenants,
                seed=seed,
                run_id=r,
                adaptive=adaptive,
                stagger_s=stagger_s,
                stagger_dist=stagger_dist,
            )
            out = simulate(
                s,
                mode,
                c,
                seed=seed,
                run_id=r,
                records=True,
                adaptive=adaptive,
                tenants=tenants,
                stagger_s=stagger_s,
                stagger_dist=stagger_dist,
            )
            assert isinstance(out, list)
            models = out
        for real, model in zip(reals, models, strict=True):
            assert isinstance(model, RunResult)
            n_req += len(real.requests_log)
            n429 += real.http_429
            nretry += real.retries
            diff = first_divergence(real, model)
            if diff is not None:
                where = (
                    f"scenario {sc.name}, quota {'scenario' if q is None else q}, mode {mode}, "
                    f"c {c}, adaptive {adaptive}, tenants {tenants}, seed {seed}, run {r}, "
                    f"tenant {real.tenant}"
                )
                return n_req, n429, nretry, f"{where}: {diff}"
    return n_req, n429, nretry, None


def validate_exact(
    scenarios: Sequence[Scenario],
    *,
    quotas: Sequence[int | None] | None = None,
    concurrencies: Sequence[int] = tuple(range(1, 11)),
    modes: Sequence[str] = MODES,
    runs: int = 2,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
    stop_at_first: bool = True,
    adaptives: Sequence[str] = ("off",),
    tenants: Sequence[int] = (1,),
    stagger_s: float = 0.0,
    stagger_dist: str = "constant",
) -> ExactReport:
    """Compare the real pipeline (virtual clock) and the model on every cell."""
    qs: list[int | None] = list(quotas) if quotas is not None else [None, *DEFAULT_QUOTAS]
    cells = [
        (sc, q, m, c, a, k)
        for sc in scenarios
        for q in qs
        for k in tenants
        for m in modes
        for a in (["off"] if m == "serial" else adaptives)
        for c in ([1] if m == "serial" else concurrencies)
    ]
    rep = ExactReport()
    for i, (sc, q, m, c, a, k) in enumerate(cells):
        n_req, n429, nretry, diff = _exact_cell(
            sc, q, m, c, runs, seed, a, k, stagger_s, stagger_dist
        )
        rep.cells += 1
        rep.runs += runs
        rep.requests += n_req
        rep.http_429 += n429
        rep.retries += nretry
        if progress is not None:
            progress(i + 1, len(cells))
        if diff is not None:
            rep.divergences.append(diff)
            if stop_at_first:
                break
    return rep


# -- wall clock -------------------------------------------------------------------------
def measure_overhead_floor(classrooms: int = 3, call_s: float = 0.01) -> float:
    """Real seconds of harness overhead per request, beyond the latency it was asked to wait.

    A quota-free classroom whose every call takes ``call_s`` runs serially through the real
    pipeline against the fake provider in its own process: (makespan - requests x call_s) /
    requests. A non-zero call counts the timer overshoot of each sleep, which dominates.
    """
    from sim.dists import Constant

    sc = load_scenario("default").replace(
        content=Constant(call_s), actions=Constant(call_s), tts=Constant(call_s)
    )
    sc = apply_quota(sc, 0)

    async def go(url: str) -> float:
        async with httpx.AsyncClient(base_url=url) as client:
            await warm_up(client, 4)
            per = []
            for r in range(classrooms):
                _, res = await run_classroom_async(
                    client, sc, "serial", 1, run_id=r, clock=Clock(1.0), world="wall"
                )
                n = max(1, res.requests)
                per.append((res.makespan_s - n * call_s) / n)
            return max(0.0, statistics.median(per))

    with ServerProcess(sc, 0, time_scale=1.0, keep_log=False) as srv:
        return asyncio.run(go(srv.base_url))


@dataclass(frozen=True)
class WallCell:
    scenario: str
    quota: int | None  # None: the scenario's own quotas
    mode: str
    concurrency: int
    adaptive: str = "off"

    def build(self) -> Scenario:
        sc = load_scenario(self.scenario)
        return sc if self.quota is None else apply_quota(sc, self.quota)

    @property
    def label(self) -> str:
        q = (
            "own quota"
            if self.quota is None
            else ("unlimited" if self.quota == 0 else f"{self.quota} in flight")
        )
        tail = "" if self.adaptive == "off" else f" adaptive={self.adaptive}"
        return f"{self.scenario} / {q} / {self.mode} c={self.concurrency}{tail}"


QUICK_CELLS = (
    WallCell("default", 0, "serial", 1),
    WallCell("default", 0, "pipelined", 3),
    WallCell("default", 0, "hybrid", 3),
    WallCell("burst-429", None, "pipelined", 2),
    WallCell("low-quota", None, "pipelined", 3),
)
FULL_CELLS = (
    *QUICK_CELLS,
    WallCell("content-heavy", 0, "pipelined", 4),
    WallCell("tts-heavy", 0, "pipelined", 3),
    WallCell("default", 3, "pipelined", 2),
    WallCell("default", 2, "hybrid", 2),
    WallCell("default", 5, "pipelined", 5),
    WallCell("low-quota", None, "pipelined", 3, "gate"),
    WallCell("default", 3, "pipelined", 3, "gate"),
)


async def _wall_runs(
    sc: Scenario,
    mode: str,
    c: int,
    seed: int,
    reps: int,
    scale: float,
    at_once: int = 4,
    adaptive: str = "off",
) -> list[RunResult]:
    with ServerProcess(sc, seed, time_scale=scale, keep_log=False) as srv:
        limits = httpx.Limits(
            max_connections=reps * (c + 3), max_keepalive_connections=reps * (c + 3)
        )
        async with httpx.AsyncClient(
            base_url=srv.base_url, limits=limits, timeout=httpx.Timeout(None)
        ) as client:
            await warm_up(client, min(200, reps * (c + 2)))
            # every classroom on its own keys: replications, not tenants sharing a quota;
            # a few at a time so that one busy client loop does not perturb their timing
            gate = asyncio.Semaphore(at_once)

            async def one(r: int) -> tuple[Any, RunResult]:
                async with gate:
                    return await run_classroom_async(
                        client,
                        sc,
                        mode,
                        c,
                        seed=seed,
                        run_id=r,
                        clock=Clock(scale),
                        world="wall",
                        api_keys=(f"llm-{r}", f"tts-{r}"),
                        adaptive=adaptive,
                    )

            done = await asyncio.gather(*(one(r) for r in range(reps)))
    return [res for _, res in done]


def _rel_ci(real: np.ndarray[Any, Any], model: np.ndarray[Any, Any]) -> tuple[float, float]:
    rel = (real - model) / np.where(model == 0, np.nan, model)
    rel = rel[~np.isnan(rel)]
    if len(rel) < 2:
        return (math.nan, math.nan)
    lo, hi = stats.t.interval(0.95, len(rel) - 1, loc=rel.mean(), scale=stats.sem(rel))
    return float(lo), float(hi)


def _p95_rel_ci(
    real: np.ndarray[Any, Any], population: np.ndarray[Any, Any], *, n_boot: int = 2000
) -> tuple[float, float]:
    """95% bootstrap interval of real p95 / model-population p95 - 1 (seeded)."""
    rng = np.random.default_rng(0)
    ref = float(np.percentile(population, 95))
    boots = np.percentile(real[rng.integers(0, len(real), (n_boot, len(real)))], 95, axis=1)
    lo, hi = np.percentile(boots / ref - 1, [2.5, 97.5])
    return float(lo), float(hi)


def _within(point: float, ci: tuple[float, float], tol: float) -> bool:
    """In tolerance unless the whole 95% interval lies outside ±tol (or the point does and
    there is no interval)."""
    lo, hi = ci
    if math.isnan(lo) or math.isnan(hi):
        return abs(point) <= tol
    return not (lo > tol or hi < -tol)


def _rel(a: float, b: float) -> float:
    return math.nan if b == 0 or math.isnan(b) else (a - b) / b


def validate_wall(
    cells: Sequence[WallCell],
    *,
    reps: int = 16,
    model_reps: int = 2000,
    seed: int = 0,
    mean_tol: float = 0.05,
    p95_tol: float = 0.10,
    overhead_target: float = 0.01,
    max_scale: float = 0.25,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run the cells on the wall clock and the model; the per-cell comparison and verdict."""
    floor_s = measure_overhead_floor()
    if log:
        log(
            f"harness overhead floor: {floor_s * 1e3:.2f} ms of real time per request "
            "beyond its latency (quota-free, loopback, provider in its own process)"
        )
    out_cells = []
    for cell in cells:
        sc = cell.build()
        pop = (
            simulate_fast(sc, cell.mode, cell.concurrency, model_reps, seed=seed).results()
            if quota_free(sc) and cell.adaptive == "off"
            else simulate_many(
                sc, cell.mode, cell.concurrency, model_reps, seed=seed, adaptive=cell.adaptive
            )
        )
        paired_model = pop[:reps]
        mk_pop = np.array([r.makespan_s for r in pop])
        req = float(np.mean([r.requests + r.timeouts for r in pop]))
        # overhead per run ~ floor x requests (all of them, an upper bound on the critical path)
        scale = floor_s * req / (overhead_target * float(mk_pop.mean()))
        scale = float(min(max_scale, max(sc.time_scale, math.ceil(scale * 1000) / 1000)))
        t0 = time.perf_counter()
        # quota-free classrooms cannot race each other: run them all at once
        at_once = reps if not (sc.quota_llm.limited or sc.quota_tts.limited) else 4
        real = asyncio.run(
            _wall_runs(sc, cell.mode, cell.concurrency, seed, reps, scale, at_once, cell.adaptive)
        )
        wall_s = time.perf_counter() - t0
        mr = np.array([r.makespan_s for r in real])
        mm = np.array([r.makespan_s for r in paired_model])
        tr = np.array([r.ttfs_s for r in real])
        tm = np.array([r.ttfs_s for r in paired_model])
        both = ~np.isnan(tr) & ~np.isnan(tm)
        res: dict[str, Any] = {
            "cell": cell.label,
            "scenario": cell.scenario,
            "quota": cell.quota,
            "mode": cell.mode,
            "concurrency": cell.concurrency,
            "reps": reps,
            "model_reps": model_reps,
            "time_scale": scale,
            "wall_s": wall_s,
            "overhead_share": floor_s * req / (scale * float(mk_pop.mean())),
            "real_makespan_mean_s": float(mr.mean()),
            "model_makespan_mean_s": float(mm.mean()),
            "model_population_mean_s": float(mk_pop.mean()),
            "makespan_mean_rel_err": _rel(float(mr.mean()), float(mm.mean())),
            "makespan_mean_rel_ci": _rel_ci(mr, mm),
            "real_makespan_p95_s": float(np.percentile(mr, 95)),
            "model_makespan_p95_s": float(np.percentile(mm, 95)),
            "model_population_p95_s": float(np.percentile(mk_pop, 95)),
            "makespan_p95_rel_err": _rel(
                float(np.percentile(mr, 95)), float(np.percentile(mm, 95))
            ),
            "real_ttfs_mean_s": float(tr[both].mean()) if both.any() else math.nan,
            "model_ttfs_mean_s": float(tm[both].mean()) if both.any() else math.nan,
            "ttfs_mean_rel_err": _rel(float(tr[both].mean()), float(tm[both].mean()))
            if both.any()
            else math.nan,
            "real_429_mean": float(np.mean([r.http_429 for r in real])),
            "model_429_mean": float(np.mean([r.http_429 for r in paired_model])),
            "real_status_paused": int(sum(r.status == "paused" for r in real)),
            "model_status_paused": int(sum(r.status == "paused" for r in paired_model)),
            "pairs_real": [float(x) for x in mr],
            "pairs_model": [float(x) for x in mm],
        }
        res["makespan_p95_rel_ci"] = _p95_rel_ci(mr, mk_pop)
        res["ok"] = bool(
            _within(res["makespan_mean_rel_err"], res["makespan_mean_rel_ci"], mean_tol)
            and _within(res["makespan_p95_rel_err"], res["makespan_p95_rel_ci"], p95_tol)
        )
        out_cells.append(res)
        if log:
            log(
                f"{cell.label}: mean {res['real_makespan_mean_s']:.1f} vs "
                f"{res['model_makespan_mean_s']:.1f} s "
                f"({100 * res['makespan_mean_rel_err']:+.2f}%),"
                f" p95 {100 * res['makespan_p95_rel_err']:+.2f}%, 429/run "
                f"{res['real_429_mean']:.1f} vs {res['model_429_mean']:.1f}, scale {scale}, "
                f"{wall_s:.1f} s wall -> {'ok' if res['ok'] else 'OUT OF TOLERANCE'}"
            )
    return {
        "overhead_floor_s": floor_s,
        "mean_tol": mean_tol,
        "p95_tol": p95_tol,
        "reps": reps,
        "model_reps": model_reps,
        "seed": seed,
        "cells": out_cells,
        "ok": all(c["ok"] for c in out_cells),
    }


def render_wall_figure(report: dict[str, Any], path: Path) -> list[Path]:
    """Model vs real scatter (per-run pairs, cell means with 95% CI) with y = x."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 5.6))
    cmap = plt.get_cmap("tab10")
    lo, hi = math.inf, 0.0
    for i, c in enumerate(report["cells"]):
        xm, yr = np.array(c["pairs_model"]), np.array(c["pairs_real"])
        ax.scatter(xm, yr, s=8, alpha=0.35, color=cmap(i % 10))
        rel_lo, rel_hi = c["makespan_mean_rel_ci"]
        y = c["real_makespan_mean_s"]
        x = c["model_makespan_mean_s"]
        err = [[max(0.0, -rel_lo * x)], [max(0.0, rel_hi * x)]] if not math.isnan(rel_lo) else None
        ax.errorbar(
            [x],
            [y],
            yerr=err,
            fmt="o",
            ms=6,
            color=cmap(i % 10),
            capsize=3,
            label=f"{c['cell']} ({100 * c['makespan_mean_rel_err']:+.1f}%)",
        )
        lo, hi = min(lo, xm.min(), yr.min()), max(hi, xm.max(), yr.max())
    ax.plot([lo, hi], [lo, hi], color="black", lw=0.8, label="y = x")
    ax.set_xlabel("model makespan (model s)")
    ax.set_ylabel("real pipeline, wall clock, makespan (model s)")
    ax.set_title("Model vs real: paired runs (dots), cell means with 95% CI")
    ax.legend(fontsize=7, loc="upper left")
    ax.grid(alpha=0.3)
    out = []
    for ext in ("png", "svg"):
        p = path.with_suffix(f".{ext}")
        fig.savefig(p, dpi=120, bbox_inches="tight")
        out.append(p)
    plt.close(fig)
    return out
