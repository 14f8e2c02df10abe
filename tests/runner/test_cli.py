"""The scenebench command line, run as a user runs it (a subprocess)."""

import json
import signal
import subprocess
import sys

import httpx
import pytest

CMD = [sys.executable, "-m", "runner.cli"]


def sb(*args, timeout=120):
    return subprocess.run([*CMD, *args], capture_output=True, text=True, timeout=timeout)


def test_run_json_has_the_documented_keys():
    p = sb(
        "run",
        "--scenario",
        "default",
        "--mode",
        "pipelined",
        "--concurrency",
        "3",
        "--clock",
        "virtual",
        "--seed",
        "2",
        "--json",
    )
    assert p.returncode == 0, p.stderr
    d = json.loads(p.stdout)
    for key in (
        "mode",
        "concurrency",
        "makespan_s",
        "ttfs_s",
        "scenes_ok",
        "scenes_failed",
        "status",
        "http_429",
        "retries",
        "scene_order",
    ):
        assert key in d
    assert d["mode"] == "pipelined" and d["concurrency"] == 3
    assert d["scenes_ok"] + d["scenes_failed"] <= 10 and d["makespan_s"] > 0


def test_run_readable_summary_on_the_wall_clock():
    p = sb(
        "run",
        "--scenario",
        "default",
        "--mode",
        "serial",
        "--concurrency",
        "1",
        "--time-scale",
        "0.001",
    )
    assert p.returncode == 0, p.stderr
    assert "makespan" in p.stdout and "timeline" in p.stdout and "clock wall" in p.stdout


def test_sim_prints_mean_p50_p95():
    p = sb(
        "sim",
        "--scenario",
        "low-quota",
        "--mode",
        "serial",
        "--concurrency",
        "1",
        "--reps",
        "50",
        "--json",
    )
    assert p.returncode == 0, p.stderr
    d = json.loads(p.stdout)
    assert d["reps"] == 50 and d["engine"] == "simpy"
    assert d["makespan_s"]["p50"] <= d["makespan_s"]["p95"]
    txt = sb("sim", "--mode", "pipelined", "--concurrency", "3", "--reps", "300")
    assert "p95" in txt.stdout and "engine fast" in txt.stdout


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("run", "--mode", "turbo"), "--mode: invalid choice"),
        (("sim", "--concurrency", "3", "--upstream", "v9"), "--upstream: invalid choice"),
        (("sim", "--concurrency", "3", "--scenario", "nope"), "allowed: burst-429"),
        (("run", "--time-scale", "-1"), "--time-scale must be a number > 0"),
        (("serve", "--host", "0.0.0.0"), "--allow-remote"),
        (("frobnicate",), "invalid choice"),
    ],
)
def test_user_errors_are_one_line_exit_2(args, needle):
    p = sb(*args)
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], p.stderr
    assert "Traceback" not in p.stderr


def test_bad_scenario_file_names_the_field(tmp_path):
    f = tmp_path / "s.toml"
    f.write_text(
        '[classroom]\noutlines = 3\n[latency.content]\ndist = "lognormal"\n'
        'median_s = 2.0\nsigma = -1\n[latency.actions]\ndist = "constant"\n'
        'value_s = 1.0\n[latency.tts]\ndist = "constant"\nvalue_s = 1.0\n'
    )
    p = sb("sim", "--scenario", str(f), "--concurrency", "2", "--reps", "5")
    assert p.returncode == 2
    assert p.stderr.strip() == ("scenebench: error: latency.content.sigma: must be > 0, got -1")


def test_serve_listens_on_loopback_and_stops_on_ctrl_c():
    with subprocess.Popen(
        [
            *CMD,
            "serve",
            "--scenario",
            "default",
            "--port",
            "0",
            "--parallel-scene-concurrency",
            "3",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        try:
            line = proc.stdout.readline()
            url = line.split("listening on ")[1].split()[0]
            assert url.startswith("http://127.0.0.1:")
            health = httpx.get(f"{url}/api/health", timeout=5).json()
            assert health["generation"]["parallelSceneConcurrency"] == "3"
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=10)
    assert proc.returncode == 0


@pytest.mark.heavy
def test_sweep_recommend_and_report_from_the_command_line(tmp_path):
    out = tmp_path / "res"
    p = sb(
        "sweep",
        "--backend",
        "both",
        "--quotas",
        "0,2",
        "--concurrency",
        "1,3",
        "--reps",
        "20",
        "--real-reps",
        "1",
        "--workers",
        "1",
        "--out",
        str(out),
        "--no-progress",
    )
    assert p.returncode == 0, p.stderr
    assert f"results: {out}" in p.stdout and "recommended default" in p.stdout
    r = sb("recommend", "--results", str(out), "--json")
    assert r.returncode == 0, r.stderr
    rec = json.loads(r.stdout)
    assert rec["recommended"] in (1, 3) and "default" in rec["scenarios"]
    txt = sb("recommend", "--results", str(out))
    assert "rule:" in txt.stdout and "upstream claim" in txt.stdout
    (out / "REPORT.md").unlink()
    assert sb("report", str(out)).returncode == 0 and (out / "REPORT.md").is_file()
    again = sb("sweep", "--out", str(out), "--no-progress", "--backend", "sim")
    assert again.returncode == 2 and "--resume" in again.stderr


@pytest.mark.parametrize(
    "args",
    [
        ("recommend", "--results", "/nonexistent/x"),
        ("sweep", "--resume", "/nonexistent/x"),
        ("report", "/nonexistent/x"),
    ],
)
def test_missing_results_folder_is_one_line_exit_2(args):
    p = sb(*args)
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert "does not exist" in p.stderr


@pytest.mark.heavy
def test_validate_exact_from_the_command_line(capsys, monkeypatch):
    # in-process (``main`` is what the installed command runs): the second command's cells
    # are cells of the first (the same scenario under pr660 and pr788, the same runs and
    # seed), so each cell's comparison is kept by its arguments and not computed twice
    from runner.cli.commands import main
    from runner.experiments import validate

    done: dict[tuple[object, ...], tuple[object, tuple[int, int, int, str | None]]] = {}
    exact_cell = validate._exact_cell

    def once(sc, q, cfg, runs, seed):
        key = (sc.name, q, cfg, runs, seed)
        if key not in done or done[key][0] != sc:
            done[key] = (sc, exact_cell(sc, q, cfg, runs, seed))
        return done[key][1]

    monkeypatch.setattr(validate, "_exact_cell", once)

    def sb_in(*args):
        rc = main(list(args))
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(args, rc, out, err)

    # 7 quota settings x 21 (mode, c) cells, under each of the 5 upstream profiles
    p = sb_in("validate", "--exact", "--scenario", "low-quota", "--runs", "1", "--json")
    assert p.returncode == 0, p.stderr
    d = json.loads(p.stdout)
    assert d["ok"] and d["cells"] == 7 * 21 * 5 and d["http_429"] > 0
    assert len(done) == 7 * 21 * 5  # every cell computed once
    p = sb_in(
        "validate",
        "--exact",
        "--scenario",
        "low-quota",
        "--upstream",
        "pr660,pr788",
        "--runs",
        "1",
        "--json",
    )
    assert p.returncode == 0 and json.loads(p.stdout)["cells"] == 7 * 21 * 2
    assert len(done) == 7 * 21 * 5  # none computed again
    p = sb("validate", "--exact", "--upstream", "v9")
    assert p.returncode == 2 and "--upstream must be 'all' or a comma list" in p.stderr


@pytest.mark.parametrize(("raw", "c"), [("inf", 0), ("3abc", 3), ("1e1", 1), ("15", 10)])
def test_concurrency_flag_is_read_as_upstream_parses_the_knob(raw, c):
    p = sb("sim", "--mode", "pipelined", "--concurrency", raw, "--reps", "3", "--json")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["concurrency"] == c
