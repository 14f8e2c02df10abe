"""Test-run plumbing for the whole suite (pytest loads this first; tests/conftest.py holds the
tests' own helpers).

pyproject's addopts run the suite on pytest-xdist workers (``-n auto --dist loadgroup``): one per
core plus one, as the wall-clock tests on theirs leave most of a core idle. Every test is its own
unit of work but the wall-clock tests (marker ``wallclock``), which are one unit, run on one worker
one at a time. The order the units are handed out in:

1. the wall-clock unit first, to the first worker (``gw0``): it waits on real sockets and sleeps
   most of the time (its chain is long in wall time, short in CPU). The other workers run at the
   lowest CPU priority (Linux's idle scheduling class, else ``nice`` +10; their subprocesses
   too), and while the wall-clock unit runs only the first of them is handed new work: the
   wall-clock tests keep a quiet core;
2. then the ``heavy`` tests (many seconds of CPU each: a sweep, a whole-grid check), so that the
   longest work starts early and no worker is left with it at the end;
3. then the rest, in collection order, on every model worker once the wall-clock unit is done.

A ``multicore`` test (a process pool, a Dask cluster, a sweep on every core) is held back while
the wall-clock unit is running on another worker, as long as anything else is left to hand out:
it would take the wall-clock tests' core. Before the workers start, the limited-key engine's
compiled loop is compiled into numba's cache, so that no compile runs beside the wall-clock
tests (and the compiled runs engine's loop). ``-n 0`` runs everything in one process, in
collection order.

xdist's own ``xdist_group`` mark cannot be used: it renames node ids, which pytest 9 no
longer allows. The workers write the marked tests' ids to a file named by the run's id;
the controller's scheduler reads it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

import pytest

WALLCLOCK_GROUP = "wallclock"
_MARKS = ("wallclock", "heavy", "multicore")


def _marks_file(testrunuid: str) -> Path:
    return Path(tempfile.gettempdir()) / f"scenebench-marks-{testrunuid}.json"


WALLCLOCK_WORKER = "gw0"
MODEL_WORKER_NICE = 10  # where the idle class cannot be had


def _lower_priority() -> None:
    """A model worker's priority: the idle scheduling class (it runs only on a core nothing
    else wants, and a woken wall-clock test takes the core at once); ``nice`` +10 where the
    class is not available. Under ``nice`` alone two model workers still delayed a woken
    wall-clock test by several ms per request, past its bound (1 run in 4 beside two
    ``nice`` +10 busy loops; 0 in 6 beside two idle-class ones)."""
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):
        os.nice(MODEL_WORKER_NICE)


@pytest.hookimpl(tryfirst=True, optionalhook=True)  # optional: -p no:xdist
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int | None:
    """``-n auto --dist loadgroup``: one model worker per core, plus the wall-clock worker.
    The wall-clock unit waits on sockets and sleeps (a minute of CPU in three of wall time):
    beside it, a model worker per core uses the CPU it leaves, at the lowest priority, so the
    wall-clock tests still get a core the moment they wake. ``PYTEST_XDIST_AUTO_NUM_WORKERS``
    (xdist's own override) and other modes: xdist's count."""
    if os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS") or config.getoption("dist") != "loadgroup":
        return None
    return len(os.sched_getaffinity(0)) + 1


def pytest_configure(config: pytest.Config) -> None:
    """The controller names the run, so that its workers and its scheduler share the file; a
    worker other than the wall-clock tests' lowers its own priority."""
    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None:
        # a worker's dist option is "no"; xdist keeps whether it was loadgroup here
        if getattr(config.option, "loadgroup", False) and (
            workerinput.get("workerid") != WALLCLOCK_WORKER
        ):
            _lower_priority()
        return
    if config.getoption("dist", "no") != "loadgroup":
        return
    if config.getoption("testrunuid", None) is None:
        config.option.testrunuid = uuid.uuid4().hex
    _compile_engine()


def _compile_engine() -> None:
    """Before the workers start: the limited-key engine's compiled loop (and its compiled
    helpers: the PCG64 at cells, the seeding, the clips, ``sim.ndtri``) and the compiled runs
    engine's (:mod:`sim.runs_nb`), each compiled once into numba's cache by its own subprocess,
    the two side by side (about 40 s of CPU each in a fresh checkout, so on two cores the wait
    is the longer one, not the sum; about 1 s once cached), so that no compile runs beside the
    wall-clock tests. A failure here is left to the tests that use the engines to show."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", f"from sim.{mod} import warm_up; warm_up()"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for mod in ("fast_quota", "runs_nb")
    ]
    for p in procs:
        p.wait()


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

        def _wallclock_node(self, node: Any) -> bool:
            ids = [n.gateway.id for n in self.nodes]
            want = WALLCLOCK_WORKER if WALLCLOCK_WORKER in ids else ids[0]
            return bool(node.gateway.id == want)

        def _pick(self, node: Any) -> str:
            """The unit to hand ``node``: the wall-clock unit to its worker; to the others the
            first unit in order, a multicore one only once the wall-clock unit is done (or
            when nothing else is left: an idle worker gets no more calls)."""
            queue = list(self.workqueue)
            if WALLCLOCK_GROUP in self.workqueue and self._wallclock_node(node):
                return WALLCLOCK_GROUP
            rest = [s for s in queue if s != WALLCLOCK_GROUP] or queue
            if self._wallclock_running() or WALLCLOCK_GROUP in self.workqueue:
                multicore = self._marked("multicore")
                return next((s for s in rest if s not in multicore), rest[0])
            return rest[0]

        def _held(self, node: Any) -> bool:
            """The model workers beyond the first get no new unit while the wall-clock unit
            runs: one busy worker per core beside it delayed its woken tests past their
            bounds (on an idle machine 3 suite runs in 4 so laid out failed a wall-clock test,
            one of the two with the model workers in the idle scheduling class)."""
            model = sorted(n.gateway.id for n in self.nodes if not self._wallclock_node(n))
            return bool(node.gateway.id in model[1:] and self._wallclock_running())

        def _reschedule(self, node: Any) -> None:
            if self.workqueue and not node.shutting_down and self._held(node):
                return
            super()._reschedule(node)

        def mark_test_complete(self, node: Any, item_index: int, duration: float = 0) -> None:
            """As xdist's, then the other workers are offered work again: a held one is short
            of it (a worker keeps its last test until it has a next one, or is shut down)."""
            super().mark_test_complete(node, item_index, duration)
            for other in self.nodes:
                if other is not node and self.workqueue:
                    self._reschedule(other)

        def _assign_work_unit(self, node: Any) -> None:
            if not self.ordered:
                self._order_queue()
            self.workqueue.move_to_end(self._pick(node), last=False)
            super()._assign_work_unit(node)

    return WallclockFirst(config, log)
