"""``scenebench validate``: is the model right?

* ``exact``: for every cell of a grid, the real pipeline under the virtual clock
  and the model, on the same seeds, must give the same timeline run for run:
  every scene's ready time and every request's start and end within 1e-6 s, the
  same statuses, 429s and retries. The first diverging event of the first
  diverging run is printed.
* ``wall``: the real pipeline on real sockets (uvicorn on 127.0.0.1, time
  compressed) against the model on the same cells. With common random numbers,
  real run ``r`` and model run ``r`` see the same draws, so they are compared in
  pairs (like with like: every estimate and its interval against the paired model
  runs): mean makespan, p95 makespan and mean time to first scene. An equivalence
  test: a metric passes only when its whole 95% interval lies inside the tolerance
  band, fails when it lies wholly outside, and is ``inconclusive`` otherwise, with
  the number of runs at which an interval of that spread would decide. Cells whose
  every run pauses early are reported apart. The harness's own overhead floor is
  measured first and the time scale is picked so that it stays under 1% of model
  time (docs/validation.md).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from sim.config import RunConfig
from sim.engines import simulate
from sim.scenario import MODES, Scenario, load_scenario
from sim.schema import RequestRecord, RunResult

from ..store.stamps import provenance, provenance_line
from ..world.fake_provider import ServerProcess
from ..world.pipeline import Clock
from ..world.run import frozen_gc, pool_size, run, run_async, wall_client, warm_up
from .sweep import (
    DEFAULT_QUOTAS,
    ConfigView,
    ResultsError,
    apply_quota,
    check_new_folder,
    in_source_tree,
    new_results_dir,
    write_json_atomic,
)

__all__ = [
    "FAIL",
    "INCONCLUSIVE",
    "PASS",
    "ExactReport",
    "WallCell",
    "check_wall_folder",
    "equivalence",
    "first_divergence",
    "measure_overhead_floor",
    "render_wall_markdown",
    "runs_to_decide",
    "validate_exact",
    "validate_wall",
    "wall_cells",
    "wall_provenance",
    "wall_verdict_lines",
    "write_wall_results",
]

TOL_S = 1e-6
PASS, FAIL, INCONCLUSIVE, ALL_PAUSED = "pass", "fail", "inconclusive", "all runs paused"


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
    fast_quota_runs: int = 0  # runs the limited-key engine computed, equal to SimPy's
    compiled_runs: int = 0  # generation runs the compiled runs engine computed, equal to SimPy's

    @property
    def ok(self) -> bool:
        return not self.divergences

    def to_json(self) -> dict[str, Any]:
        """The counts, the verdict and the divergences (``validate --exact --json``)."""
        return {
            "cells": self.cells,
            "runs": self.runs,
            "requests": self.requests,
            "http_429": self.http_429,
            "retries": self.retries,
            "ok": self.ok,
            "divergences": self.divergences,
            "fast_quota_runs": self.fast_quota_runs,
            "compiled_runs": self.compiled_runs,
        }

    def lines(self, scenarios: Sequence[str], profiles: Sequence[str]) -> list[str]:
        """The text report: the counts over what was checked, then the verdict."""
        return [
            f"validate --exact: {self.cells} cells, {self.runs} runs, {self.requests} "
            f"requests ({self.http_429} answered 429, {self.retries} retries) over "
            f"{', '.join(scenarios)} x upstream {', '.join(profiles)}",
            "real pipeline (virtual clock) and model agree on every timeline"
            + (
                f"; the limited-key engine (sim.fast_quota) equals SimPy on "
                f"{self.fast_quota_runs} runs, request for request"
                if self.fast_quota_runs
                else ""
            )
            if self.ok
            else f"DIVERGED: {self.divergences[0]}",
        ]


def _exact_runs(
    s: Scenario, cfg: RunConfig, r: int, seed: int
) -> tuple[list[RunResult], list[RunResult]]:
    """Run ``r`` of one cell in both worlds: the real pipeline's classrooms and the model's."""
    reals = run(s, cfg, clock="virtual", seed=seed, run_id=r)
    return reals, simulate(s, cfg, seed=seed, run_id=r, engine="simpy")


def _engine_check(s: Scenario, cfg: RunConfig, models: list[RunResult], seed: int) -> str | None:
    """The limited-key engine (:mod:`sim.fast_quota`) on the cell's runs against the SimPy
    model's (``models``: runs 0 .., one classroom each), every field and every request."""
    from sim.fast_quota import divergence, simulate_quota

    fast = simulate_quota(s, cfg, len(models), seed=seed).results()
    limited = (s.quota_llm.limited, s.quota_tts.limited)
    for model, got in zip(models, fast, strict=True):
        diff = divergence(model, got, limited)
        if diff is not None:
            return f"fast_quota vs simpy: {diff}"
    return None


def _exact_cell(
    sc: Scenario, q: int | None, cfg: RunConfig, runs: int, seed: int
) -> tuple[int, int, int, str | None]:
    s = sc if q is None else apply_quota(sc, q)
    n_req = n429 = nretry = 0
    check = _fast_quota_cell(sc, q, cfg)
    all_models: list[RunResult] = []
    for r in range(runs):
        reals, models = _exact_runs(s, cfg, r, seed)
        all_models += models
        for real, model in zip(reals, models, strict=True):
            n_req += len(real.requests_log)
            n429 += real.http_429
            nretry += real.retries
            diff = first_divergence(real, model)
            if diff is not None:
                where = (
                    f"scenario {sc.name}, quota {'scenario' if q is None else q}, "
                    f"mode {cfg.mode}, c {cfg.c}, adaptive {cfg.adaptive}, "
                    f"tenants {cfg.tenants}, seed {seed}, run {r}, tenant {real.tenant}"
                )
                return n_req, n429, nretry, f"{where}: {diff}"
    if check:
        diff = _engine_check(s, cfg, all_models, seed)
        if diff is not None:
            where = f"scenario {sc.name}, quota {'scenario' if q is None else q}"
            return n_req, n429, nretry, f"{where}, mode {cfg.mode}, c {cfg.c}, seed {seed}: {diff}"
    return n_req, n429, nretry, None


def _fast_quota_cell(sc: Scenario, q: int | None, cfg: RunConfig) -> bool:
    """Whether :func:`_exact_cell` also checks the limited-key engine on this cell."""
    from sim.fast_quota import quota_fits

    s = sc if q is None else apply_quota(sc, q)
    return quota_fits(s, cfg) and (s.quota_llm.limited or s.quota_tts.limited)


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
        cfg = RunConfig.of(
            m, c, adaptive=a, tenants=k, stagger_s=stagger_s, stagger_dist=stagger_dist,
            records=True,
        )  # fmt: skip
        n_req, n429, nretry, diff = _exact_cell(sc, q, cfg, runs, seed)
        if _fast_quota_cell(sc, q, cfg):
            rep.fast_quota_runs += runs
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
def measure_overhead_floor(classrooms: int = 3, call_s: float = 0.02) -> float:
    """Real seconds of harness overhead per request, beyond the latency it was asked to wait:
    :func:`runner.experiments.floor.measure_floor`'s ``harness_s`` (quota- and fault-free serial
    classrooms, the provider in its own process)."""
    from .floor import measure_floor

    return measure_floor(call_s=call_s, rounds=classrooms, bare=False).harness_s


@dataclass(frozen=True)
class WallCell(ConfigView):
    """A wall-clock validation cell: a scenario under a quota, one run's settings."""

    scenario: str
    quota: int | None  # None: the scenario's own quotas
    config: RunConfig

    @classmethod
    def of(
        cls, scenario: str, quota: int | None, mode: str, concurrency: int, adaptive: str = "off"
    ) -> WallCell:
        return cls(scenario, quota, RunConfig.of(mode, concurrency, adaptive=adaptive))

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
    WallCell.of("default", 0, "serial", 1),
    WallCell.of("default", 0, "pipelined", 3),
    WallCell.of("default", 0, "hybrid", 3),
    WallCell.of("burst-429", None, "pipelined", 2),
    WallCell.of("low-quota", None, "pipelined", 3),
)
FULL_CELLS = (
    *QUICK_CELLS,
    WallCell.of("content-heavy", 0, "pipelined", 4),
    WallCell.of("tts-heavy", 0, "pipelined", 3),
    WallCell.of("default", 3, "pipelined", 2),
    WallCell.of("default", 2, "hybrid", 2),
    WallCell.of("default", 5, "pipelined", 5),
    WallCell.of("low-quota", None, "pipelined", 3, "gate"),
    WallCell.of("default", 3, "pipelined", 3, "gate"),
)


async def _wall_runs(
    sc: Scenario,
    cfg: RunConfig,
    seed: int,
    reps: int,
    scale: float,
    at_once: int = 4,
    latency_factor: float = 1.0,
) -> list[RunResult]:
    with ServerProcess(
        sc, seed, time_scale=scale, keep_log=False, latency_factor=latency_factor
    ) as srv:
        # every classroom on its own keys: replications, not tenants sharing a quota; each on
        # its own small pool (a shared large one costs milliseconds per request), a few at a
        # time so that one busy client loop does not perturb their races
        gate = asyncio.Semaphore(at_once)
        n = pool_size(cfg.c)

        async def one(r: int) -> RunResult:
            async with gate, wall_client(srv.base_url, n) as client:
                await warm_up(client, n)
                _, res = await run_async(
                    client, sc, cfg, seed=seed, run_id=r, clock=Clock(scale), world="wall",
                    api_keys=(f"llm-{r}", f"tts-{r}"),
                )  # fmt: skip
                return res

        return list(await asyncio.gather(*(one(r) for r in range(reps))))


def equivalence(ci: tuple[float, float], tol: float) -> str:
    """An equivalence test's verdict: ``pass`` when the whole 95% interval lies inside
    ``[-tol, tol]``, ``fail`` when it lies wholly outside, else ``inconclusive`` (also when
    there is no interval)."""
    lo, hi = ci
    if math.isnan(lo) or math.isnan(hi):
        return INCONCLUSIVE
    if -tol <= lo and hi <= tol:
        return PASS
    if lo > tol or hi < -tol:
        return FAIL
    return INCONCLUSIVE


def runs_to_decide(point: float, ci: tuple[float, float], n: int, tol: float) -> int | None:
    """Runs at which an interval of this spread (half-width shrinking as 1/sqrt(runs)) around
    ``point`` would lie wholly inside the band (``|point| < tol``) or wholly outside it."""
    lo, hi = ci
    margin = abs(tol - abs(point))
    if n < 2 or math.isnan(lo) or math.isnan(hi) or math.isnan(point) or margin == 0:
        return None
    half = (hi - lo) / 2
    return max(n + 1, math.ceil(n * (half / margin) ** 2 - 1e-9))


def _paired_mean(real: np.ndarray[Any, Any], model: np.ndarray[Any, Any]) -> tuple[float, Any]:
    """Mean paired relative difference real/model - 1 and its 95% t-interval."""
    ok = ~np.isnan(real) & ~np.isnan(model) & (model != 0)
    rel = real[ok] / model[ok] - 1
    if len(rel) < 2:
        return (float(rel.mean()) if len(rel) else math.nan), (math.nan, math.nan)
    if float(np.std(rel)) == 0.0:
        return float(rel.mean()), (float(rel.mean()), float(rel.mean()))
    lo, hi = stats.t.interval(0.95, len(rel) - 1, loc=rel.mean(), scale=stats.sem(rel))
    return float(rel.mean()), (float(lo), float(hi))


def _paired_p95(
    real: np.ndarray[Any, Any], model: np.ndarray[Any, Any], *, n_boot: int = 2000
) -> tuple[float, tuple[float, float]]:
    """p95(real)/p95(model) - 1 over the same paired runs, and its 95% interval by a paired
    bootstrap (both worlds resampled with the same run indices; seeded)."""
    if len(real) < 2:
        return math.nan, (math.nan, math.nan)
    point = float(np.percentile(real, 95) / np.percentile(model, 95) - 1)
    idx = np.random.default_rng(0).integers(0, len(real), (n_boot, len(real)))
    boots = np.percentile(real[idx], 95, axis=1) / np.percentile(model[idx], 95, axis=1) - 1
    lo, hi = np.percentile(boots, [2.5, 97.5])
    return point, (float(lo), float(hi))


def _checks(
    real: list[RunResult], model: list[RunResult], tols: dict[str, float]
) -> dict[str, dict[str, Any]]:
    mr = np.array([r.makespan_s for r in real])
    mm = np.array([r.makespan_s for r in model])
    ests = {
        "makespan_mean": _paired_mean(mr, mm),
        "makespan_p95": _paired_p95(mr, mm),
        "ttfs_mean": _paired_mean(
            np.array([r.ttfs_s for r in real]), np.array([r.ttfs_s for r in model])
        ),
    }
    out = {}
    for name, (point, ci) in ests.items():
        v = equivalence(ci, tols[name])
        need = runs_to_decide(point, ci, len(real), tols[name]) if v == INCONCLUSIVE else None
        out[name] = {"point": point, "ci": ci, "tol": tols[name], "verdict": v, "runs": need}
    return out


def _cell_verdict(checks: dict[str, dict[str, Any]]) -> tuple[str, int | None]:
    verdicts = [c["verdict"] for c in checks.values()]
    if FAIL in verdicts:
        return FAIL, None
    if INCONCLUSIVE in verdicts:
        needs = [c["runs"] for c in checks.values() if c["verdict"] == INCONCLUSIVE]
        return INCONCLUSIVE, None if None in needs else max(needs)
    return PASS, None


def _model_population(cell: WallCell, sc: Scenario, model_reps: int, seed: int) -> list[Any]:
    return simulate(sc, cell.config, reps=model_reps, seed=seed)


def _cell_report(
    cell: WallCell, real: list[RunResult], pop: list[Any], tols: dict[str, float]
) -> dict[str, Any]:
    paired = pop[: len(real)]
    mr = np.array([r.makespan_s for r in real])
    mm = np.array([r.makespan_s for r in paired])
    checks = _checks(real, paired, tols)
    paused = all(r.status != "completed" for r in [*real, *paired])
    verdict, runs = (ALL_PAUSED, None) if paused else _cell_verdict(checks)
    tr = np.array([r.ttfs_s for r in real])
    tm = np.array([r.ttfs_s for r in paired])
    return {
        "cell": cell.label,
        "scenario": cell.scenario,
        "quota": cell.quota,
        "mode": cell.mode,
        "concurrency": cell.concurrency,
        "reps": len(real),
        "real_makespan_mean_s": float(mr.mean()),
        "model_makespan_mean_s": float(mm.mean()),
        "model_population_mean_s": float(np.mean([r.makespan_s for r in pop])),
        "model_population_p95_s": float(np.percentile([r.makespan_s for r in pop], 95)),
        "makespan_mean_rel_err": checks["makespan_mean"]["point"],
        "makespan_mean_rel_ci": checks["makespan_mean"]["ci"],
        "real_makespan_p95_s": float(np.percentile(mr, 95)),
        "model_makespan_p95_s": float(np.percentile(mm, 95)),
        "makespan_p95_rel_err": checks["makespan_p95"]["point"],
        "makespan_p95_rel_ci": checks["makespan_p95"]["ci"],
        "real_ttfs_mean_s": float(np.nanmean(tr)) if (~np.isnan(tr)).any() else math.nan,
        "model_ttfs_mean_s": float(np.nanmean(tm)) if (~np.isnan(tm)).any() else math.nan,
        "ttfs_mean_rel_err": checks["ttfs_mean"]["point"],
        "ttfs_mean_rel_ci": checks["ttfs_mean"]["ci"],
        "real_429_mean": float(np.mean([r.http_429 for r in real])),
        "model_429_mean": float(np.mean([r.http_429 for r in paired])),
        "real_status_paused": int(sum(r.status != "completed" for r in real)),
        "model_status_paused": int(sum(r.status != "completed" for r in paired)),
        "checks": checks,
        "verdict": verdict,
        "runs_needed": runs,
        "ok": verdict == PASS,
        "pairs_real": [float(x) for x in mr],
        "pairs_model": [float(x) for x in mm],
    }


def _log_cell(res: dict[str, Any], log: Callable[[str], None]) -> None:
    parts = []
    for name, c in res["checks"].items():
        lo, hi = c["ci"]
        parts.append(
            f"{name} {100 * c['point']:+.2f}% [{100 * lo:+.2f}, {100 * hi:+.2f}] "
            f"(±{100 * c['tol']:g}%: {c['verdict']})"
        )
    tail = res["verdict"].upper()
    if res["verdict"] == INCONCLUSIVE:
        need = res["runs_needed"]
        tail += f" (about {need} runs would decide)" if need else " (no spread to extrapolate)"
    log(
        f"{res['cell']}: {'; '.join(parts)}; 429/run {res['real_429_mean']:.1f} vs "
        f"{res['model_429_mean']:.1f}, scale {res['time_scale']}, {res['wall_s']:.1f} s wall "
        f"-> {tail}"
    )


def _overall(cells: list[dict[str, Any]]) -> str:
    judged = [c["verdict"] for c in cells if c["verdict"] != ALL_PAUSED]
    if FAIL in judged:
        return FAIL
    if INCONCLUSIVE in judged or not judged:
        return INCONCLUSIVE
    return PASS


def _run_wall_cell(
    cell: WallCell,
    *,
    reps: int,
    model_reps: int,
    seed: int,
    tols: dict[str, float],
    floor_s: float,
    overhead_target: float,
    max_scale: float,
    latency_factor: float,
) -> dict[str, Any]:
    """One wall-clock cell: the model population, the time scale that keeps the harness's
    floor under ``overhead_target`` of model time, the real runs, and the paired report."""
    from .floor import pick_time_scale

    sc = cell.build()
    pop = _model_population(cell, sc, model_reps, seed)
    model_s = float(np.mean([r.makespan_s for r in pop]))
    req = float(np.mean([r.requests + r.timeouts for r in pop]))
    scale = pick_time_scale(
        floor_s, math.ceil(req), model_s, target=overhead_target, min_scale=sc.time_scale
    )
    scale = min(scale, max_scale)
    t0 = time.perf_counter()
    # quota-free classrooms cannot race each other: run them all at once
    at_once = reps if not (sc.quota_llm.limited or sc.quota_tts.limited) else 4
    with frozen_gc():
        real = asyncio.run(_wall_runs(sc, cell.config, seed, reps, scale, at_once, latency_factor))
    res = _cell_report(cell, real, pop, tols)
    res["model_reps"] = model_reps
    res["time_scale"] = scale
    res["wall_s"] = time.perf_counter() - t0
    res["overhead_share"] = floor_s * req / (scale * model_s)
    return res


def validate_wall(
    cells: Sequence[WallCell],
    *,
    reps: int = 16,
    model_reps: int = 2000,
    seed: int = 0,
    mean_tol: float = 0.02,
    p95_tol: float = 0.05,
    ttfs_tol: float = 0.05,
    overhead_target: float = 0.01,
    max_scale: float = 1.0,
    log: Callable[[str], None] | None = None,
    floor_s: float | None = None,
    latency_factor: float = 1.0,
) -> dict[str, Any]:
    """Run the cells on the wall clock and the model; the per-cell equivalence checks and
    verdicts (``pass``, ``fail``, ``inconclusive``, or ``all runs paused``, reported apart).
    ``latency_factor`` biases the real provider's latencies (tests of the check itself)."""
    if floor_s is None:
        floor_s = measure_overhead_floor()
    if log:
        log(
            f"harness overhead floor: {floor_s * 1e3:.2f} ms of real time per request "
            "beyond its latency (quota-free, loopback, provider in its own process)"
        )
    tols = {"makespan_mean": mean_tol, "makespan_p95": p95_tol, "ttfs_mean": ttfs_tol}
    out_cells = []
    for cell in cells:
        res = _run_wall_cell(
            cell, reps=reps, model_reps=model_reps, seed=seed, tols=tols, floor_s=floor_s,
            overhead_target=overhead_target, max_scale=max_scale, latency_factor=latency_factor,
        )  # fmt: skip
        out_cells.append(res)
        if log:
            _log_cell(res, log)
    verdict = _overall(out_cells)
    return {
        "overhead_floor_s": floor_s,
        "mean_tol": mean_tol,
        "p95_tol": p95_tol,
        "ttfs_tol": ttfs_tol,
        "reps": reps,
        "model_reps": model_reps,
        "seed": seed,
        "latency_factor": latency_factor,
        "cells": out_cells,
        "verdict": verdict,
        "ok": verdict == PASS,
    }


def wall_cells(quick: bool, scenarios: Sequence[str] | None = None) -> list[WallCell]:
    """The wall-clock cells (:data:`QUICK_CELLS` or :data:`FULL_CELLS`) of ``scenarios``
    (None: all); empty when none of them has a cell."""
    pool = QUICK_CELLS if quick else FULL_CELLS
    return [c for c in pool if scenarios is None or c.scenario in scenarios]


def check_wall_folder(out: Path | None, root: Path) -> None:
    """Refuse, before anything runs, a results folder the wall validation cannot write:
    :class:`ResultsError` naming ``--out`` or ``--results-root``."""
    if out is None:
        check_new_folder(root, flag="--results-root")
        return
    if out.exists() and not out.is_dir():
        raise ResultsError(f"--out {out} is a file, not a folder; name a folder")
    if in_source_tree(out):
        check_new_folder(out, flag="--out")


def wall_provenance(cells: Sequence[WallCell]) -> dict[str, Any]:
    """The provenance of the cells' scenarios (as shipped, before any quota is applied)."""
    return provenance([load_scenario(n) for n in sorted({c.scenario for c in cells})])


def write_wall_results(report: dict[str, Any], out: Path | None, root: Path) -> Path:
    """Write ``validate.json``, the model-vs-real figure and ``VALIDATE.md`` into ``out`` (or a
    new ``<time>-validate`` folder under ``root``); the folder. A folder that cannot be
    created is a :class:`ResultsError`."""
    try:
        d = out if out is not None else new_results_dir(root, "validate")
        d.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ResultsError(f"cannot write the results folder: {e.strerror or e}") from None
    write_json_atomic(d / "validate.json", report)
    figs = render_wall_figure(report, d / "model-vs-real")
    (d / "VALIDATE.md").write_text(render_wall_markdown(report, figs[0].name))
    return d


def render_wall_markdown(report: dict[str, Any], figure: str) -> str:
    """``VALIDATE.md``: provenance, floor, tolerances and verdict, then one row per cell,
    the largest mean makespan error first."""
    head = [
        "# scenebench validate (wall clock)",
        "",
        provenance_line(report["provenance"]) + ".",
        "",
        f"Harness overhead floor {report['overhead_floor_s'] * 1e3:.2f} ms per request; "
        f"{report['reps']} real runs per cell (paired with model runs on the same seeds), "
        f"model population {report['model_reps']} runs. Tolerance: mean makespan "
        f"{100 * report['mean_tol']:g}%, p95 {100 * report['p95_tol']:g}%, time to first "
        f"scene {100 * report['ttfs_tol']:g}%; a cell passes only when every 95% interval "
        "lies inside its band (docs/validation.md). Verdict: "
        f"**{report['verdict']}**.",
        "",
        f"![model vs real]({figure})",
        "",
        "| cell | time scale | real mean (s) | model mean (s) | rel. err (95% CI) | p95 err | "
        "TTFS err | 429/run real / model | ok |",
        "|" + "---|" * 9,
    ]
    worst = sorted(report["cells"], key=lambda c: -abs(c["makespan_mean_rel_err"]))
    return "\n".join(head + [_markdown_row(c) for c in worst]) + "\n"


def _markdown_row(c: dict[str, Any]) -> str:
    lo, hi = c["makespan_mean_rel_ci"]
    return (
        f"| {c['cell']} | {c['time_scale']} | {c['real_makespan_mean_s']:.1f} | "
        f"{c['model_makespan_mean_s']:.1f} | {100 * c['makespan_mean_rel_err']:+.2f}% "
        f"({100 * lo:+.2f}%, {100 * hi:+.2f}%) | {100 * c['makespan_p95_rel_err']:+.2f}%"
        f" | {100 * c['ttfs_mean_rel_err']:+.2f}% | {c['real_429_mean']:.1f} / "
        f"{c['model_429_mean']:.1f} | {c['verdict']}"
        + (f" ({c['runs_needed']} runs would decide)" if c["runs_needed"] else "")
        + " |"
    )


def wall_verdict_lines(report: dict[str, Any]) -> list[str]:
    """The cells reported apart (every run paused early), then the overall verdict."""
    apart = [
        f"reported apart (every run paused early): {c['cell']}"
        for c in report["cells"]
        if c["verdict"] == ALL_PAUSED
    ]
    return [
        *apart,
        {
            PASS: "every cell's 95% intervals lie inside the tolerance bands",
            FAIL: "SOME CELLS OUT OF TOLERANCE",
            INCONCLUSIVE: "INCONCLUSIVE: too few runs to decide some cells (see above)",
        }[report["verdict"]],
    ]


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
