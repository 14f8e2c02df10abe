"""Issue 16: every output tells the truth and every failure says why.

One definition of a run that counts, used everywhere; no silent filtering; strict JSON;
failure reasons; one-line errors for files, folders and clusters; provenance.
"""

from __future__ import annotations

import json
import math
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import matplotlib
import pandas as pd
import pytest

from runner.cli import commands as cli
from runner.experiments import gate
from runner.experiments.sweep import default_spec, in_source_tree
from runner.report import figures
from runner.report import sections as reporting
from runner.store.cells import cell_table
from runner.store.counts import FAILURE_BUDGET_PP, counts_mask, fails_too_often, paired_speedup
from runner.store.stamps import DEFAULT_UPSTREAM, dumps, provenance, upstream_of
from runner.world.failures import FailureReason, scene_failures
from runner.world.run import run
from sim import Quota, RunConfig
from tests.conftest import const_scenario, swept

matplotlib.use("Agg")

CMD = [sys.executable, "-m", "runner.cli"]
ROOT = Path(__file__).resolve().parents[2]


def sb(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CMD, *args], capture_output=True, text=True, timeout=timeout)


def strict_loads(text: str) -> object:
    """json.loads that refuses NaN, Infinity and -Infinity (as JSON.parse does)."""

    def refuse(c: str) -> None:
        raise ValueError(f"non-standard JSON constant {c!r}")

    return json.loads(text, parse_constant=refuse)


def closed_port() -> int:
    """A loopback port with nothing listening (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- one definition of a run that counts ------------------------------------------------
def _runs(rows: list[tuple[int, float, str, int]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["classroom", "makespan_s", "status", "scenes_failed"])


def test_a_run_counts_only_when_it_generated_every_scene():
    runs = _runs([(0, 1.0, "completed", 0), (1, 1.0, "completed", 2), (2, 1.0, "paused", 1)])
    assert list(counts_mask(runs)) == [True, False, False]


def test_paired_speedup_uses_only_pairs_that_count_in_both():
    serial = _runs([(0, 100.0, "completed", 0), (1, 90.0, "completed", 0), (2, 80.0, "paused", 1)])
    # classroom 1 completed with a failed scene: it must not count, though status is completed
    cell = _runs([(0, 50.0, "completed", 0), (1, 10.0, "completed", 1), (2, 40.0, "completed", 0)])
    sp = paired_speedup(cell, serial)
    assert sp["pairs"] == 1  # only classroom 0 counts in both
    assert sp["speedup"] == pytest.approx(100.0 / 50.0)
    none = paired_speedup(cell.assign(status="paused"), serial)
    assert none["pairs"] == 0 and math.isnan(none["speedup"])


def test_fails_too_often_is_serial_plus_the_budget():
    budget = FAILURE_BUDGET_PP / 100
    assert not fails_too_often(0.02 + budget, 0.02)  # at the budget: fine
    assert fails_too_often(0.02 + budget + 0.001, 0.02)
    assert fails_too_often(0.5, math.nan)  # no serial to compare with: not plain


def test_cell_table_applies_the_shared_rule():
    n = 100
    rows = []
    for r in range(n):
        rows.append(("serial", 1, r, 100.0, "completed", 0))
        # c=3: 40 runs complete with a failed scene (status completed!) and are short
        bad = r < 40
        rows.append(("pipelined", 3, r, 10.0 if bad else 50.0, "completed", 1 if bad else 0))
    runs = pd.DataFrame(
        rows, columns=["mode", "concurrency", "classroom", "makespan_s", "status", "scenes_failed"]
    ).assign(backend="sim", scenario="s", quota=0, ttfs_s=1.0, http_429=0, retries=0)
    cells = cell_table(runs).set_index("mode")
    c3 = cells.loc["pipelined"]
    assert c3["pairs"] == 60 and c3["speedup"] == pytest.approx(2.0)  # 100 / 50, not 100 / 34
    assert c3["p_any_failed"] == pytest.approx(0.4) and bool(c3["fails_too_often"])
    assert not bool(cells.loc["serial", "fails_too_often"])


# -- report, recommendation, figures and notebook agree ---------------------------------
@pytest.fixture(scope="module")
def tight_sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default scenario on a 3-in-flight key and an unlimited one: pipelined c needs
    c + 1 LLM slots and within-scene TTS c TTS slots, so at c >= 3 on the 3-in-flight key
    runs fail scenes (the cells the shared rule must flag)."""
    spec = default_spec(
        quick=True,
        scenarios=["default"],
        backends=["sim"],
        sim_reps=200,
        quotas=[3, 0],
        concurrencies=[1, 3, 5],
    )
    return swept(spec, out=tmp_path_factory.mktemp("q3") / "res", workers=1, progress=False)


def _failing(folder: Path) -> pd.DataFrame:
    cells = pd.read_csv(folder / "cells.csv")
    return cells[(cells["backend"] == "sim") & cells["fails_too_often"].astype(bool)]


def test_no_speedup_is_shown_plainly_where_runs_fail(tight_sweep: Path):
    cells = pd.read_csv(tight_sweep / "cells.csv")
    bad = _failing(tight_sweep)
    assert len(bad) >= 1  # the 3-in-flight key at c >= 3
    for x in bad.itertuples():  # the flag is the rule, nothing else
        assert x.p_any_failed > x.p_any_failed_serial + FAILURE_BUDGET_PP / 100
    report = (tight_sweep / "REPORT.md").read_text()
    rec = strict_loads((tight_sweep / "recommendation.json").read_text())
    assert isinstance(rec, dict)
    per = rec["scenarios"]["default"]
    table = {t["concurrency"]: t for t in per["table"]}
    for x in bad.itertuples():
        label = "unlimited" if x.quota == 0 else f"{x.quota} in flight"
        row = next(
            line
            for line in report.splitlines()
            if line.startswith(f"| default | {label} | {x.mode} | {x.concurrency} |")
        )
        assert row.rstrip(" |").endswith("†") or "no run completed" in row, row
        if x.mode == "pipelined":
            assert per["by_quota"][str(x.quota)]["concurrency"] != x.concurrency
            assert not table[x.concurrency]["admissible"]
    # every quota of the sweep is in the evidence table, and the table says what it shows
    n_sim = int((cells["backend"] == "sim").sum())
    assert f"{n_sim} cells: every quota (3 in flight, unlimited)" in report
    assert "| default | unlimited | pipelined | 5 |" in report


def test_figures_draw_failing_cells_hollow(tight_sweep: Path, monkeypatch: pytest.MonkeyPatch):
    calls: list[tuple[list[float], list[bool]]] = []
    real = figures.plot_marked

    def spy(ax, x, y, fails, p, **kw):  # type: ignore[no-untyped-def]
        calls.append(([round(float(v)) for v in x], [bool(f) for f in fails]))
        return real(ax, x, y, fails, p, **kw)

    monkeypatch.setattr(figures, "plot_marked", spy)
    reporting.render_results(tight_sweep)
    flagged = {(c, f) for xs, fs in calls for c, f in zip(xs, fs, strict=True)}
    for x in _failing(tight_sweep).itertuples():
        assert (x.concurrency, True) in flagged
    # the hollow marker itself: a white face where the cell fails too often
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    assert figures.plot_marked(ax, [1, 2], [1.0, 2.5], [False, True], [0.0, 0.9], color="C0")
    hollow = [ln for ln in ax.lines if ln.get_markerfacecolor() == "white" and len(ln.get_xdata())]
    assert [list(ln.get_xdata()) for ln in hollow] == [[2.0]]
    assert [t.get_text() for t in ax.texts] == ["90%"]
    plt.close(fig)


def test_a_table_speedup_is_plain_only_where_runs_count():
    x = {"speedup": 2.5, "speedup_lo": 2.4, "speedup_hi": 2.6, "pairs": 3}
    assert reporting._speedup_cell({**x, "fails_too_often": True}) == "(2.50, 2.40–2.60)†"
    assert reporting._speedup_cell({**x, "fails_too_often": False}) == "2.50 (2.40–2.60)"
    none = {"speedup": math.nan, "pairs": 0, "fails_too_often": True}
    assert reporting._speedup_cell(none) == "– (no run completed)"


# -- strict JSON and provenance ---------------------------------------------------------
@pytest.mark.heavy
def test_every_json_file_of_a_quick_sweep_is_strict_and_names_its_provenance(tmp_path: Path):
    out = tmp_path / "quick"
    p = sb(
        "sweep",
        "--quick",
        "--quotas",
        "5,0",
        "--concurrency",
        "1,5",
        "--reps",
        "60",
        "--real-reps",
        "2",
        "--workers",
        "1",
        "--out",
        str(out),
        "--no-progress",
    )
    assert p.returncode == 0, p.stderr
    files = sorted(out.rglob("*.json"))
    assert {f.name for f in files} >= {"metadata.json", "recommendation.json", "failed_cells.json"}
    for f in files:
        strict_loads(f.read_text())  # raises on NaN / Infinity
    meta = strict_loads((out / "metadata.json").read_text())
    rec = strict_loads((out / "recommendation.json").read_text())
    assert isinstance(meta, dict) and isinstance(rec, dict)
    for prov in (meta["provenance"], rec["provenance"]):
        assert prov["scenario"] == ["default"] and prov["upstream"] == DEFAULT_UPSTREAM
        assert prov["scenebench_version"] and prov["scenebench_commit"]
    report = (out / "REPORT.md").read_text()
    assert f"models upstream {DEFAULT_UPSTREAM}" in report.splitlines()[2]
    r = sb("recommend", "--results", str(out), "--json")
    assert r.returncode == 0 and strict_loads(r.stdout)


def test_dumps_writes_null_for_undefined_numbers():
    text = dumps({"a": math.nan, "b": [math.inf, 1.5], "c": (1, 2)})
    assert strict_loads(text) == {"a": None, "b": [None, 1.5], "c": [1, 2]}


def test_upstream_is_read_through_one_helper():
    assert upstream_of(SimpleNamespace(name="x")) == DEFAULT_UPSTREAM  # says nothing: default
    fake = SimpleNamespace(name="x", client=SimpleNamespace(upstream="pr788"))
    assert upstream_of(fake) == "pr788"
    assert upstream_of(SimpleNamespace(upstream="pr788")) == "pr788"  # a result
    assert provenance(fake)["upstream"] == "pr788"


def test_run_and_sim_outputs_name_scenario_upstream_and_version():
    r = sb("run", "--mode", "pipelined", "--clock", "virtual", "--concurrency", "3", "--json")
    assert r.returncode == 0, r.stderr
    d = strict_loads(r.stdout)
    assert isinstance(d, dict)
    assert d["provenance"]["scenario"] == "default"
    assert d["provenance"]["upstream"] == DEFAULT_UPSTREAM
    # seed 0 fails scene 8 on a random 5xx of a clip (TTS is not retried): it says so
    assert len(d["scene_failures"]) == d["scenes_failed"] == len(d["failed_orders"])
    for f in d["scene_failures"]:
        assert f["order"] in d["failed_orders"] and f["step"] in ("content", "actions", "tts")
        assert f["summary"] == f"{f['step']}: {f['reason']} after {f['attempts']} attempt" + (
            "" if f["attempts"] == 1 else "s"
        )
    t = sb("sim", "--mode", "pipelined", "--concurrency", "3", "--reps", "20")
    assert t.stdout.splitlines()[0].startswith("scenario default · models upstream ")
    j = strict_loads(sb("sim", "--concurrency", "3", "--reps", "20", "--json").stdout)
    assert isinstance(j, dict) and j["provenance"]["scenebench_version"]
    assert j["provenance"]["upstream"] == "runs"  # the commands follow today's upstream
    today = sb("sim", "--concurrency", "3", "--runs", "4")
    assert today.stdout.splitlines()[0].startswith("scenario default · models upstream runs")


# -- the gate refuses undefined metrics --------------------------------------------------
def _gate_json(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    base: dict[str, float | None],
    now: dict[str, float],
) -> tuple[int, dict[str, object]]:
    p = tmp_path / "baseline.json"
    p.write_text(dumps({"gate_version": gate.GATE_VERSION, "metrics": base}))
    measured = {"metrics": now, "notes": [], "wall_skipped": True, "provenance": provenance([])}
    monkeypatch.setattr(gate, "measure", lambda wall=True: measured)
    rc = cli.main(["gate", "--baseline", str(p), "--json", "--no-wall"])
    out = strict_loads(capsys.readouterr().out)
    assert isinstance(out, dict)
    return rc, out


def test_gate_fails_on_a_metric_undefined_now_or_in_the_baseline(monkeypatch, capsys, tmp_path):
    name = "model q=3 pipelined c=3 speedup"
    rc, out = _gate_json(monkeypatch, capsys, tmp_path, {name: 2.0}, {name: math.nan})
    assert rc == 1 and out["ok"] is False
    (m,) = out["metrics"]  # type: ignore[misc]
    assert m["now"] is None and m["ok"] is False and "undefined now" in m["note"]
    rc, out = _gate_json(monkeypatch, capsys, tmp_path, {name: None}, {name: 2.0})
    assert rc == 1 and "undefined in the baseline" in out["metrics"][0]["note"]  # type: ignore[index]
    rc, out = _gate_json(monkeypatch, capsys, tmp_path, {name: 2.0}, {name: 2.0})
    assert rc == 0 and out["ok"] is True


def test_gate_never_writes_an_undefined_metric(tmp_path: Path):
    with pytest.raises(ValueError, match="undefined"):
        gate.save_baseline({"metrics": {"x speedup": math.nan}, "notes": []}, tmp_path / "b.json")
    assert not (tmp_path / "b.json").exists()


# -- failures say why -------------------------------------------------------------------
def test_a_failed_scene_reports_step_status_reason_and_attempts():
    # every LLM call answers 503: content fails after 1 + max_retries attempts
    sc = const_scenario(n=3, quota_llm=Quota(p_5xx=1.0, status_5xx=503))
    pipes = []

    async def keep(pipe):  # type: ignore[no-untyped-def]
        pipes.append(pipe)

    res = run(sc, RunConfig.of("serial", 1), clock="virtual", hook=keep)[0]
    assert res.failed_orders == (0,) and res.status == "paused"
    (f,) = scene_failures(res.failed_orders, pipes[0].attempt_failures)
    attempts = sc.client.client_policy(0, False).max_retries + 1
    assert (f.order, f.step, f.status, f.attempts) == (0, "content", 503, attempts)
    assert f.line().startswith("content: HTTP 503") and f.line().endswith(f"{attempts} attempts")


def test_a_clip_is_found_by_its_audio_id_in_either_form():
    from runner.world.failures import failure_from_attempt

    for audio in ("tts_sb-4-o2-s1", "tts_s2_sb-4-o2-s1"):
        f = failure_from_attempt("/api/generate/tts", {"audioId": audio}, 503, None)
        assert f is not None and (f.step, f.order, f.clip, f.reason) == ("tts", 2, 1, "HTTP 503")


def test_scene_failures_counts_the_attempts_of_the_failing_call():
    fs = [
        FailureReason("content", 2, 0, 429, "HTTP 429"),  # retried, then content succeeded
        FailureReason("tts", 2, 1, -1, "connection refused"),
        FailureReason("tts", 4, 0, 0, "timed out"),
    ]
    by = {f.order: f for f in scene_failures([2, 4, 7], fs)}
    assert (by[2].step, by[2].attempts, by[2].reason) == ("tts", 1, "connection refused")
    assert by[4].line() == "tts: timed out after 1 attempt"
    assert by[7].attempts == 0  # nothing recorded: said so, not invented


def test_run_against_nothing_listening_is_one_line_exit_1():
    url = f"http://127.0.0.1:{closed_port()}"
    for extra in (["--concurrency", "3"], []):  # without it, /api/health is needed too
        t0 = time.monotonic()
        p = sb("run", "--base-url", url, *extra, timeout=30)
        assert p.returncode == 1, p.stderr
        lines = p.stderr.strip().splitlines()
        assert len(lines) == 1 and "connection refused" in lines[0] and url in lines[0]
        assert time.monotonic() - t0 < 15
    bad = sb("run", "--base-url", "localhost:8000")
    assert bad.returncode == 2 and "--base-url" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1


# -- files, folders, clusters -----------------------------------------------------------
@pytest.mark.heavy
def test_file_and_cluster_errors_are_one_line_exit_2_and_leave_nothing(tmp_path: Path):
    out = tmp_path / "never"
    cases = [
        ("sweep", "--out", str(ROOT / "README.md"), "--backend", "sim"),
        ("calibrate", str(ROOT / "notebooks" / "example_trace.csv"), "--out", "/no/such/x.toml"),
        (
            "sweep",
            "--backend",
            "sim",
            "--quotas",
            "0",
            "--concurrency",
            "1,2",
            "--reps",
            "5",
            "--dask-scheduler",
            f"tcp://127.0.0.1:{closed_port()}",
            "--out",
            str(out),
        ),
        ("sweep", "--out", str(ROOT / "notebooks"), "--backend", "sim"),
        ("sweep", "--out", str(ROOT / "sim" / "new-results"), "--backend", "sim"),
    ]
    for args in cases:
        t0 = time.monotonic()
        p = sb(*args, timeout=60)
        took = time.monotonic() - t0
        lines = p.stderr.strip().splitlines()
        assert p.returncode == 2 and len(lines) == 1, (args, p.stderr)
        assert "Traceback" not in p.stderr and took < 15, (args, took)
    assert not out.exists()  # the unreachable scheduler left no half-made folder
    assert not (ROOT / "sim" / "new-results").exists()


def test_the_source_tree_is_recognised():
    assert in_source_tree(ROOT) and in_source_tree(ROOT / "notebooks" / "x")
    assert in_source_tree(ROOT / "runner") and not in_source_tree(ROOT / "results" / "x")
    assert not in_source_tree(Path("/tmp/elsewhere"))


def test_an_out_folder_that_cannot_be_written_is_refused(tmp_path: Path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    spec = default_spec(quick=True, scenarios=["default"], backends=["sim"], sim_reps=2)
    from runner.experiments.sweep import ResultsError

    with pytest.raises(ResultsError, match="cannot write the results folder"):
        swept(spec, out=blocker / "sub" / "res", workers=1, progress=False)
    assert blocker.read_text() == "x" and not (tmp_path / "sub").exists()


# -- messages and progress ---------------------------------------------------------------
def test_errors_name_the_program_and_the_flag_once():
    p = sb("sim", "--concurrency", "3", "--reps", "x")
    (line,) = p.stderr.strip().splitlines()
    assert line == "scenebench sim: error: --reps must be an integer >= 1, got 'x'"


@pytest.mark.heavy
def test_no_progress_bar_into_a_pipe():
    p = sb("validate", "--exact", "--scenario", "burst-429", "--upstream", "pr788", "--runs", "1")
    assert p.returncode == 0, p.stderr
    assert "\r" not in p.stderr and "cell/s" not in p.stderr
    first = p.stdout.splitlines()[0]
    assert first.startswith("scenario burst-429") and " · models upstream " in first


def test_scenarios_cite_public_sources():
    for f in sorted((ROOT / "sim" / "scenarios").glob("*.toml")):
        text = f.read_text()
        assert "provider-facts" not in text and "shared/reference" not in text, f.name
        assert "https://" in text, f"{f.name} cites no public source"


# -- Ctrl-C -----------------------------------------------------------------------------
@pytest.mark.multicore
def test_ctrl_c_prints_the_folder_first_and_one_resume_line_at_the_end(tmp_path: Path):
    """As ``timeout -s INT`` or a terminal does: SIGINT to the whole process group (the
    workers too), a few seconds into a sweep with real-pipeline cells running."""
    import os
    import signal

    out = tmp_path / "res"
    proc = subprocess.Popen(
        [*CMD, "sweep", "--quick", "--reps", "3000", "--out", str(out), "--workers", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first.startswith(f"results: {out} ("), first  # printed before any cell ran
        time.sleep(4)
        os.killpg(proc.pid, signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    kept = len(list((out / "cells").glob("*.parquet")))
    assert lines[0] == (
        f"scenebench sweep: interrupted; {kept} finished cell(s) kept in {out}; "
        f"continue with: scenebench sweep --resume {out}"
    )
    for noise in ("Task was destroyed", "Event loop is closed", "Traceback", "never awaited"):
        assert noise not in stderr + stdout


def test_a_health_endpoint_without_an_answer_is_one_line_exit_1():
    """A server that is not the provider (404 where the profile's client reads the knob,
    /api/server-providers): without --concurrency the run cannot know
    PARALLEL_SCENE_CONCURRENCY and says so; it does not silently run serial."""
    from starlette.applications import Starlette

    from runner.world.fake_provider import ServerThread

    with ServerThread(Starlette()) as srv:  # every route answers 404
        p = sb("run", "--base-url", srv.base_url, timeout=60)
    assert p.returncode == 1, p.stderr
    (line,) = p.stderr.strip().splitlines()
    assert "/api/server-providers answered HTTP 404" in line and "--concurrency" in line
