"""Test-run plumbing for the whole suite (pytest loads this first; tests/conftest.py holds the
tests' own helpers).

pyproject's addopts run the suite on pytest-xdist workers (``-n auto --dist loadgroup``). The
wall-clock tests (marker ``wallclock``) are one unit of work, run on one worker one at a time,
and handed out last, once every other test has been given out, so that they run on a machine
the model-only tests have (nearly) left. ``-n 0`` runs everything in one process as before.

xdist's own ``xdist_group`` mark cannot be used: it renames node ids, which pytest 9 no
longer allows. The workers write the wall-clock tests' ids to a file named by the run's id;
the controller's scheduler reads it.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from pathlib import Path
from typing import Any

import pytest

WALLCLOCK_GROUP = "wallclock"


def _wallclock_file(testrunuid: str) -> Path:
    return Path(tempfile.gettempdir()) / f"scenebench-wallclock-{testrunuid}.txt"


def pytest_configure(config: pytest.Config) -> None:
    """The controller names the run, so that its workers and its scheduler share the file."""
    if hasattr(config, "workerinput") or config.getoption("dist", "no") != "loadgroup":
        return
    if config.getoption("testrunuid", None) is None:
        config.option.testrunuid = uuid.uuid4().hex


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """On a worker: the ids of the wall-clock tests collected, for the scheduler."""
    workerinput = getattr(config, "workerinput", None)
    if workerinput is None:
        return
    ids = [item.nodeid for item in items if item.get_closest_marker("wallclock") is not None]
    path = _wallclock_file(workerinput["testrunuid"])
    tmp = path.with_name(f"{path.name}.{os.getpid()}")
    tmp.write_text("\n".join(ids), encoding="utf-8")
    os.replace(tmp, path)  # every worker writes the same list


@pytest.hookimpl(tryfirst=True, optionalhook=True)  # optional: -p no:xdist
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """``--dist loadgroup``: every test its own unit of work but the wall-clock tests, one
    unit handed out last (other modes: xdist's own)."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    path = _wallclock_file(config.getoption("testrunuid"))

    class WallclockLast(LoadScopeScheduling):  # type: ignore[misc]
        wallclock: frozenset[str] | None = None

        def _split_scope(self, nodeid: str) -> str:
            if self.wallclock is None:
                text = path.read_text(encoding="utf-8") if path.exists() else ""
                path.unlink(missing_ok=True)
                self.wallclock = frozenset(text.split("\n")) - {""}
            return WALLCLOCK_GROUP if nodeid in self.wallclock else nodeid

        def _assign_work_unit(self, node: Any) -> None:
            queue = self.workqueue
            if WALLCLOCK_GROUP in queue and len(queue) > 1:
                queue.move_to_end(WALLCLOCK_GROUP)
            super()._assign_work_unit(node)

    return WallclockLast(config, log)
