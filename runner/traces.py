"""Request timelines in the format of ``shared/upstream-traces`` (``<case>-c<c>.json``).

LOCAL STAND-IN (branch ``conform``): a minimal version of the interface being written on main
(``Trace``, ``load_trace``, ``port_trace``, ``compare``) so that :mod:`runner.conform` and its
tests run. On merge, main's module replaces this one; :mod:`runner.conform` uses only the names
below. ``port_trace`` here runs the port with the scenario's rules as they are on this branch
(no ``[client]`` profile yet), so it reproduces upstream only where those rules agree (no
429s, no failures).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sim.scenario import Scenario

__all__ = ["Trace", "TraceRequest", "TraceSummary", "compare", "load_trace", "port_trace"]


@dataclass(frozen=True)
class TraceRequest:
    """One attempt as the provider saw it (model seconds from the run's start)."""

    step: str
    order: int
    clip: int
    attempt: int
    t_arrival_s: float
    t_end_s: float
    status: int


@dataclass(frozen=True)
class TraceSummary:
    ttfs_s: float | None
    makespan_s: float | None
    status: str | None
    failed_orders: tuple[int, ...]
    scene_order: tuple[int, ...]
    scene_ready_s: tuple[float, ...]


@dataclass(frozen=True)
class Trace:
    case: str
    concurrency: int
    tts_concurrency: int
    recorded_time_scale: float | None
    summary: TraceSummary
    requests: tuple[TraceRequest, ...]


def trace_from_dict(d: dict[str, Any]) -> Trace:
    s = d["summary"]
    return Trace(
        case=str(d.get("case", "")),
        concurrency=int(d["concurrency"]),
        tts_concurrency=int(d["tts_concurrency"]),
        recorded_time_scale=d.get("recorded_time_scale"),
        summary=TraceSummary(
            ttfs_s=s["ttfs_s"],
            makespan_s=s["makespan_s"],
            status=s["status"],
            failed_orders=tuple(s["failed_orders"]),
            scene_order=tuple(s["scene_order"]),
            scene_ready_s=tuple(s["scene_ready_s"]),
        ),
        requests=tuple(TraceRequest(**r) for r in d["requests"]),
    )


def load_trace(path: str | Path) -> Trace:
    return trace_from_dict(json.loads(Path(path).read_text(encoding="utf-8")))


def port_trace(scenario: Scenario, concurrency: int, seed: int = 0) -> Trace:
    """The Python port on the virtual clock (pipelined when c > 1, else serial)."""
    from .run import run_classroom

    mode = "pipelined" if concurrency > 1 else "serial"
    res = run_classroom(scenario, mode, concurrency, seed=seed, clock="virtual")
    ready = tuple(round(t, 6) for t in res.scene_ready_s)
    return Trace(
        case=scenario.name,
        concurrency=concurrency,
        tts_concurrency=res.tts_concurrency,
        recorded_time_scale=None,
        summary=TraceSummary(
            ttfs_s=None if math.isnan(res.ttfs_s) else ready[0] if ready else None,
            makespan_s=ready[-1] if ready else None,
            status=res.status,
            failed_orders=tuple(res.failed_orders),
            scene_order=tuple(res.scene_order),
            scene_ready_s=ready,
        ),
        requests=tuple(
            TraceRequest(r.step, r.order, r.clip, r.attempt, r.t_arrival_s, r.t_end_s, r.status)
            for r in res.requests_log
        ),
    )


def _key(r: TraceRequest) -> tuple[str, int, int, int]:
    return (r.step, r.order, r.clip, r.attempt)


def _near(a: float | None, b: float | None, tol_s: float) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return abs(a - b) <= tol_s


def compare(ref: Trace, got: Trace, tol_s: float = 1.0) -> list[str]:
    """Human-readable differences (empty: equal within ``tol_s`` model seconds)."""
    out: list[str] = []
    rs, gs = ref.summary, got.summary
    for name in ("status", "failed_orders", "scene_order"):
        if getattr(rs, name) != getattr(gs, name):
            out.append(f"{name}: {getattr(rs, name)!r} != {getattr(gs, name)!r}")
    for name in ("ttfs_s", "makespan_s"):
        if not _near(getattr(rs, name), getattr(gs, name), tol_s):
            out.append(f"{name}: {getattr(rs, name)} != {getattr(gs, name)}")
    if len(rs.scene_ready_s) == len(gs.scene_ready_s):
        for i, (a, b) in enumerate(zip(rs.scene_ready_s, gs.scene_ready_s, strict=True)):
            if not _near(a, b, tol_s):
                out.append(f"scene_ready_s[{i}]: {a} != {b}")
    mine = {_key(r): r for r in got.requests}
    theirs = {_key(r): r for r in ref.requests}
    for k, r in theirs.items():
        g = mine.get(k)
        if g is None:
            out.append(f"request {k}: missing (ref status {r.status} at {r.t_arrival_s:.3f} s)")
            continue
        if g.status != r.status:
            out.append(f"request {k}: status {r.status} != {g.status}")
        if not _near(r.t_arrival_s, g.t_arrival_s, tol_s):
            out.append(f"request {k}: arrival {r.t_arrival_s:.3f} != {g.t_arrival_s:.3f} s")
    out.extend(f"request {k}: extra (status {mine[k].status})" for k in mine if k not in theirs)
    return out
