"""Test-run plumbing for the whole suite (pytest loads this first; tests/conftest.py holds the
tests' own helpers).

pyproject's addopts run the suite on pytest-xdist workers (``-n auto --dist loadgroup``). Every
test is its own unit of work but the wall-clock tests (marker ``wallclock``), which are one unit,
run on one worker one at a time. The order the units are handed out in:

1. the wall-clock unit first, to one worker: it waits on real sockets and sleeps most of the
   time (its chain is long in wall time, short in CPU), and it keeps that worker's core to itself
   while the other workers run the model-only tests;
2. then the ``heavy`` tests (many seconds of CPU each: a sweep, a whole-grid check), so that the
   longest work starts early and no worker is left with it at the end;
3. then the rest, in collection order.

A ``multicore`` test (a process pool, a Dask cluster, a sweep on every core) is held back while
the wall-clock unit is running on another worker, as long as anything else is left to hand out:
it would take the wall-clock tests' core. ``-n 0`` runs everything in one process, in collection
order.

xdist's own ``xdist_group`` mark cannot be used: it renames node ids, which pytest 9 no
longer allows. The workers write the marked tests' ids to a file named by the run's id;
the controller's scheduler reads it.
"""

from __future__ import annotations

import json
import os
import tempfile
import uuid
from pathlib import Path
from typing import Any

import pytest

WALLCLOCK_GROUP = "wallclock"
_MARKS = ("wallclock", "heavy", "multicore")


def _marks_file(testrunuid: str) -> Path:
    return Path(tempfile.gettempdir()) / f"scenebench-marks-{testrunuid}.json"


def pytest_configure(config: pytest.Config) -> None:
    """The controller names the run, so that its workers and its scheduler share the file."""
    if hasattr(config, "workerinput") or config.getoption("dist", "no") != "loadgroup":
        return
    if config.getoption("testrunuid", None) is None:
        config.option.testrunuid = uuid.uuid4().hex


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """On a worker: the ids of the marked tests collected, for the scheduler."""
    workerinput = getattr(config, "workerinput", None)
    if workerinput is None:
        return
    ids = {m: [i.nodeid for i in items if i.get_closest_marker(m) is not None] for m in _MARKS}
    path = _marks_file(workerinput["testrunuid"])
    tmp = path.with_name(f"{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps(ids), encoding="utf-8")
    os.replace(tmp, path)  # every worker writes the same lists


@pytest.hookimpl(tryfirst=True, optionalhook=True)  # optional: -p no:xdist
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """``--dist loadgroup``: the order above (other modes: xdist's own)."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    path = _marks_file(config.getoption("testrunuid"))

    class WallclockFirst(LoadScopeScheduling):  # type: ignore[misc]
        marks: dict[str, frozenset[str]] | None = None
        ordered = False

        def _marked(self, mark: str) -> frozenset[str]:
            if self.marks is None:
                text = path.read_text(encoding="utf-8") if path.exists() else "{}"
                path.unlink(missing_ok=True)
                self.marks = {m: frozenset(v) for m, v in json.loads(text).items()}
            return self.marks.get(mark, frozenset())

        def _split_scope(self, nodeid: str) -> str:
            return WALLCLOCK_GROUP if nodeid in self._marked("wallclock") else nodeid

        def _order_queue(self) -> None:
            """Wall-clock unit, heavy tests, the rest (a stable sort of the queue, once)."""
            heavy = self._marked("heavy")
            rank = {WALLCLOCK_GROUP: 0} | dict.fromkeys(heavy, 1)
            units = sorted(self.workqueue.items(), key=lambda kv: rank.get(kv[0], 2))
            self.workqueue.clear()
            self.workqueue.update(units)
            self.ordered = True

        def _wallclock_running(self) -> bool:
            return any(
                WALLCLOCK_GROUP in units and not all(units[WALLCLOCK_GROUP].values())
                for units in self.assigned_work.values()
            )

        def _assign_work_unit(self, node: Any) -> None:
            if not self.ordered:
                self._order_queue()
            queue = self.workqueue
            multicore = self._marked("multicore")
            if next(iter(queue)) in multicore and self._wallclock_running():
                other = next((s for s in queue if s not in multicore), None)
                if other is not None:  # else hand it out: an idle worker gets no more calls
                    queue.move_to_end(other, last=False)
            super()._assign_work_unit(node)

    return WallclockFirst(config, log)
