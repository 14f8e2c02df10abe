"""``scenebench sweep``: a grid of cells on the model, the real pipeline, or both.

A cell is (backend, scenario, quota profile, mode, concurrency). The quota
profile sets the in-flight limit of both keys (0 = unlimited) and keeps the
scenario's other limits. ``serial`` runs at c = 1 only; it is every cell's
baseline. Every cell of one scenario uses the same seed and run ids, so
speedups are paired run for run. The ``real`` backend runs the real pipeline
code (runner/world/pipeline.py against the fake provider app) under the virtual clock
by default; ``--real-clock wall`` uses uvicorn sockets.

A results folder holds ``metadata.json`` (written first), one Parquet file per
finished cell under ``cells/`` (each written atomically), and, once every cell
is done, ``runs.parquet``/``runs.csv``, ``cells.csv``, figures, ``REPORT.md`` and
``recommendation.json``. Ctrl-C keeps the finished cells; ``--resume DIR`` runs
the rest.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import dataclasses
import json
import multiprocessing
import os
import platform
import re
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm import tqdm

from sim.config import RunConfig, check_mode
from sim.engines import pick_engine, simulate
from sim.errors import UserError
from sim.fast import simulate_fast
from sim.limiter import POLICIES
from sim.presets import apply_preset, load_preset
from sim.rules import CLOCKS, ClockKind
from sim.scenario import Scenario, load_scenario, scenario_from_mapping
from sim.schema import SCHEMA_VERSION, RunResult, runs_frame

from ..store.folders import (
    RESULTS_KIND,
    ResultsError,
    load_runs,
    read_metadata,
    write_atomic,
    write_json_atomic,
)
from ..store.stamps import git_commit, provenance
from .runs_sweep import RunsSweepSpec, _run_runs_job, is_runs_spec, runs_grid

__all__ = [
    "RESULTS_KIND",
    "Cell",
    "ResultsError",
    "SweepOutcome",
    "SweepSpec",
    "apply_quota",
    "grid_cells",
    "interrupted_message",
    "load_runs",
    "read_metadata",
    "run_cell",
    "run_sweep",
    "write_atomic",
    "write_json_atomic",
]

DEFAULT_QUOTAS = (1, 2, 3, 5, 10, 0)
BACKENDS = ("sim", "real")
_LIST_COLUMNS = ("scene_order", "scene_ready_s", "failed_orders")


class ConfigView:
    """A cell's run settings read by their old names (the config holds them, checked once)."""

    config: RunConfig

    @property
    def mode(self) -> str:
        return str(self.config.mode)

    @property
    def concurrency(self) -> int:
        return self.config.c

    @property
    def adaptive(self) -> str:
        return str(self.config.adaptive)


@dataclass(frozen=True)
class Cell(ConfigView):
    """One cell of the grid: a run's settings (``config``, built and checked once) on a
    backend, for a scenario under a quota profile, ``reps`` runs from ``seed``."""

    backend: str
    scenario: str
    quota: int  # in-flight limit of both keys; 0 = unlimited
    config: RunConfig
    reps: int
    seed: int
    real_clock: str = ClockKind.VIRTUAL.value
    preset: str = ""  # a provider preset (sim.presets) instead of the in-flight ``quota``

    @property
    def tenants(self) -> int:
        return self.config.tenants

    @property
    def cell_id(self) -> str:
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", self.scenario)
        extra = "" if self.adaptive == "off" else f"__a-{self.adaptive}"
        extra += "" if self.tenants == 1 else f"__k{self.tenants}"
        extra += f"__p-{self.preset}" if self.preset else ""
        return f"{self.backend}__{slug}__q{self.quota}__{self.mode}__c{self.concurrency}{extra}"


@dataclass(frozen=True)
class SweepSpec:
    """The grid. Scenarios are kept as validated mappings so a folder is self-contained."""

    scenarios: tuple[dict[str, Any], ...]
    backends: tuple[str, ...] = BACKENDS
    modes: tuple[str, ...] = ("hybrid", "pipelined")
    concurrencies: tuple[int, ...] = tuple(range(1, 11))
    quotas: tuple[int, ...] = DEFAULT_QUOTAS
    sim_reps: int = 1000
    real_reps: int = 30
    seed: int = 0
    real_clock: str = ClockKind.VIRTUAL.value
    real_time_scale: float | None = None
    quick: bool = False
    adaptives: tuple[str, ...] = ("off",)
    tenants: tuple[int, ...] = (1,)
    stagger_s: float = 0.0
    stagger_dist: str = "constant"
    presets: tuple[str, ...] = ()  # provider presets swept next to the in-flight quotas

    def __post_init__(self) -> None:
        for p in self.presets:
            load_preset(p)  # a one-line error naming the preset
        for a in self.adaptives:
            if a not in POLICIES:
                raise UserError(f"adaptive: must be one of {', '.join(POLICIES)}; got {a!r}")
        for k in self.tenants:
            if not 1 <= k <= 100:
                raise UserError(f"tenants: must be in 1..100, got {k}")
        for b in self.backends:
            if b not in BACKENDS:
                raise UserError(f"backend: must be one of sim, real, both; got {b!r}")
        for m in self.modes:
            check_mode(m)
        for c in self.concurrencies:
            if not 1 <= c <= 10:
                raise UserError(f"concurrency: must be in 1..10, got {c}")
        for q in self.quotas:
            if q < 0:
                raise UserError(f"quota: in-flight limits must be >= 0 (0 = unlimited), got {q}")
        if self.sim_reps < 2 or self.real_reps < 1:
            raise UserError("reps: --reps must be >= 2 and --real-reps >= 1")
        if self.real_clock not in CLOCKS:
            raise UserError(f"real clock: must be virtual or wall, got {self.real_clock!r}")

    def scenario_objects(self) -> list[Scenario]:
        return [scenario_from_mapping(m) for m in self.scenarios]

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> SweepSpec:
        fields = {f.name for f in dataclasses.fields(cls)}
        kw: dict[str, Any] = {
            k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items() if k in fields
        }
        return cls(**kw)


def split_quotas(quotas: Sequence[int | str] | None) -> tuple[tuple[int, ...], tuple[str, ...]]:
    """``--quotas``: in-flight numbers and preset names (:mod:`sim.presets`); none given:
    :data:`DEFAULT_QUOTAS`; presets alone: with the unlimited key (0) beside them."""
    if not quotas:
        return DEFAULT_QUOTAS, ()
    numbers = tuple(q for q in quotas if isinstance(q, int))
    presets = tuple(q for q in quotas if isinstance(q, str))
    return (numbers or (0,)), presets


def apply_quota(scenario: Scenario, quota: int) -> Scenario:
    """The scenario with both keys' in-flight limit set to ``quota`` (0 = unlimited)."""
    return scenario.with_quota(llm_inflight=quota, tts_inflight=quota)


def _settings(spec: SweepSpec) -> list[tuple[str, int, str]]:
    """(mode, concurrency, adaptive) of one block of the grid: serial at c = 1 (the
    baseline), then every other mode, policy and concurrency."""
    out = [("serial", 1, "off")]
    for mode in spec.modes:
        if mode != "serial":
            out += [(mode, c, a) for a in spec.adaptives for c in spec.concurrencies]
    return out


def grid_cells(spec: SweepSpec) -> list[Cell]:
    cells = []
    for sc in spec.scenario_objects():
        for backend in spec.backends:
            reps = spec.sim_reps if backend == "sim" else spec.real_reps
            for q, preset in [(q, "") for q in spec.quotas] + [(0, p) for p in spec.presets]:
                for k in spec.tenants:
                    for mode, c, a in _settings(spec):
                        cfg = RunConfig.of(
                            mode, c, adaptive=a, tenants=k, stagger_s=spec.stagger_s,
                            stagger_dist=spec.stagger_dist,
                        )  # fmt: skip
                        cells.append(
                            Cell(backend, sc.name, q, cfg, reps, spec.seed, spec.real_clock, preset)
                        )
    return cells


def run_cell(cell: Cell, scenario: Scenario, real_time_scale: float | None = None) -> pd.DataFrame:
    """All runs of one cell as tidy rows (per-scene lists dropped)."""
    sc = apply_preset(scenario, cell.preset) if cell.preset else apply_quota(scenario, cell.quota)
    t0 = time.perf_counter()
    if cell.backend == "sim":
        df = _sim_frame(cell, sc)
    else:
        df = runs_frame(_real_runs(cell, sc, real_time_scale))
    df = df.drop(columns=[c for c in _LIST_COLUMNS if c in df.columns])
    df["scenario"] = cell.scenario
    df["backend"] = cell.backend
    df["world"] = df["world"].astype(str)
    df["quota"] = cell.quota
    df["preset"] = cell.preset
    df["adaptive"] = cell.adaptive
    df["tenants"] = cell.tenants
    df["cell_id"] = cell.cell_id
    df["cell_cpu_s"] = time.perf_counter() - t0
    return df


def _sim_frame(cell: Cell, sc: Scenario) -> pd.DataFrame:
    """A model cell's runs, on the engine :func:`sim.engines.pick_engine` picks (the
    vectorised path's columns straight into a frame)."""
    picked = pick_engine(sc, cell.config, cell.reps)
    if picked == "fast":
        return simulate_fast(sc, cell.config, cell.reps, seed=cell.seed).frame()
    if picked == "fast_quota":
        from sim.fast_quota import simulate_quota

        return simulate_quota(sc, cell.config, cell.reps, seed=cell.seed).runs.frame()
    return runs_frame(simulate(sc, cell.config, reps=cell.reps, seed=cell.seed, engine="simpy"))


def _real_runs(cell: Cell, sc: Scenario, real_time_scale: float | None) -> list[RunResult]:
    """A real-pipeline cell's runs (every tenant's classroom for shared-key cells)."""
    from ..world.run import run

    if cell.real_clock != ClockKind.VIRTUAL and cell.tenants > 1:
        raise UserError("tenants: shared-key cells run on the virtual clock only")
    if cell.real_clock == ClockKind.WALL and real_time_scale is None:
        real_time_scale = _wall_time_scale(cell, sc)
    results: list[RunResult] = []
    for r in range(cell.reps):
        results += run(
            sc, cell.config, clock=cell.real_clock, seed=cell.seed, run_id=r,
            time_scale=real_time_scale,
        )  # fmt: skip
    return results


def _wall_time_scale(cell: Cell, sc: Scenario) -> float:
    """A wall-clock cell's time scale, picked from this process's floor so that the harness
    costs at most 0.5% of model time (:func:`runner.experiments.floor.choose_time_scale`);
    printed."""
    from .floor import choose_time_scale, floor_of_this_process

    choice = choose_time_scale(sc, cell.config, seed=cell.seed, floor_s=floor_of_this_process())
    print(f"sweep: cell {cell.cell_id}: {choice.line()}", file=sys.stderr, flush=True)
    return choice.time_scale


def _run_cell_job(
    cell: Cell, scenario: Scenario, real_time_scale: float | None
) -> tuple[str, pd.DataFrame | None, str | None]:
    """Run one cell; a failure (a provider that died, a bug) is returned, not raised, so that
    the sweep records it and goes on."""
    try:
        df = run_cell(cell, scenario, real_time_scale)
    except Exception as e:
        return cell.cell_id, None, f"{type(e).__name__}: {e}"
    return cell.cell_id, df, None


# -- results folder ---------------------------------------------------------------------


def _git_commit() -> str:
    return git_commit()


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in (
        "scenebench",
        "simpy",
        "numpy",
        "scipy",
        "pandas",
        "pyarrow",
        "httpx",
        "starlette",
        "uvicorn",
        "looptime",
        "matplotlib",
        "dask",
        "distributed",
    ):
        try:
            out[pkg] = importlib_metadata.version(pkg)
        except importlib_metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def _new_dir_name(root: Path, name: str) -> Path:
    """A fresh ``<time>-<name>`` folder name under ``root`` (not created)."""
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    d = root / f"{stamp}-{name}"
    n = 1
    while d.exists():
        n += 1
        d = root / f"{stamp}-{name}-{n}"
    return d


def new_results_dir(root: Path, name: str) -> Path:
    d = _new_dir_name(root, name)
    (d / "cells").mkdir(parents=True)
    return d


def finished_cells(d: Path) -> set[str]:
    """Ids of the cells whose files are complete; an unreadable one is an error."""
    done = set()
    for f in sorted((d / "cells").glob("*.parquet")):
        try:
            pd.read_parquet(f, columns=["cell_id"])
        except Exception as e:  # pyarrow raises several kinds
            raise ResultsError(
                f"cell file {str(f)!r} is corrupted ({type(e).__name__}); delete it and resume"
            ) from None
        done.add(f.stem)
    return done


# where results must not go unless asked: the checkout's own folders
SOURCE_DIRS = (
    "sim",
    "runner",
    "tests",
    "notebooks",
    "docs",
    ".git",
    ".github",
    ".ci",
    ".venv",
    "scenebench.egg-info",
)
DASK_CONNECT_TIMEOUT_S = 8


def source_tree_root() -> Path | None:
    """The scenebench checkout this code runs from, or None for an installed copy."""
    root = Path(__file__).resolve().parents[2]
    try:
        pp = (root / "pyproject.toml").read_text()
    except OSError:
        return None
    return root if 'name = "scenebench"' in pp else None


def in_source_tree(path: Path) -> bool:
    """Is ``path`` the checkout's root, one of its files, or inside one of :data:`SOURCE_DIRS`?"""
    root = source_tree_root()
    if root is None:
        return False
    p = path.resolve()
    if p == root:
        return True
    try:
        rel = p.relative_to(root)
    except ValueError:
        return False
    return rel.parts[0] in SOURCE_DIRS or (root / rel.parts[0]).is_file()


def check_new_folder(path: Path, *, flag: str, allow_source_tree: bool = False) -> None:
    """Refuse, with one line, a folder a new sweep cannot or should not write into."""
    if path.exists() and not path.is_dir():
        raise ResultsError(f"{flag} {path} is a file, not a folder; name a new folder")
    if not allow_source_tree and in_source_tree(path):
        raise ResultsError(
            f"{flag} {path} is inside the scenebench source tree ({source_tree_root()}); "
            "write results elsewhere (default: results/) or pass --allow-source-tree"
        )
    if path.is_dir() and (path / "metadata.json").exists():
        raise ResultsError(f"{str(path)!r} already holds a sweep; use --resume {path}")
    if flag == "--out" and path.is_dir() and any(path.iterdir()):
        raise ResultsError(f"{flag} {path} exists and is not empty; name a new or empty folder")


def _ignore_sigint() -> None:
    """Worker processes leave Ctrl-C to the sweep, which stops them (no half-run noise). They
    start with SIGINT blocked (:func:`_sigint_held`): ignore it, then let the mask go (a
    Ctrl-C that arrived meanwhile is dropped here, not raised in the middle of an import)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


@contextlib.contextmanager
def _sigint_held() -> Iterator[None]:
    """While the pool's processes are spawned, Ctrl-C waits: SIGINT is blocked in this thread
    (the children inherit the mask, so it cannot land in a worker still importing, and drop it
    once they ignore it), and one delivered to another thread (numpy's) is only noted; it is
    raised as a KeyboardInterrupt when the pool is whole, never half-way through a spawn."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    seen: list[int] = []
    old_handler = signal.signal(signal.SIGINT, lambda signum, _frame: seen.append(signum))
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)  # a blocked one arrives now
        signal.signal(signal.SIGINT, old_handler)
    if seen:
        raise KeyboardInterrupt


def _connect_dask(address: str) -> Any:
    """A Dask client, or :class:`ResultsError` in one line (bad address, nothing listening)."""
    from distributed import Client

    try:
        return Client(address, timeout=DASK_CONNECT_TIMEOUT_S)  # type: ignore[no-untyped-call]
    except Exception as e:  # OSError, TimeoutError, ValueError for a malformed address
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ResultsError(
            f"--dask-scheduler {address}: cannot connect to the Dask scheduler ({msg})"
        ) from None


def _executor(workers: int, dask_scheduler: str | None) -> Any:
    if dask_scheduler is not None:
        return _connect_dask(dask_scheduler)
    ctx = multiprocessing.get_context("spawn")
    return cf.ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_ignore_sigint)


def _stop_workers(ex: Any) -> None:
    """On Ctrl-C: stop the local worker processes now (their cells are lost, not half-saved),
    and wait for the pool to mark the unfinished cells broken. Nothing is cancelled first: the
    pool's own thread would then fail setting those futures (``InvalidStateError``).

    A worker stopped half-way through sending a finished cell back (a frame of many pipe-fulls)
    would leave the pool's thread reading the rest for ever: this process holds the pipe's
    writing end too, so the reader never sees its end, and the wait below never returns. That
    end is closed first (nothing here writes to it; no worker is started after a stop)."""
    writer = getattr(getattr(ex, "_result_queue", None), "_writer", None)
    if writer is not None:
        writer.close()
    for proc in list((getattr(ex, "_processes", None) or {}).values()):
        proc.terminate()
    ex.shutdown(wait=True)


def _create_folder(d: Path, meta: dict[str, Any]) -> None:
    """Make a new results folder with its metadata; on an OS error leave nothing behind."""
    made = [p for p in (d, *d.parents) if not p.exists()]  # innermost first
    try:
        (d / "cells").mkdir(parents=True, exist_ok=True)
        write_json_atomic(d / "metadata.json", meta)
    except OSError as e:
        if not made:  # an empty folder given with --out: take back only what was added
            shutil.rmtree(d / "cells", ignore_errors=True)
            (d / "metadata.json").unlink(missing_ok=True)
        else:
            shutil.rmtree(made[0], ignore_errors=True)
            for p in made[1:]:
                with contextlib.suppress(OSError):
                    p.rmdir()  # only if empty
        raise ResultsError(
            f"cannot write the results folder {str(d)!r}: {e.strerror or e}"
        ) from None


def run_sweep(
    spec: SweepSpec | RunsSweepSpec,
    *,
    root: Path = Path("results"),
    out: Path | None = None,
    resume: Path | None = None,
    workers: int | None = None,
    dask_scheduler: str | None = None,
    progress: bool = True,
    name: str | None = None,
    allow_source_tree: bool = False,
    on_start: Callable[[Path, int, int], None] | None = None,
) -> Path:
    """Run (or resume) a sweep; returns the results folder. Raises KeyboardInterrupt on Ctrl-C
    after saving what finished.

    A folder that cannot be written, a folder in the source tree (unless
    ``allow_source_tree``) and an unreachable Dask scheduler raise :class:`ResultsError`
    before anything is written. ``on_start(folder, cells, done)`` is called once the folder
    exists, before the first cell runs."""
    dask_client = _connect_dask(dask_scheduler) if dask_scheduler is not None else None
    try:
        return _run_sweep(
            spec,
            root=root,
            out=out,
            resume=resume,
            workers=workers,
            dask_client=dask_client,
            progress=progress,
            name=name,
            allow_source_tree=allow_source_tree,
            on_start=on_start,
        )
    finally:
        if dask_client is not None:
            dask_client.close()


def _run_sweep(
    spec: SweepSpec | RunsSweepSpec,
    *,
    root: Path,
    out: Path | None,
    resume: Path | None,
    workers: int | None,
    dask_client: Any,
    progress: bool,
    name: str | None,
    allow_source_tree: bool,
    on_start: Callable[[Path, int, int], None] | None,
) -> Path:
    if resume is not None:
        spec, d = _reopen_folder(resume)
    else:
        d = _open_new_folder(spec, root, out, name, allow_source_tree)
    scenarios = {sc.name: sc for sc in spec.scenario_objects()}  # parsed once, not per cell
    cells, job_fn = _grid_and_job(spec)
    done = finished_cells(d)
    todo = [c for c in cells if c.cell_id not in done]
    if on_start is not None:
        on_start(d, len(cells), len(cells) - len(todo))
    # big cells first: better packing on the workers
    todo.sort(key=lambda c: (c.backend != "real", -c.concurrency))
    jobs = [(c, scenarios[c.scenario], spec.real_time_scale) for c in todo]
    bar = tqdm(
        total=len(cells),
        initial=len(cells) - len(todo),
        unit="cell",
        desc="sweep",
        disable=not progress or not sys.stderr.isatty(),  # a bar only on a terminal
        dynamic_ncols=True,
    )
    saver = _CellSaver(d, bar)
    try:
        n_workers = workers or max(1, os.cpu_count() or 1)
        if not jobs:
            pass
        elif n_workers == 1 and dask_client is None:
            for job in jobs:
                saver.save(*job_fn(*job))
        else:
            _run_on_pool(jobs, saver, n_workers, dask_client, job_fn)
    finally:
        bar.close()
    write_json_atomic(d / "failed_cells.json", saver.failed)
    if len(saver.failed) < len(cells):
        finalize(d)
    return d


def _grid_and_job(spec: Any) -> tuple[list[Any], Callable[..., Any]]:
    """The cells of a spec and the function that runs one (a browser-era sweep or a runs
    sweep, :mod:`runner.experiments.runs_sweep`)."""
    if isinstance(spec, RunsSweepSpec):
        return runs_grid(spec), _run_runs_job
    return grid_cells(spec), _run_cell_job


def _reopen_folder(resume: Path) -> tuple[Any, Path]:
    """``--resume``: the folder's own spec, and the folder (its ``cells/`` ensured)."""
    meta = read_metadata(resume)
    (resume / "cells").mkdir(exist_ok=True)
    if is_runs_spec(meta["spec"]):
        return RunsSweepSpec.from_json(meta["spec"]), resume
    return SweepSpec.from_json(meta["spec"]), resume


def _open_new_folder(
    spec: SweepSpec | RunsSweepSpec,
    root: Path,
    out: Path | None,
    name: str | None,
    allow_source_tree: bool,
) -> Path:
    """A new results folder (``out``, or a fresh one under ``root``), with its metadata."""
    label = name or "-".join(m.get("name", "custom") for m in spec.scenarios)
    if out is not None:
        check_new_folder(out, flag="--out", allow_source_tree=allow_source_tree)
        d = out
    else:
        check_new_folder(root, flag="--results-root", allow_source_tree=allow_source_tree)
        d = _new_dir_name(root, label + ("-quick" if spec.quick else ""))
    _create_folder(d, _metadata(spec))
    return d


def _metadata(spec: SweepSpec | RunsSweepSpec) -> dict[str, Any]:
    return {
        "kind": RESULTS_KIND,
        "schema_version": SCHEMA_VERSION,
        "spec": spec.to_json(),
        "created": datetime.now(UTC).isoformat(),
        "provenance": provenance(list(spec.scenarios)),
        "git_commit": _git_commit(),
        "versions": _versions(),
        "argv": sys.argv,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
    }


class _CellSaver:
    """Writes each finished cell (atomically) or its failure marker, and ticks the bar."""

    def __init__(self, d: Path, bar: Any) -> None:
        self.d = d
        self.bar = bar
        self.failed: dict[str, str] = {}

    def save(self, cell_id: str, df: pd.DataFrame | None, error: str | None) -> None:
        marker = self.d / "cells" / f"{cell_id}.failed.json"
        if df is None:
            self.failed[cell_id] = error or "unknown error"
            write_json_atomic(
                marker,
                {
                    "cell_id": cell_id,
                    "reason": self.failed[cell_id],
                    "time": datetime.now(UTC).isoformat(),
                },
            )
        else:
            write_atomic(
                self.d / "cells" / f"{cell_id}.parquet", lambda p: df.to_parquet(p, index=False)
            )
            marker.unlink(missing_ok=True)
        self.bar.update(1)


_Job = tuple[Any, Scenario, float | None]  # a Cell or a runs cell


def _run_on_pool(
    jobs: Sequence[_Job],
    saver: _CellSaver,
    workers: int,
    dask_client: Any,
    job_fn: Callable[..., Any] = _run_cell_job,
) -> None:
    """The cells on local processes or a Dask cluster, saved as they finish; on Ctrl-C (or
    any error) the local workers are stopped (Dask: the rest is cancelled)."""
    dask = dask_client is not None
    ex = dask_client if dask else _executor(workers, None)
    futs: list[Any] = []
    try:
        with contextlib.nullcontext() if dask else _sigint_held():
            for job in jobs:
                futs.append(ex.submit(job_fn, *job))
        ids = {id(f): job[0].cell_id for f, job in zip(futs, jobs, strict=True)}
        for f in _as_completed(futs, dask):
            try:
                saver.save(*f.result())
            except (KeyboardInterrupt, SystemExit):
                raise
            except BaseException as e:  # a worker that died takes its cell with it
                saver.save(ids[id(f)], None, f"worker failed: {type(e).__name__}: {e}")
    except BaseException:
        if dask:
            for f in futs:
                f.cancel()
        else:
            _stop_workers(ex)
        raise
    if not dask:
        ex.shutdown(wait=True)


@dataclass(frozen=True)
class SweepOutcome:
    """What a finished (or resumed) sweep left in its folder."""

    folder: Path
    failed: dict[str, str]  # cell id -> reason
    recommended: int | None  # None: every cell failed, nothing was combined

    @classmethod
    def read(cls, d: Path) -> SweepOutcome:
        failed = json.loads((d / "failed_cells.json").read_text())
        rec = d / "recommendation.json"
        recommended = json.loads(rec.read_text())["recommended"] if rec.is_file() else None
        return cls(d, failed, recommended)


def interrupted_message(folder: Path | None) -> str:
    """The one line after Ctrl-C: what was kept and how to continue."""
    if folder is None:
        return "interrupted before any cell ran; nothing was written"
    try:
        kept = len(finished_cells(folder))
    except ResultsError:
        kept = 0
    return (
        f"interrupted; {kept} finished cell(s) kept in {folder}; continue with: "
        f"scenebench sweep --resume {folder}"
    )


def _as_completed(futs: Sequence[Any], dask: bool) -> Iterable[Any]:
    if dask:
        from distributed import as_completed

        return as_completed(futs)  # type: ignore[no-untyped-call,no-any-return]
    return cf.as_completed(futs)


def finalize(d: Path) -> None:
    """Combine the finished cells into ``runs.parquet`` and ``runs.csv`` (the report is
    rendered from them by :func:`runner.report.sections.render_results`)."""
    files = sorted((d / "cells").glob("*.parquet"))
    if not files:
        raise ResultsError(f"{str(d)!r} has no finished cell to combine")
    runs = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
    write_atomic(d / "runs.parquet", lambda p: runs.to_parquet(p, index=False))
    write_atomic(d / "runs.csv", lambda p: runs.to_csv(p, index=False))


def _named(sc: Scenario, name: str, upstream: str | None, suffix: bool) -> Scenario:
    """A scenario of a sweep over several profiles is named ``<scenario>@<profile>``."""
    return sc.replace(name=f"{name}@{upstream}") if suffix else sc


def default_spec(
    *,
    quick: bool,
    scenarios: Sequence[str] | None,
    backends: Sequence[str],
    upstreams: Sequence[str] | None = None,
    seed: int = 0,
    sim_reps: int | None = None,
    real_reps: int | None = None,
    real_clock: str = ClockKind.VIRTUAL.value,
    real_time_scale: float | None = None,
    quotas: Sequence[int | str] | None = None,
    concurrencies: Sequence[int] | None = None,
    adaptives: Sequence[str] = ("off",),
    tenants: Sequence[int] = (1,),
    stagger_s: float = 0.0,
    stagger_dist: str = "constant",
) -> SweepSpec:
    names = (
        list(scenarios)
        if scenarios
        else (["default"] if quick else ["default", "content-heavy", "tts-heavy"])
    )
    profiles = list(upstreams) if upstreams else [None]
    numbers, presets = split_quotas(quotas)
    maps = tuple(
        _named(load_scenario(n, upstream=p), n, p, len(profiles) > 1).to_mapping()
        for n in names
        for p in profiles
    )
    return SweepSpec(
        scenarios=maps,
        backends=tuple(backends),
        quotas=numbers,
        presets=presets,
        concurrencies=tuple(concurrencies) if concurrencies else tuple(range(1, 11)),
        sim_reps=sim_reps or (1000 if quick else 2000),
        real_reps=real_reps or (10 if quick else 40),
        seed=seed,
        real_clock=real_clock,
        real_time_scale=real_time_scale,
        quick=quick,
        adaptives=tuple(adaptives),
        tenants=tuple(tenants),
        stagger_s=stagger_s,
        stagger_dist=stagger_dist,
    )
