"""Request timelines ("traces") of one classroom run, and their comparison.

The format is that of the recorded upstream traces (``shared/upstream-traces``):
every attempt the provider saw (step, outline order, clip, attempt, arrival and end
in model seconds, status) and a summary (time to first scene, makespan, final
status, failed outlines, scene order and ready times). :func:`compare` is the
conformance rule: the same requests with the same statuses, the same final status,
failed outlines and scene order, and times within a tolerance in model seconds.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sim.scenario import Scenario
from sim.schema import RunResult

__all__ = [
    "Request",
    "Trace",
    "TraceSummary",
    "compare",
    "load_trace",
    "port_trace",
    "trace_from_json",
    "trace_from_result",
]


@dataclass(frozen=True)
class Request:
    step: str
    order: int
    clip: int
    attempt: int
    t_arrival_s: float
    t_end_s: float
    status: int

    @property
    def ident(self) -> tuple[str, int, int, int]:
        return (self.step, self.order, self.clip, self.attempt)


@dataclass(frozen=True)
class TraceSummary:
    ttfs_s: float | None
    makespan_s: float | None
    status: str
    failed_orders: tuple[int, ...]
    scene_order: tuple[int, ...]
    scene_ready_s: tuple[float, ...]


@dataclass(frozen=True)
class Trace:
    """One run's requests and summary; times in model seconds (``None``: never)."""

    requests: tuple[Request, ...]
    status: str
    failed_orders: tuple[int, ...]
    scene_order: tuple[int, ...]
    scene_ready_s: tuple[float, ...]
    ttfs_s: float | None = None
    makespan_s: float | None = None
    concurrency: int = 0
    case: str = ""
    tts_concurrency: int = 1
    recorded_time_scale: float | None = None

    @property
    def summary(self) -> TraceSummary:
        return TraceSummary(
            self.ttfs_s,
            self.makespan_s,
            self.status,
            self.failed_orders,
            self.scene_order,
            self.scene_ready_s,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "case": self.case,
            "concurrency": self.concurrency,
            "tts_concurrency": self.tts_concurrency,
            "recorded_time_scale": self.recorded_time_scale,
            "summary": {
                "ttfs_s": self.ttfs_s,
                "makespan_s": self.makespan_s,
                "status": self.status,
                "failed_orders": list(self.failed_orders),
                "scene_order": list(self.scene_order),
                "scene_ready_s": list(self.scene_ready_s),
            },
            "requests": [r.__dict__ for r in self.requests],
        }


def _opt(v: Any) -> float | None:
    return None if v is None else float(v)


def trace_from_json(d: dict[str, Any]) -> Trace:
    s = d["summary"]
    reqs = tuple(
        Request(
            str(r["step"]),
            int(r["order"]),
            int(r["clip"]),
            int(r["attempt"]),
            float(r["t_arrival_s"]),
            float(r["t_end_s"]),
            int(r["status"]),
        )
        for r in d["requests"]
    )
    return Trace(
        requests=reqs,
        status=str(s["status"]),
        failed_orders=tuple(int(x) for x in s["failed_orders"]),
        scene_order=tuple(int(x) for x in s["scene_order"]),
        scene_ready_s=tuple(float(x) for x in s["scene_ready_s"]),
        ttfs_s=_opt(s.get("ttfs_s")),
        makespan_s=_opt(s.get("makespan_s")),
        concurrency=int(d.get("concurrency", 0)),
        case=str(d.get("case", "")),
        tts_concurrency=int(d.get("tts_concurrency", 1)),
        recorded_time_scale=_opt(d.get("recorded_time_scale")),
    )


def load_trace(path: str | Path) -> Trace:
    """Read a trace JSON file (the recorded upstream format)."""
    return trace_from_json(json.loads(Path(path).read_text(encoding="utf-8")))


def trace_from_result(res: RunResult, case: str = "") -> Trace:
    """The trace of a run whose result carries its request log (``records=True``)."""
    reqs = tuple(
        Request(q.step, q.order, q.clip, q.attempt, q.t_arrival_s, q.t_end_s, q.status)
        for q in sorted(res.requests_log, key=lambda q: (q.t_arrival_s, q.t_start_s))
    )
    return Trace(
        requests=reqs,
        status=res.status,
        failed_orders=res.failed_orders,
        scene_order=res.scene_order,
        scene_ready_s=res.scene_ready_s,
        ttfs_s=None if math.isnan(res.ttfs_s) else res.ttfs_s,
        makespan_s=res.makespan_s if res.scenes_ok else None,
        concurrency=res.concurrency,
        case=case,
        tts_concurrency=res.tts_concurrency,
    )


def port_trace(scenario: Scenario, concurrency: int, seed: int = 0) -> Trace:
    """The Python port on the virtual clock, pipelined (serial when ``c`` <= 1 anyway),
    under the scenario's upstream profile."""
    from sim.config import RunConfig

    from ..world.run import run

    cfg = RunConfig.of("pipelined", concurrency, records=True)
    [res] = run(scenario, cfg, clock="virtual", seed=seed)
    return trace_from_result(res, case=scenario.name)


def _close(a: float | None, b: float | None, tol_s: float, rel: float = 0.0) -> bool:
    if a is None or b is None:
        return True  # one side does not define it (e.g. a run that added no scene)
    return abs(a - b) <= tol_s + rel * abs(a)


def _compare_requests(ref: Trace, got: Trace, tol_s: float, rel: float) -> list[str]:
    out: list[str] = []
    mine = {r.ident: r for r in got.requests}
    theirs = {r.ident: r for r in ref.requests}
    for ident in sorted(theirs.keys() - mine.keys()):
        out.append(f"missing request {ident} (status {theirs[ident].status})")
    for ident in sorted(mine.keys() - theirs.keys()):
        out.append(f"extra request {ident} (status {mine[ident].status})")
    for ident in sorted(theirs.keys() & mine.keys()):
        a, b = theirs[ident], mine[ident]
        if a.status != b.status:
            out.append(f"request {ident}: status {b.status}, expected {a.status}")
        for name in ("t_arrival_s", "t_end_s"):
            ta, tb = getattr(a, name), getattr(b, name)
            if not _close(ta, tb, tol_s, rel):
                out.append(f"request {ident}: {name} {tb:.3f}, expected {ta:.3f}")
    return out


def compare(ref: Trace, got: Trace, tol_s: float = 1.0, rel: float = 0.0) -> list[str]:
    """Differences of ``got`` from the reference ``ref`` (empty: they conform). Times agree
    when within ``tol_s`` model seconds plus ``rel`` of the reference time (a wall-clock
    harness adds a little per hop, so long timelines drift)."""
    out = _compare_requests(ref, got, tol_s, rel)
    for name in ("status", "failed_orders", "scene_order"):
        if getattr(ref, name) != getattr(got, name):
            out.append(f"{name}: {getattr(got, name)!r}, expected {getattr(ref, name)!r}")
    if len(ref.scene_ready_s) == len(got.scene_ready_s):
        for i, (a, b) in enumerate(zip(ref.scene_ready_s, got.scene_ready_s, strict=True)):
            if not _close(a, b, tol_s, rel):
                out.append(f"scene {i} ready at {b:.3f}, expected {a:.3f}")
    for name in ("ttfs_s", "makespan_s"):
        a, b = getattr(ref, name), getattr(got, name)
        if not _close(a, b, tol_s, rel):
            out.append(f"{name}: {b:.3f}, expected {a:.3f}")
    return out
