"""Ctrl-C during ``scenebench sweep`` is quiet at every moment: while the process pool starts,
while cells run, while one is saved. No traceback (``concurrent.futures``' InvalidStateError,
a worker's KeyboardInterrupt), and always the one resume line."""

import concurrent.futures as cf
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from runner.experiments import sweep
from runner.experiments.sweep import default_spec, run_sweep

pytestmark = pytest.mark.multicore  # a sweep on a pool of 2 processes

# the installed command (as a user runs it; ``-m`` would make every spawned worker re-run it)
CMD = [str(Path(sys.executable).parent / "scenebench")]
# model-only cells on a 2-in-flight key (SimPy) with many runs: none ends before the signal
SWEEP = ["sweep", "--backend", "sim", "--quick", "--reps", "20000", "--quotas", "2"]
SWEEP += ["--concurrency", "2,3", "--workers", "2", "--no-progress"]


def _resume_line(out: Path) -> str:
    kept = len(list((out / "cells").glob("*.parquet")))
    return (
        f"scenebench sweep: interrupted; {kept} finished cell(s) kept in {out}; "
        f"continue with: scenebench sweep --resume {out}"
    )


@pytest.mark.parametrize("delay_s", [0.0, 0.4, 1.5])
def test_sigint_to_the_process_group_at_several_moments(tmp_path, delay_s):
    """SIGINT to the whole group (as a terminal sends it) right after the results line, while
    the pool's workers are spawning and importing, and once they run cells."""
    out = tmp_path / "res"
    proc = subprocess.Popen(
        [*CMD, *SWEEP, "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first.startswith(f"results: {out} ("), first
        threading.Event().wait(delay_s)
        os.killpg(proc.pid, signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130, stderr
    assert stderr.strip().splitlines() == [_resume_line(out)], stderr
    for noise in ("Traceback", "InvalidStateError", "KeyboardInterrupt", "Exception in thread"):
        assert noise not in stderr + stdout


class _Interrupting(cf.ProcessPoolExecutor):
    """A pool whose ``n``-th submit is interrupted (Ctrl-C while the pool is being filled)."""

    at = 1

    def submit(self, *args, **kw):  # type: ignore[no-untyped-def, override]
        if _Interrupting.at == 0:
            raise KeyboardInterrupt
        _Interrupting.at -= 1
        return super().submit(*args, **kw)


def _spec(reps: int):
    return default_spec(
        quick=True, scenarios=["default"], backends=["sim"], sim_reps=reps, quotas=[2],
        concurrencies=[2, 3],
    )  # fmt: skip


@pytest.mark.parametrize("where", ["submit-0", "submit-2", "save"])
def test_an_interrupt_at_each_hook_leaves_no_thread_traceback(tmp_path, monkeypatch, where):
    """KeyboardInterrupt injected before the first submit, after two (workers spawned, cells
    queued and running) and while saving a cell: run_sweep re-raises it, the pool's thread
    raises nothing (no InvalidStateError on a cancelled future), no worker is left."""
    errors: list[BaseException] = []
    monkeypatch.setattr(threading, "excepthook", lambda a: errors.append(a.exc_value))
    pools: list[cf.ProcessPoolExecutor] = []

    def executor(workers, _dask):  # type: ignore[no-untyped-def]
        ctx = sweep.multiprocessing.get_context("spawn")
        pool = _Interrupting(max_workers=2, mp_context=ctx, initializer=sweep._ignore_sigint)
        pools.append(pool)
        return pool

    _Interrupting.at = int(where.split("-")[1]) if where.startswith("submit") else 10**6
    monkeypatch.setattr(sweep, "_executor", executor)
    if where == "save":

        def save(self, *_a):  # type: ignore[no-untyped-def]
            raise KeyboardInterrupt

        monkeypatch.setattr(sweep._CellSaver, "save", save)
    reps = 2 if where == "save" else 20_000  # the first cell finishes soon, or none does
    with pytest.raises(KeyboardInterrupt):
        run_sweep(_spec(reps), out=tmp_path / "res", workers=2, progress=False)
    assert errors == []
    (pool,) = pools
    assert not any(p.is_alive() for p in (pool._processes or {}).values())


def _result_of(n_bytes: int) -> bytes:
    """A finished cell's frame as big as ``n_bytes``: many pipe-fulls on its way back."""
    return b"\0" * n_bytes


def _in_recv(thread: threading.Thread) -> bool:
    """Whether ``thread`` is reading a frame from a pipe right now (multiprocessing's
    ``Connection._recv_bytes`` is on its stack)."""
    frame = sys._current_frames().get(thread.ident or -1)
    while frame is not None:
        if frame.f_code.co_name == "_recv_bytes":
            return True
        frame = frame.f_back
    return False


@pytest.mark.parametrize("trial", range(2))
def test_a_worker_stopped_while_sending_a_cell_back_does_not_hang_the_stop(trial):
    """Ctrl-C while a worker sends a finished cell back (64 MB, ~1,000 pipe-fulls): it is
    stopped half-way through the frame, once the pool's thread is reading it. The stop still
    returns; the reader is not left waiting for the rest of the frame (it did, for ever, until
    issue 24's eighth pass)."""
    ctx = sweep.multiprocessing.get_context("spawn")
    pool = cf.ProcessPoolExecutor(max_workers=1, mp_context=ctx, initializer=sweep._ignore_sigint)
    pool.submit(_result_of, 64 << 20)
    reader = pool._executor_manager_thread
    assert reader is not None
    waited = threading.Event()
    while not _in_recv(reader):
        assert reader.is_alive() and not waited.wait(0.0002)
    stopper = threading.Thread(target=sweep._stop_workers, args=(pool,), daemon=True)
    stopper.start()
    stopper.join(60)
    hung = stopper.is_alive()
    if hung:  # let the pool's thread go, or this process would wait for it at exit
        pool._result_queue._writer.close()  # type: ignore[attr-defined]
        stopper.join(60)
    assert not hung, "the stop waited for a frame that was never going to be finished"
    assert not any(p.is_alive() for p in (pool._processes or {}).values())
