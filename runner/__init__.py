"""The real world (fake provider, the asyncio + httpx pipeline, its clocks), the experiments
(sweep, validate, gate, bench, load), the reporting (recommendation, figures, report) and the
command line — flat modules, by role in docs/design.md's "Layout".

Names are imported on first use (PEP 562), so the command line's ``--help`` stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "HOLLOW_CAPTION": "figures",
    "folder_provenance": "report",
    "plot_marked": "figures",
    "FAILURE_BUDGET_PP": "counts",
    "counts_mask": "counts",
    "fails_too_often": "counts",
    "p_any_failed": "counts",
    "paired_speedup": "counts",
    "provenance": "stamps",
    "provenance_line": "stamps",
    "upstream_of": "stamps",
    "cell_table": "cells",
    "recommend": "recommendation",
    "render_results": "report",
    "Clock": "pipeline",
    "PipelineOptions": "pipeline",
    "ScenePipeline": "pipeline",
    "read_server_concurrency": "run",
    "run_classroom": "run",
    "run_classroom_async": "run",
    "run_tenants": "run",
    "FakeProvider": "server",
    "ServerProcess": "server",
    "ServerThread": "server",
    "create_app": "server",
    "SweepSpec": "sweep",
    "default_spec": "sweep",
    "load_runs": "sweep",
    "run_sweep": "sweep",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    mod = _WHERE.get(name)
    if mod is None:
        raise AttributeError(f"module 'runner' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{mod}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
