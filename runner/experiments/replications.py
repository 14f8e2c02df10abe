"""The ``sim`` command: its replications' summary (shared by the browser and server paths),
the run behind it (:func:`simulate_summary`) and its text (:func:`sim_lines`). Light to
import: the model and numpy load when a function runs."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

    from sim.config import RunConfig
    from sim.scenario import Scenario
    from sim.schema import RunResult

__all__ = ["sim_lines", "simulate_summary", "summary"]


def _qoe_summary(results: Sequence[RunResult]) -> dict[str, Any]:
    from ..store.qoe_cells import qoe_summary

    return qoe_summary(results)


def _summary(results: Sequence[RunResult]) -> dict[str, Any]:
    import numpy as np

    mk = np.array([r.makespan_s for r in results])
    tf = np.array([r.ttfs_s for r in results])
    tfv = tf[~np.isnan(tf)]

    def q(x: np.ndarray[Any, Any], p: float) -> float | None:
        return float(np.percentile(x, p)) if len(x) else None

    return {
        "reps": len(results),
        "makespan_s": {"mean": float(mk.mean()), "p50": q(mk, 50), "p95": q(mk, 95)},
        "ttfs_s": {
            "mean": float(tfv.mean()) if len(tfv) else None,
            "p50": q(tfv, 50),
            "p95": q(tfv, 95),
        },
        "http_429_mean": float(np.mean([r.http_429 for r in results])),
        "retries_mean": float(np.mean([r.retries for r in results])),
        "failed_scenes_mean": float(np.mean([r.scenes_failed for r in results])),
        "p_any_failed": float(np.mean([r.scenes_failed > 0 for r in results])),
        "p_paused": float(np.mean([r.status == "paused" for r in results])),
        **_qoe_summary(results),
    }


summary = _summary


def simulate_summary(
    sc: Scenario, cfg: RunConfig, *, reps: int = 1000, seed: int = 0, engine: str = "auto"
) -> dict[str, Any]:
    """Simulate ``reps`` replications of ``cfg`` and summarise them, with the cell, the engine
    (:func:`sim.engines.pick_engine`), the CPU seconds spent and the provenance
    (``scenebench sim``)."""
    from sim.engines import pick_engine, simulate

    from ..store.stamps import provenance

    engine = pick_engine(sc, cfg, reps, engine)
    t0 = time.perf_counter()
    results = simulate(sc, cfg, reps=reps, seed=seed, engine=engine)
    elapsed = time.perf_counter() - t0
    return _summary(results) | {
        "scenario": sc.name,
        "upstream": sc.upstream,
        "mode": str(cfg.mode),
        "concurrency": results[0].concurrency,
        "tts_concurrency": results[0].tts_concurrency,
        "seed": seed,
        "tenants": cfg.tenants,
        "adaptive": str(cfg.adaptive),
        "stagger_s": cfg.stagger_s,
        "engine": engine,
        "cpu_s": elapsed,
        "provenance": provenance(sc),
    }


def _row(name: str, d: dict[str, float | None]) -> str:
    vals = ["-" if v is None else f"{v:9.2f}" for v in (d["mean"], d["p50"], d["p95"])]
    return f"{name:<22}{vals[0]:>10}{vals[1]:>10}{vals[2]:>10}"


def _pct(v: float | None) -> str:
    return "-" if v is None or math.isnan(v) else f"{100 * v:.2f}%"


def sim_lines(s: dict[str, Any], reps: int) -> list[str]:
    """The text of :func:`simulate_summary`'s summary ``s`` of ``reps`` replications."""
    from ..store.stamps import provenance_line

    return [
        provenance_line(s["provenance"]),
        f"scenario {s['scenario']}  upstream {s['upstream']}  mode {s['mode']}  concurrency "
        f"{s['concurrency']}  tts_concurrency {s['tts_concurrency']}  tenants {s['tenants']}  "
        f"reps {reps}  seed {s['seed']}  engine {s['engine']}",
        f"{'(model seconds)':<22}{'mean':>10}{'p50':>10}{'p95':>10}",
        _row("makespan", s["makespan_s"]),
        _row("time to first scene", s["ttfs_s"]),
        _row("startup delay", s["startup_s"]),
        _row("stall time", s["stall_s"]),
        _row("time to last scene", s["last_scene_s"]),
        f"stalls per run {s['stalls_mean']:.2f}  stall ratio {_pct(s['stall_ratio'])}",
        f"429s per run {s['http_429_mean']:.2f}  retries per run {s['retries_mean']:.2f}  "
        f"failed scenes per run {s['failed_scenes_mean']:.3f}  "
        f"P(any failed) {s['p_any_failed']:.3f}  P(paused) {s['p_paused']:.3f}",
        f"({s['cpu_s']:.2f} s of CPU)",
    ]
