"""A classroom's time line, and the one place a :class:`~sim.schema.RunResult` is built.

Both worlds keep the same record of a classroom while it runs — the scenes added (outline
order, µs from the classroom's start), the outlines that failed, the request counts, the
final status and the loop's end — and hand it, with the run's identity and the ready
scenes' playback times, to :func:`run_result`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import fields
from typing import Any, NamedTuple

from .qoe import qoe_of_run
from .rules import Counts, RunStatus
from .scenario import Scenario
from .schema import SCHEMA_VERSION, RequestRecord, RunResult

__all__ = ["Timeline", "run_result"]


class Timeline(NamedTuple):
    """What happened to one classroom: ``ready`` (outline order, µs from its start) in the
    order the scenes were added, ``failed`` outline orders, its ``counts``, its final
    ``status`` and ``end_us``, the loop's end (µs from its start). (A named tuple: one is
    made per classroom, and a frozen dataclass's ``__init__`` cost 1.5 µs.)"""

    ready: Sequence[tuple[int, int]]
    failed: Sequence[int]
    counts: Counts
    status: RunStatus
    end_us: int


def run_result(
    sc: Scenario,
    tl: Timeline,
    playback_us: Mapping[int, int],
    *,
    world: str,
    mode: str,
    concurrency: int,
    tts_concurrency: int,
    seed: int,
    classroom: int,
    tenants: int = 1,
    tenant: int = 0,
    requests_log: Iterable[RequestRecord] = (),
) -> RunResult:
    """The :class:`RunResult` of a time line; ``playback_us`` holds each ready scene's
    playback time (:func:`sim.qoe.qoe_of_run` makes the learner's metrics of it)."""
    st = tl.counts
    ready = tl.ready
    qoe = qoe_of_run(sc.outlines, ready, playback_us, sc.playback)
    return _built(
        {
            "world": str(world),
            "scenario": sc.name,
            "mode": str(mode),
            "concurrency": concurrency,
            "tts_concurrency": tts_concurrency,
            "seed": seed,
            "classroom": classroom,
            "makespan_s": tl.end_us / 1e6,
            "ttfs_s": ready[0][1] / 1e6 if ready else math.nan,
            "scenes_ok": len(ready),
            "scenes_failed": len(tl.failed),
            "status": str(tl.status),
            "requests": st.requests,
            "http_429": st.http_429,
            "http_5xx": st.http_5xx,
            "retries": st.retries,
            "timeouts": st.timeouts,
            "scene_order": tuple([i for i, _ in ready]),
            "scene_ready_s": tuple([t / 1e6 for _, t in ready]),
            "failed_orders": tuple(tl.failed),
            "startup_s": qoe["startup_s"],
            "stall_s": qoe["stall_s"],
            "stalls": qoe["stalls"],
            "stall_ratio": qoe["stall_ratio"],
            "last_scene_s": qoe["last_scene_s"],
            "playback_s": qoe["playback_s"],
            "upstream": sc.upstream,
            "tenants": tenants,
            "tenant": tenant,
            "requests_log": tuple(requests_log),
            "schema_version": SCHEMA_VERSION,
        }
    )


_FIELDS = tuple(f.name for f in fields(RunResult))


def _built(values: dict[str, Any]) -> RunResult:
    """``RunResult(**values)`` for ``values`` holding every field in the class's order: the
    same object (its ``__dict__`` is what ``__init__`` makes), without a frozen dataclass's
    ``__init__``, which sets each of the 32 fields through ``object.__setattr__`` (9 µs, a
    few per cent of a classroom's CPU in the model; tests/sim/test_timeline.py checks it)."""
    assert len(values) == len(_FIELDS)
    made: RunResult = _NEW(RunResult)
    made.__dict__.update(values)
    return made


_NEW = object.__new__
