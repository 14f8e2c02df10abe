"""The command line of runs sweeps: ``scenebench sweep --upstream runs`` and its flags,
and the two-knob lines of ``sweep`` and ``recommend`` on a runs folder.

``--loads`` (runs arriving per hour), ``--max-concurrent`` (values of
``OPENMAIC_GENERATION_RUN_MAX_CONCURRENT``) and ``--runs-per-deployment`` apply to runs sweeps
only; ``--quotas``, ``--concurrency``, ``--reps`` (deployments per cell), ``--seed`` and
``--quick`` mean what they mean for any sweep.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sim.errors import UserError

__all__ = [
    "RUNS",
    "add_runs_flags",
    "is_runs_sweep",
    "print_runs_recommendation",
    "runs_lines",
    "runs_outcome",
    "runs_spec_of",
]

RUNS = "runs"


def _float_list(name: str) -> Callable[[str], list[float]]:
    def f(s: str) -> list[float]:
        out = []
        for x in (x.strip() for x in s.split(",")):
            if not x:
                continue
            try:
                v = float(x)
            except ValueError:
                v = math.nan
            if not (v > 0 and math.isfinite(v)):
                raise argparse.ArgumentTypeError(
                    f"{name} must be a comma list of numbers > 0; got {x!r}"
                )
            out.append(v)
        if not out:
            raise argparse.ArgumentTypeError(f"{name} must name at least one value")
        return out

    return f


def _int_list(name: str, lo: int, hi: int) -> Callable[[str], list[int]]:
    def f(s: str) -> list[int]:
        out = []
        for x in (x.strip() for x in s.split(",")):
            if not x:
                continue
            if not x.isdigit() or not lo <= int(x) <= hi:
                raise argparse.ArgumentTypeError(
                    f"{name} must be a comma list of integers in {lo}..{hi}; got {x!r}"
                )
            out.append(int(x))
        if not out:
            raise argparse.ArgumentTypeError(f"{name} must name at least one value")
        return out

    return f


def add_runs_flags(w: argparse.ArgumentParser) -> None:
    """``sweep``'s flags for ``--upstream runs``."""
    w.add_argument(
        "--loads",
        type=_float_list("--loads"),
        default=None,
        help="with --upstream runs: runs arriving per hour, comma list (default 5,10,20; quick 10)",
    )
    w.add_argument(
        "--max-concurrent",
        type=_int_list("--max-concurrent", 1, 64),
        default=None,
        help="with --upstream runs: OPENMAIC_GENERATION_RUN_MAX_CONCURRENT values, comma "
        "list (default 1,2,4,8; quick 2,4; upstream's 4 is always added)",
    )
    w.add_argument(
        "--runs-per-deployment",
        type=lambda x: _int_list("--runs-per-deployment", 1, 10_000)(x)[0],
        metavar="N",
        default=None,
        help="with --upstream runs: requested runs per simulated deployment (default 20; quick 8)",
    )
    from .runs_sim import add_gate_order

    add_gate_order(w, axis=True)


def is_runs_sweep(a: argparse.Namespace) -> bool:
    """``--upstream runs`` (alone); runs-only flags without it are a usage error."""
    ups = list(a.upstream or [])
    if RUNS in ups and len(ups) > 1:
        raise UserError("--upstream runs: a runs sweep runs alone (no other profile beside it)")
    runs = ups == [RUNS]
    if not runs:
        for flag, v in (
            ("--loads", a.loads),
            ("--max-concurrent", a.max_concurrent),
            ("--runs-per-deployment", a.runs_per_deployment),
            ("--gate-order", a.gate_order),
        ):
            if v is not None:
                raise UserError(f"{flag} applies to runs sweeps only (--upstream runs)")
    return runs


def runs_spec_of(a: argparse.Namespace) -> Any:
    """The runs grid the flags ask for."""
    from ..experiments.runs_sweep import runs_spec
    from .runs_sim import gate_orders_of

    if a.backend not in ("sim", "both") or a.tenants or a.real_reps:
        raise UserError("--upstream runs: runs sweeps run on the model (--backend sim), one key")
    return runs_spec(
        quick=a.quick,
        scenarios=a.scenario,
        seed=a.seed,
        replicates=a.reps,
        quotas=a.quotas,
        concurrencies=a.concurrency,
        loads_per_h=a.loads,
        max_concurrents=a.max_concurrent,
        adaptives=a.adaptive or ("off",),
        gate_orders=gate_orders_of(a, a.adaptive or ("off",)),
        runs=a.runs_per_deployment,
    )


def runs_lines(rec: dict[str, Any]) -> list[str]:
    """The two-knob answer in plain lines (``sweep`` and ``recommend``)."""
    out = [
        f"recommended default: PARALLEL_SCENE_CONCURRENCY = {rec['recommended']}, "
        f"OPENMAIC_GENERATION_RUN_MAX_CONCURRENT = {rec['recommended_max_concurrent']}"
    ]
    for name, per in rec["scenarios"].items():
        for pol, v in per.items():
            d = v["default"]
            out.append(
                f"  {name}, policy {pol}: default c = {d['concurrency']}, max concurrent runs "
                f"= {d['max_concurrent']}"
            )
            order = sorted(
                v["by_profile"],
                key=lambda e: (e["preset"], e["quota"] == 0, e["quota"], e["load_per_h"]),
            )  # as the report's table: in-flight keys ascending, unlimited, then presets
            for e in order:
                p = e["pick"]
                ci = (
                    f" (paired Δ p95 vs c = 1, 4 runs: {p['ttfs_p95_delta_s']:+.0f} s, 95% CI "
                    f"{p['ttfs_p95_delta_lo_s']:+.0f} to {p['ttfs_p95_delta_hi_s']:+.0f})"
                    if p["ttfs_p95_delta_s"] is not None and not math.isnan(p["ttfs_p95_delta_s"])
                    else ""
                )
                out.append(
                    f"    {e['sentence']}; first scene p95 {p['ttfs_p95_s']:.0f} s{ci}, "
                    f"P(paused) {100 * p['p_paused']:.1f}%, refused {100 * p['p_refused']:.1f}%"
                )
    return out


def print_runs_recommendation(rec: dict[str, Any]) -> None:
    for line in runs_lines(rec):
        print(line)


def runs_outcome(folder: Path) -> dict[str, Any] | None:
    """A finished runs sweep's recommendation.json, or None (another kind, or none yet)."""
    p = folder / "recommendation.json"
    if not p.is_file():
        return None
    rec: dict[str, Any] = json.loads(p.read_text(encoding="utf-8"))
    return rec if rec.get("kind") == RUNS else None
