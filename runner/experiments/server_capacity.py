"""The server path's capacity experiment (``scenebench capacity``), as data.

* :func:`sweep`: one cell of server jobs (model) per (c, arrival rate): p95/p50 job latency,
  sustained jobs per hour, failed-job share, 429s, key use;
* :func:`saturation_of` / :func:`mg1_line`: the hockey stick's knee and its M/G/1-style line
  (:mod:`sim.capacity`);
* :func:`tenants_grid`: per-classroom vs key-wide gates, several classrooms on one key;
* :func:`recommend_line`: the server path's recommendation for one key;
* :func:`run_capacity`: all of it for one scenario and key, as a :class:`CapacityData`
  (rendered by :mod:`runner.report.server_capacity`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from sim.capacity import KeyLoad, key_load, mg1_line, saturation_of
from sim.jobs import server_scenario, simulate_jobs
from sim.jobs import simulate_keygate_tenants as keygate_tenants
from sim.scenario import Scenario

__all__ = [
    "FRACTIONS",
    "CapacityData",
    "mg1_line",
    "recommend_line",
    "run_capacity",
    "saturation_of",
    "sweep",
    "tenants_grid",
]

FRACTIONS = (0.1, 0.25, 0.4, 0.55, 0.7, 0.85, 1.0, 1.15)  # of the closed-form saturation


def sweep(
    sc: Scenario,
    cs: Sequence[int],
    per_hours: Sequence[float],
    *,
    jobs: int,
    seed: int,
    key_gate: bool = True,
    mode: str = "pipelined",
) -> list[dict[str, Any]]:
    """One server cell per (c, arrival rate): the summary's numbers, flat."""
    rows = []
    for c in cs:
        for lam in per_hours:
            run = simulate_jobs(
                sc, mode, c, jobs=jobs, arrival_per_hour=lam, seed=seed, key_gate=key_gate
            )
            s = run.summary()
            rows.append(
                {
                    "c": c,
                    "per_hour": lam,
                    "p95_s": s["job_latency_s"]["p95"],
                    "p50_s": s["job_latency_s"]["p50"],
                    "jobs_per_hour": s["jobs_per_hour"],
                    "failed_share": s["failed_jobs"] / s["jobs"],
                    "http_429": s["http_429"],
                    "utilisation": s["key"]["llm"]["utilisation"],
                }
            )
    return rows


def tenants_grid(
    sc: Scenario, inflight: int, tenants: int, cs: Sequence[int], reps: int, seed: int
) -> list[dict[str, Any]]:
    """P(any failed scene) per classroom and mean makespan: serial, the per-classroom ``gate``
    and the key-wide gate, ``tenants`` classrooms at once on a key of ``inflight``."""
    from sim.config import RunConfig
    from sim.engines import simulate

    s = sc.with_quota(llm_inflight=inflight, tts_inflight=inflight)

    def cell(rs: Sequence[Any]) -> tuple[float, float]:
        return (
            float(np.mean([r.scenes_failed > 0 for r in rs])),
            float(np.mean([r.makespan_s for r in rs])),
        )

    serial_cfg = RunConfig.of("serial", 1, tenants=tenants)
    serial = cell(simulate(s, serial_cfg, reps=reps, seed=seed, engine="simpy"))
    rows = []
    for c in cs:
        cfg = RunConfig.of("pipelined", c, tenants=tenants, adaptive="gate")
        per = cell(simulate(s, cfg, reps=reps, seed=seed, engine="simpy"))
        key = cell(
            [
                x
                for r in range(reps)
                for x in keygate_tenants(s, "pipelined", c, tenants, seed=seed, run_id=r)
            ]
        )
        rows.append({"c": c, "serial": serial, "gate": per, "key_gate": key})
    return rows


def recommend_line(
    sc: Scenario, inflight: int, *, jobs: int, seed: int, cs: Sequence[int] = (1, 2, 3, 5)
) -> tuple[str, list[dict[str, Any]]]:
    """The server path's recommendation for a key of ``inflight`` slots: the ``c`` with the
    lowest p95 job latency at half the key's capacity, among those whose failed-job share
    is within 1 point of serial's, with the key-wide gate."""
    s = sc.with_quota(llm_inflight=inflight, tts_inflight=inflight)
    load = key_load(s, inflight, inflight)
    lam = 0.5 * load.saturation_per_hour if math.isfinite(load.saturation_per_hour) else 20.0
    rows = sweep(s, cs, [lam], jobs=jobs, seed=seed)
    serial = next(r for r in rows if r["c"] == min(cs))
    ok = [r for r in rows if r["failed_share"] <= serial["failed_share"] + 0.01]
    best = min(ok, key=lambda r: (r["p95_s"], r["c"]))
    key = "unlimited" if inflight == 0 else f"{inflight} in flight"
    sat = load.saturation_per_hour
    sat_s = "never (unlimited)" if not math.isfinite(sat) else f"{sat:.1f} jobs/h"
    line = (
        f"- **server path, key {key}**: PARALLEL_SCENE_CONCURRENCY = {best['c']} with the "
        f"key-wide gate (p95 job latency {best['p95_s']:.0f} s vs {serial['p95_s']:.0f} s serial "
        f"at {lam:.1f} jobs/h, failed jobs {best['failed_share']:.1%} vs "
        f"{serial['failed_share']:.1%}); the key saturates at {sat_s} whatever c is — above "
        f"that buy in-flight slots (K ≥ λ·{load.work_llm_s:.0f} s / 0.7), not a different c"
    )
    return line, rows


@dataclass(frozen=True)
class CapacityData:
    """What :func:`run_capacity` measured: the keyed scenario, its closed-form load, the
    (c, rate) rows, one recommendation line per quota and the tenants grid."""

    scenario: Scenario
    load: KeyLoad
    key_inflight: int
    rows: list[dict[str, Any]]
    lines: list[str]
    grid: list[dict[str, Any]]


def run_capacity(
    browser: Scenario,
    key_inflight: int,
    cs: Sequence[int],
    quotas: Sequence[int],
    *,
    jobs: int,
    seed: int,
    tenant_reps: int,
) -> CapacityData:
    """For c in ``cs``: p95 job latency and sustained jobs per hour vs arrival rate on one
    key of ``key_inflight`` slots, plus a recommendation line per quota and the tenants grid."""
    sc = server_scenario(browser)
    s = sc.with_quota(llm_inflight=key_inflight, tts_inflight=key_inflight)
    load = key_load(s, key_inflight, key_inflight)
    sat = load.saturation_per_hour if math.isfinite(load.saturation_per_hour) else 60.0
    rates = [round(f * sat, 3) for f in FRACTIONS]
    rows = sweep(s, cs, rates, jobs=jobs, seed=seed)
    lines = [recommend_line(sc, q, jobs=jobs, seed=seed)[0] for q in quotas]
    grid = tenants_grid(browser, 3, 3, (2, 3, 4, 5), tenant_reps, seed) if tenant_reps else []
    return CapacityData(s, load, key_inflight, rows, lines, grid)
