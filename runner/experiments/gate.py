"""``scenebench gate``: a fixed, seeded check against a committed baseline.

Model part (deterministic: tight tolerance): the default scenario, hybrid and
pipelined at c = 2, 3, 5 on an unlimited, a 3-in-flight and a 5-in-flight key,
500 runs per cell: paired speedup, mean time to first scene, 429s per run and
P(any failed scene). Real part: the same key cells through the real pipeline
under the virtual clock (20 runs each; must equal the model exactly, and their
speedups are gated like the model's), plus a small wall-clock check (6
classrooms on sockets) whose paired relative error to the model must have a 95%
interval that lies inside ±5% (the equivalence rule of ``validate``).
"""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from sim.config import RunConfig
from sim.engines import simulate
from sim.errors import UserError
from sim.scenario import load_scenario
from sim.schema import runs_frame

from ..store.cells import cell_table
from ..store.counts import FAILURE_BUDGET_PP
from ..store.stamps import dumps, provenance, provenance_line
from ..world.run import run
from .sweep import apply_quota, write_json_atomic
from .validate import PASS, WallCell, equivalence, first_divergence, validate_wall

__all__ = [
    "GATE_VERSION",
    "Metric",
    "UndefinedMetrics",
    "compare",
    "load_baseline",
    "measure",
    "render_table",
    "report_json",
    "report_lines",
    "save_baseline",
    "write_junit",
]

GATE_VERSION = 2  # 2: speedups and TTFS only for cells whose runs count; undefined = failure
SEED = 20261124
MODEL_CELLS = [(q, m, c) for q in (0, 3, 5) for m in ("hybrid", "pipelined") for c in (2, 3, 5)]
REAL_CELLS = [(0, "pipelined", 3), (0, "hybrid", 3), (3, "pipelined", 2), (5, "pipelined", 5)]
MODEL_REPS = 500
REAL_REPS = 20
# tolerances: relative for the deterministic model part, absolute for probabilities
TOL = {
    "speedup": 0.005,
    "ttfs_mean_s": 0.005,
    "http_429_mean": 0.01,
    "p_any_failed": 0.005,
    "real_speedup": 0.005,
    "exact_mismatches": 0.0,
    "wall_rel_err": 0.05,
}


@dataclass(frozen=True)
class Metric:
    name: str
    baseline: float
    now: float
    tolerance: float
    kind: str  # "rel", "abs" or "interval"
    ok: bool
    note: str = ""

    @property
    def delta(self) -> float:
        return self.now - self.baseline

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "baseline": self.baseline,
            "now": self.now,
            "delta": self.delta,
            "tolerance": self.tolerance,
            "kind": self.kind,
            "ok": self.ok,
            "note": self.note,
        }


def _undefined(x: Any) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def _model_cells() -> pd.DataFrame:
    sc = load_scenario("default")
    frames = []
    for q in sorted({q for q, _, _ in MODEL_CELLS}):
        s = apply_quota(sc, q)
        cells = [("serial", 1)] + [(m, c) for qq, m, c in MODEL_CELLS if qq == q]
        for m, c in cells:
            cfg = RunConfig.of(m, c)
            df = runs_frame(simulate(s, cfg, reps=MODEL_REPS, seed=SEED, engine="simpy"))
            df["backend"], df["quota"] = "sim", q
            frames.append(df)
    return cell_table(pd.concat(frames, ignore_index=True))


def _real_cells() -> tuple[pd.DataFrame, int, list[str]]:
    sc = load_scenario("default")
    frames: list[pd.DataFrame] = []
    mismatches = 0
    notes: list[str] = []
    for q in sorted({q for q, _, _ in REAL_CELLS}):
        s = apply_quota(sc, q)
        for m, c in [("serial", 1)] + [(m, c) for qq, m, c in REAL_CELLS if qq == q]:
            results = []
            for r in range(REAL_REPS):
                cfg = RunConfig.of(m, c, records=True)
                [real] = run(s, cfg, clock="virtual", seed=SEED, run_id=r)
                [model] = simulate(s, cfg, seed=SEED, run_id=r)
                diff = first_divergence(real, model)
                if diff is not None:
                    mismatches += 1
                    if len(notes) < 3:
                        notes.append(f"quota {q} {m} c={c} run {r}: {diff}")
                results.append(real)
            df = runs_frame(results).drop(columns=["scene_order", "scene_ready_s", "failed_orders"])
            df["backend"], df["quota"] = "real", q
            frames.append(df)
    return cell_table(pd.concat(frames, ignore_index=True)), mismatches, notes


def measure(*, wall: bool = True) -> dict[str, Any]:
    """Run the gate's fixed grid; a flat dict of metric name -> value (plus notes)."""
    out: dict[str, Any] = {
        "gate_version": GATE_VERSION,
        "seed": SEED,
        "provenance": provenance(load_scenario("default")),
        "metrics": {},
        "notes": [],
    }
    cells = _model_cells()
    for q, m, c in MODEL_CELLS:
        row = cells[(cells["quota"] == q) & (cells["mode"] == m) & (cells["concurrency"] == c)]
        r = row.iloc[0]
        key = f"model q={q} {m} c={c}"
        # the shared rule (runner.store.counts): where runs fail too often, the speedup and the time
        # to first scene describe the few runs that completed; gate P(any failed) instead
        if _counts(r):
            out["metrics"][f"{key} speedup"] = float(r["speedup"])
            out["metrics"][f"{key} ttfs_mean_s"] = float(r["ttfs_mean_s"])
        else:
            out["notes"].append(_not_gated(key, r))
        out["metrics"][f"{key} http_429_mean"] = float(r["http_429_mean"])
        out["metrics"][f"{key} p_any_failed"] = float(r["p_any_failed"])
    real, mismatches, notes = _real_cells()
    for q, m, c in REAL_CELLS:
        r = real[(real["quota"] == q) & (real["mode"] == m) & (real["concurrency"] == c)].iloc[0]
        if _counts(r):
            out["metrics"][f"real q={q} {m} c={c} real_speedup"] = float(r["speedup"])
        else:
            out["notes"].append(_not_gated(f"real q={q} {m} c={c}", r))
    out["metrics"]["real vs model exact_mismatches"] = float(mismatches)
    out["notes"] += notes
    out["wall_skipped"] = not wall
    if wall:
        rep = validate_wall(
            [WallCell.of("default", 0, "pipelined", 3)], reps=6, model_reps=500, seed=SEED
        )
        cell = rep["cells"][0]
        out["metrics"]["wall pipelined c=3 wall_rel_err"] = float(cell["makespan_mean_rel_err"])
        out["wall_ci"] = list(cell["makespan_mean_rel_ci"])
        out["notes"].append(
            f"wall: overhead floor {rep['overhead_floor_s'] * 1e3:.2f} ms, "
            f"time scale {cell['time_scale']}"
        )
    return out


def _counts(r: Any) -> bool:
    flag = r.get("fails_too_often", True)
    return not (flag is None or flag != flag or bool(flag))


def _not_gated(key: str, r: Any) -> str:
    instead = (
        "its P(any failed) and 429s are gated instead"
        if key.startswith("model")
        else "the exact comparison with the model still covers it"
    )
    return (
        f"{key}: speedup not gated, its runs fail too often (P(any failed) "
        f"{100 * float(r['p_any_failed']):.1f}% > serial's "
        f"{100 * float(r['p_any_failed_serial']):.1f}% + {FAILURE_BUDGET_PP:g} pp); {instead}"
    )


def undefined_metrics(measured: dict[str, Any]) -> list[str]:
    """Names of the metrics that are undefined (NaN or null): a baseline must not hold them."""
    return sorted(n for n, v in measured["metrics"].items() if _undefined(v))


def _kind(name: str) -> str:
    suffix = name.rsplit(" ", 1)[-1]
    return {"p_any_failed": "abs", "exact_mismatches": "abs", "wall_rel_err": "interval"}.get(
        suffix, "rel"
    )


def compare(baseline: dict[str, Any], now: dict[str, Any]) -> list[Metric]:
    """Every metric of ``now`` against the baseline, with its tolerance and verdict."""
    out = [_compare_one(name, v, baseline, now) for name, v in now["metrics"].items()]
    missing = set(baseline.get("metrics", {})) - set(now["metrics"])
    if now.get("wall_skipped"):
        missing = {n for n in missing if _kind(n) != "interval"}
    for name in sorted(missing):
        b = baseline["metrics"][name]
        out.append(
            Metric(
                name,
                math.nan if _undefined(b) else float(b),
                math.nan,
                0.0,
                "rel",
                False,
                "missing now (not measured: a cell whose runs now fail too often has no "
                "speedup metric)",
            )
        )
    return out


def _compare_one(name: str, v: Any, baseline: dict[str, Any], now: dict[str, Any]) -> Metric:
    """One metric measured now against its baseline value (or, for the wall-clock error,
    its interval against the band)."""
    tol = TOL[name.rsplit(" ", 1)[-1]]
    kind = _kind(name)
    b = baseline.get("metrics", {}).get(name)
    if _undefined(v):  # a metric that cannot be measured cannot pass
        b_now = math.nan if _undefined(b) else float(b)
        return Metric(
            name, b_now, math.nan, tol, kind, False, "undefined now (NaN): failed to measure"
        )
    v = float(v)
    if kind == "interval":  # a wall-clock error: judged by its interval, not the baseline
        lo, hi = now.get("wall_ci", [math.nan, math.nan])
        verdict = equivalence((lo, hi), tol)  # inside the band: an interval, not a point
        b_f = float(b) if b is not None else math.nan
        note = f"95% CI {100 * lo:+.2f}%..{100 * hi:+.2f}%: {verdict}"
        return Metric(name, b_f, v, tol, kind, verdict == PASS, note)
    if name not in baseline.get("metrics", {}):
        return Metric(name, math.nan, v, tol, kind, False, "not in the baseline")
    if _undefined(b):
        return Metric(
            name, math.nan, v, tol, kind, False,
            "undefined in the baseline (null/NaN): it can never catch a regression; "
            "refresh the baseline with --update",
        )  # fmt: skip
    b = float(b)
    bound = tol * max(abs(b), 1e-9) if kind == "rel" else tol
    return Metric(name, float(b), float(v), tol, kind, bool(abs(v - b) <= bound))


def render_table(metrics: list[Metric], *, only_failed: bool = False) -> str:
    rows = [m for m in metrics if not (only_failed and m.ok)]
    w = max([len(m.name) for m in rows] + [6])
    head = f"{'metric':<{w}}  {'baseline':>10}  {'now':>10}  {'delta':>10}  {'tolerance':>12}  ok"
    lines = [head, "-" * len(head)]

    def num(x: float, sign: str = "") -> str:
        return f"{'undefined':>10}" if math.isnan(x) else f"{x:>{sign}10.4f}"

    for m in rows:
        tol = f"±{100 * m.tolerance:g}%" if m.kind in ("rel", "interval") else f"±{m.tolerance:g}"
        lines.append(
            f"{m.name:<{w}}  {num(m.baseline)}  {num(m.now)}  {num(m.delta, '+')}  "
            f"{tol:>12}  {'yes' if m.ok else 'NO'}" + (f"  ({m.note})" if m.note else "")
        )
    return "\n".join(lines)


def write_junit(metrics: list[Metric], path: Path) -> None:
    suite = ET.Element(
        "testsuite",
        name="scenebench-gate",
        tests=str(len(metrics)),
        failures=str(sum(not m.ok for m in metrics)),
    )
    for m in metrics:
        case = ET.SubElement(suite, "testcase", classname="gate", name=m.name)
        if not m.ok:
            f = ET.SubElement(
                case,
                "failure",
                message=f"{m.name}: baseline {m.baseline:.6g}, "
                f"now {m.now:.6g}, tolerance {m.tolerance:g} ({m.kind})",
            )
            f.text = m.note
    ET.ElementTree(suite).write(path, encoding="unicode", xml_declaration=True)


class UndefinedMetrics(ValueError):
    """A measurement with undefined (NaN) metrics: it cannot become a baseline (exit 1, not a
    user error: the measurement failed)."""


def save_baseline(now: dict[str, Any], path: Path) -> None:
    bad = undefined_metrics(now)
    if bad:
        raise UndefinedMetrics(
            f"gate: {len(bad)} metric(s) undefined (NaN), a baseline cannot hold them: "
            f"{', '.join(bad[:3])}{' …' if len(bad) > 3 else ''}"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, json.loads(dumps(now)))


def load_baseline(path: Path) -> dict[str, Any]:
    """The committed baseline at ``path``; a :class:`UserError` naming ``--baseline`` if it is
    missing, not JSON, not a baseline, or of another gate version."""
    if not path.is_file():
        raise UserError(f"--baseline {path} does not exist; create it with --update")
    try:
        baseline = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"--baseline {path} is not JSON ({e})") from None
    if not isinstance(baseline, dict):
        raise UserError(f"--baseline {path} is not a gate baseline")
    if baseline.get("gate_version") != GATE_VERSION:
        raise UserError(
            f"--baseline {path} has gate_version {baseline.get('gate_version')!r}; this gate "
            f"writes {GATE_VERSION} (refresh it with --update)"
        )
    return baseline


def report_json(metrics: list[Metric], now: dict[str, Any]) -> dict[str, Any]:
    """``scenebench gate --json``: the verdict, provenance, every metric and the notes."""
    return {
        "ok": all(m.ok for m in metrics),
        "provenance": now.get("provenance"),
        "metrics": [m.to_json() for m in metrics],
        "notes": now["notes"],
    }


def report_lines(metrics: list[Metric], now: dict[str, Any]) -> list[str]:
    """``scenebench gate``'s text: provenance, the table (only the failed metrics when some
    failed), the notes and a one-line tally."""
    failed = [m for m in metrics if not m.ok]
    undefined = sum("undefined" in m.note for m in metrics)
    return [
        provenance_line(now["provenance"]),
        render_table(metrics, only_failed=bool(failed)),
        *(f"note: {n}" for n in now["notes"]),
        f"gate: {len(metrics) - len(failed)} metrics within tolerance, {len(failed)} failed"
        + (f" ({undefined} undefined: failures to measure)" if undefined else ""),
    ]
