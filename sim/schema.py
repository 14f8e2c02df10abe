"""The tidy result schema shared by the model and the real runs.

One :class:`RunResult` per classroom run (a flat summary plus per-scene times),
optionally with its per-request :class:`RequestRecord` rows as the provider saw
them. :func:`runs_frame` and :func:`requests_frame` turn lists of results into
pandas tables, so one analysis reads both worlds.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import pandas as pd

__all__ = [
    "SCHEMA_VERSION",
    "RequestRecord",
    "RunResult",
    "records_from_log",
    "requests_frame",
    "runs_frame",
    "schema_upgrade_reason",
]

SCHEMA_VERSION = 3  # 2: the upstream profile (``upstream``); status first_scene_failed
# 3: what the learner feels (startup_s, stall_s, stalls, stall_ratio, last_scene_s, playback_s)
_UPGRADES = {
    1: "made before upstream profiles: it modelled route retries without the foreground "
    "first scene",
    2: "made before the learner's metrics (startup delay, stalls): it has no playback",
}
STEP_NAMES = ("content", "actions", "tts")


def schema_upgrade_reason(old: object) -> str:
    """Why a folder of schema version ``old`` cannot be read (one clause, or "")."""
    if isinstance(old, int) and old < SCHEMA_VERSION:
        return f" ({_UPGRADES.get(old, 'an older schema')}; run the sweep again with this version)"
    return ""


@dataclass(frozen=True)
class RequestRecord:
    """One attempt as the provider saw it (model seconds from the run's start)."""

    classroom: int
    step: str
    order: int
    clip: int
    attempt: int
    api_key: str
    t_arrival_s: float
    t_start_s: float
    t_end_s: float
    status: int
    inflight_at_arrival: int
    reason: str


def records_from_log(
    log: Iterable[Sequence[Any]], *, t0_us: int = 0, us_per_model_s: float = 1e6
) -> list[RequestRecord]:
    """Convert a provider log (µs tuples, see :class:`sim.provider.Provider`) to records."""
    out = []
    for cid, step, order, clip, attempt, key, arr, start, end, status, inflight, reason in log:
        out.append(
            RequestRecord(
                classroom=int(cid),
                step=STEP_NAMES[step],
                order=int(order),
                clip=int(clip),
                attempt=int(attempt),
                api_key=str(key),
                t_arrival_s=(arr - t0_us) / us_per_model_s,
                t_start_s=(start - t0_us) / us_per_model_s,
                t_end_s=(end - t0_us) / us_per_model_s,
                status=int(status),
                inflight_at_arrival=int(inflight),
                reason=str(reason),
            )
        )
    return out


@dataclass(frozen=True)
class RunResult:
    """One classroom run. ``world`` is ``sim``, ``virtual`` or ``wall``.

    ``makespan_s`` runs from the start to the end of the generation loop (for a
    completed run, the moment its last scene was added); ``ttfs_s`` is the time to
    the first scene added (NaN when none was). Counts are the client's view:
    ``requests`` answered attempts, ``http_429``/``http_5xx`` such answers,
    ``retries`` retries made, ``timeouts`` attempts given up.

    What the learner feels (:mod:`sim.qoe`, one function for every world): ``startup_s``
    (when the learner starts; NaN when no scene was ready), ``stall_s`` and ``stalls``
    (the waits for a scene not ready yet), ``stall_ratio`` (stall / playback; NaN when
    nothing plays), ``last_scene_s`` (when the last scene was ready; NaN when none was),
    ``playback_s`` (playback time of the ready scenes).
    """

    world: str
    scenario: str
    mode: str
    concurrency: int
    tts_concurrency: int
    seed: int
    classroom: int
    makespan_s: float
    ttfs_s: float
    scenes_ok: int
    scenes_failed: int
    status: str
    requests: int
    http_429: int
    http_5xx: int
    retries: int
    timeouts: int
    scene_order: tuple[int, ...]
    scene_ready_s: tuple[float, ...]
    failed_orders: tuple[int, ...]
    startup_s: float = math.nan
    stall_s: float = 0.0
    stalls: int = 0
    stall_ratio: float = math.nan
    last_scene_s: float = math.nan
    playback_s: float = 0.0
    upstream: str = "pr696"
    tenants: int = 1
    tenant: int = 0
    requests_log: tuple[RequestRecord, ...] = ()
    schema_version: int = SCHEMA_VERSION

    def row(self) -> dict[str, Any]:
        """A flat dict without the request log (one row of :func:`runs_frame`)."""
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "requests_log"}
        for k in ("scene_order", "scene_ready_s", "failed_orders"):
            d[k] = list(d[k])
        return d

    def to_json(self, *, with_log: bool = False) -> str:
        d = self.row()
        for k in ("ttfs_s", "startup_s", "stall_ratio", "last_scene_s"):
            d[k] = None if math.isnan(d[k]) else d[k]
        if with_log:
            d["requests_log"] = [asdict(r) for r in self.requests_log]
        return json.dumps(d)


def runs_frame(results: Iterable[RunResult]) -> pd.DataFrame:
    """One row per run."""
    return pd.DataFrame([r.row() for r in results])


def requests_frame(results: Iterable[RunResult]) -> pd.DataFrame:
    """One row per request attempt, with the run's identifying columns."""
    rows: list[dict[str, Any]] = []
    for r in results:
        ident = {
            "world": r.world,
            "scenario": r.scenario,
            "mode": r.mode,
            "concurrency": r.concurrency,
            "seed": r.seed,
            "run_classroom": r.classroom,
        }
        rows.extend({**ident, **asdict(q)} for q in r.requests_log)
    return pd.DataFrame(rows)
