"""The real world: fake provider server, the asyncio + httpx pipeline, sweeps and the CLI."""

from .pipeline import Clock, PipelineOptions, ScenePipeline
from .run import read_server_concurrency, run_classroom, run_classroom_async
from .server import FakeProvider, ServerThread, create_app

__all__ = [
    "Clock",
    "FakeProvider",
    "PipelineOptions",
    "ScenePipeline",
    "ServerThread",
    "create_app",
    "read_server_concurrency",
    "run_classroom",
    "run_classroom_async",
]
