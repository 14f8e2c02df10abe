"""scenebench's real side, in folders by role (docs/design.md, "Layout"): ``world`` (the fake
provider, the asyncio + httpx port, its clocks), ``experiments`` (sweep, validate, gate, bench,
…: typed specs in, data out), ``store`` (results folders, stamps, the cell table), ``report``
(recommendation, figures, REPORT.md, findings) and ``cli`` (the only place that knows argparse).
Imports go only downward (``tests/test_layers.py``).

Names are imported on first use (PEP 562), so the command line's ``--help`` stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "folder_provenance": "report.sections",
    "FAILURE_BUDGET_PP": "store.counts",
    "counts_mask": "store.counts",
    "fails_too_often": "store.counts",
    "p_any_failed": "store.counts",
    "paired_speedup": "store.counts",
    "provenance": "store.stamps",
    "provenance_line": "store.stamps",
    "upstream_of": "store.stamps",
    "cell_table": "store.cells",
    "recommend": "report.recommendation",
    "render_results": "report.sections",
    "Clock": "world.pipeline",
    "ScenePipeline": "world.pipeline",
    "read_server_concurrency": "world.run",
    "run": "world.run",
    "run_async": "world.run",
    "FakeProvider": "world.fake_provider",
    "ServerProcess": "world.fake_provider",
    "ServerThread": "world.fake_provider",
    "create_app": "world.fake_provider",
    "SweepSpec": "experiments.sweep",
    "default_spec": "experiments.sweep",
    "load_runs": "store.folders",
    "run_sweep": "experiments.sweep",
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
