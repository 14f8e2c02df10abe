"""The real world: fake provider server, the asyncio + httpx pipeline, sweeps and the CLI."""

from .analysis import (
    HOLLOW_CAPTION,
    cell_table,
    folder_provenance,
    plot_marked,
    recommend,
    render_results,
)
from .counts import FAILURE_BUDGET_PP, counts_mask, fails_too_often, p_any_failed, paired_speedup
from .pipeline import Clock, PipelineOptions, ScenePipeline
from .provenance import provenance, provenance_line, upstream_of
from .run import read_server_concurrency, run_classroom, run_classroom_async, run_tenants
from .server import FakeProvider, ServerProcess, ServerThread, create_app
from .sweep import SweepSpec, default_spec, load_runs, run_sweep

__all__ = [
    "FAILURE_BUDGET_PP",
    "HOLLOW_CAPTION",
    "Clock",
    "FakeProvider",
    "PipelineOptions",
    "ScenePipeline",
    "ServerProcess",
    "ServerThread",
    "SweepSpec",
    "cell_table",
    "counts_mask",
    "create_app",
    "default_spec",
    "fails_too_often",
    "folder_provenance",
    "load_runs",
    "p_any_failed",
    "paired_speedup",
    "plot_marked",
    "provenance",
    "provenance_line",
    "read_server_concurrency",
    "recommend",
    "render_results",
    "run_classroom",
    "run_classroom_async",
    "run_sweep",
    "run_tenants",
    "upstream_of",
]
