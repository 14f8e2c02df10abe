"""The ``sim`` command's summary of replications (shared by the browser and server paths)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

    from sim.schema import RunResult

__all__ = ["summary"]


def _qoe_summary(results: Sequence[RunResult]) -> dict[str, Any]:
    from .qoe_report import qoe_summary

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
