"""The real world: fake provider server, the asyncio + httpx pipeline, sweeps and the CLI."""

from .analysis import cell_table, recommend, render_results
from .pipeline import Clock, PipelineOptions, ScenePipeline
from .run import read_server_concurrency, run_classroom, run_classroom_async, run_tenants
from .server import FakeProvider, ServerProcess, ServerThread, create_app
from .sweep import SweepSpec, default_spec, load_runs, run_sweep

__all__ = [
    "Clock",
    "FakeProvider",
    "PipelineOptions",
    "ScenePipeline",
    "ServerProcess",
    "ServerThread",
    "SweepSpec",
    "cell_table",
    "create_app",
    "default_spec",
    "load_runs",
    "read_server_concurrency",
    "recommend",
    "render_results",
    "run_classroom",
    "run_classroom_async",
    "run_sweep",
    "run_tenants",
]
