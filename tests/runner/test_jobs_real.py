"""The server path through the real pipeline: equal to the model under the virtual clock, and
on the command line (sim --client server, validate --client server, capacity)."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pytest

from runner.report.server_capacity import server_lines
from runner.world.job_port import run_jobs, run_keygate_tenants, validate_jobs_exact
from sim import Quota, load_scenario, profile
from sim.jobs import simulate_jobs, simulate_keygate_tenants
from tests.conftest import const_scenario

CMD = [sys.executable, "-m", "runner.cli"]


def sb(*args, timeout=300):
    return subprocess.run([*CMD, *args], capture_output=True, text=True, timeout=timeout)


def _key(e):
    return (e[7], e[0], e[1], e[2], e[3], e[4])


@pytest.mark.parametrize("name,q", [("default", 3), ("burst-429", 2), ("low-quota", None)])
@pytest.mark.parametrize("mode,c", [("serial", 1), ("pipelined", 3)])
@pytest.mark.parametrize("gate", [False, True])
def test_real_server_jobs_equal_the_model(name, q, mode, c, gate):
    sc = load_scenario(name)
    if q is not None:
        sc = sc.with_quota(llm_inflight=q, tts_inflight=q)
    kw = {"jobs": 6, "arrival_per_hour": 60.0, "seed": 4, "key_gate": gate}
    a = simulate_jobs(sc, mode, c, **kw)
    b = run_jobs(sc, mode, c, **kw)
    assert a.records == b.records
    assert sorted(a.log, key=_key) == sorted(b.log, key=_key)
    assert a.summary() == b.summary()


def test_real_server_job_alone_equals_the_closed_form():
    """Constant latencies, one job on a free key: N·(C + A) serial, then N·k clips one at a
    time (the fake provider's timeline, virtual clock)."""
    client = dataclasses.replace(profile("pr788"), jitter_u=0.0)
    sc = const_scenario(3, 20.0, 5.0, 2.0, 2, client=client)
    (r,) = run_jobs(sc, "serial", 1, arrivals_s=[4.5]).records
    assert r.latency_s == pytest.approx(3 * 25.0 + 6 * 2.0, abs=1e-9)
    assert r.arrival_s == 4.5 and r.scenes_ok == 3 and not r.failed


def test_real_server_jobs_multiply_the_budgets():
    """Before #788 (pr660) the AI SDK's 3 attempts sit inside each of the job's 6; since #788
    the model is called with maxRetries: 0 and the job makes 6 attempts per step."""
    q = Quota(p_429=1.0, retry_after_s=None)
    before = dataclasses.replace(profile("pr660"), jitter_u=0.0)
    (r,) = run_jobs(
        const_scenario(2, client=before, quota_llm=q), "serial", 1, arrivals_s=[0.0]
    ).records
    assert r.requests == r.http_429 == 18 * 2
    assert r.latency_s == pytest.approx(2 * (6 * (2 + 4) + 31), abs=1e-9)
    since = dataclasses.replace(profile("pr788"), jitter_u=0.0)
    (r,) = run_jobs(
        const_scenario(2, client=since, quota_llm=q), "serial", 1, arrivals_s=[0.0]
    ).records
    assert r.requests == r.http_429 == 6 * 2
    assert r.latency_s == pytest.approx(2 * 31, abs=1e-9)


@pytest.mark.parametrize("mode,c", [("serial", 1), ("pipelined", 3), ("hybrid", 2)])
def test_real_keygate_tenants_equal_the_model(mode, c):
    sc = load_scenario("burst-429")
    kw = {"seed": 1, "run_id": 3, "stagger_s": 4.0}
    a = simulate_keygate_tenants(sc, mode, c, 3, **kw)
    b = run_keygate_tenants(sc, mode, c, 3, **kw)
    strip = [dataclasses.replace(x, world="", requests_log=()) for x in a]
    assert strip == [dataclasses.replace(x, world="", requests_log=()) for x in b]


def test_validate_jobs_exact_reports_agreement():
    rep = validate_jobs_exact([load_scenario("low-quota")], quotas=(None,), cells=(("serial", 1),))
    assert rep["ok"] and rep["cells"] == 3 and rep["http_429"] > 0


def test_sim_client_server_prints_the_done_when_keys():
    p = sb(
        *("sim", "--scenario", "server-key5", "--client", "server", "--arrival-per-hour", "20"),
        *("--jobs", "200", "--mode", "pipelined", "--concurrency", "3", "--json"),
    )
    assert p.returncode == 0, p.stderr
    d = json.loads(p.stdout)
    lat = d["job_latency_s"]
    assert lat["p50"] <= lat["p95"] <= lat["p99"]
    assert d["jobs"] == 200 and 0 <= d["failed_jobs"] <= 200 and d["jobs_per_hour"] > 0
    assert d["concurrency"] == 3 and d["key"]["llm"]["utilisation"] is not None
    browser = sb(
        "sim", "--mode", "pipelined", "--scenario", "server-key5", "--concurrency", "3",
        "--reps", "5", "--json",
    )  # fmt: skip
    assert "makespan_s" in json.loads(browser.stdout)  # --client browser: today's default


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("--client", "server"), "--arrival-per-hour: required"),
        (("--client", "server", "--arrival-per-hour", "0"), "--arrival-per-hour must be"),
        (("--client", "server", "--arrivals", "/nonexistent/x"), "--arrivals: cannot read"),
        (("--client", "server", "--arrival-per-hour", "5", "--jobs", "0"), "--jobs must be"),
        (
            (
                "--key-inflight",
                "3",
            ),
            "--key-inflight: only with --client server or --key-gate",
        ),
    ],
)
def test_server_user_errors_are_one_line_exit_2(args, needle):
    p = sb("sim", "--mode", "pipelined", "--concurrency", "3", *args)
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], p.stderr


def test_browser_tenants_with_the_key_wide_gate():
    p = sb(
        *("sim", "--key-inflight", "3", "--tenants", "3", "--key-gate", "--concurrency", "3"),
        *("--reps", "4", "--seed", "11", "--json"),
    )
    assert p.returncode == 0, p.stderr
    d = json.loads(p.stdout)
    assert d["reps"] == 12 and d["key_gate"] and d["http_429_mean"] == 0.0
    sc = load_scenario("default").with_quota(llm_inflight=3, tts_inflight=3)
    rs = [
        x
        for r in range(4)
        for x in simulate_keygate_tenants(sc, "pipelined", 3, 3, seed=11, run_id=r)
    ]
    assert d["makespan_s"]["mean"] == pytest.approx(sum(r.makespan_s for r in rs) / 12)


def test_replayed_arrivals_from_a_file(tmp_path):
    f = tmp_path / "arrivals.txt"
    f.write_text("0\n30\n60.5\n")
    p = sb(
        *("sim", "--scenario", "server-key5", "--client", "server", "--arrivals", str(f)),
        *("--mode", "serial", "--concurrency", "1", "--json"),
    )
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["jobs"] == 3
    p = sb(
        *("sim", "--scenario", "server-key5", "--client", "server", "--arrivals", str(f)),
        *("--mode", "serial", "--concurrency", "1", "--json", "--per-job"),
    )
    jobs = json.loads(p.stdout)["per_job"]
    assert [j["arrival_s"] for j in jobs] == [0.0, 30.0, 60.5]
    assert {"latency_s", "scenes_failed", "clips_failed", "http_429"} <= set(jobs[0])


@pytest.mark.heavy
def test_validate_and_capacity_from_the_command_line(tmp_path):
    p = sb("validate", "--exact", "--client", "server", "--scenario", "low-quota", "--json")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["ok"] is True
    (tmp_path / "REPORT.md").write_text("# Report\n\n## Other\ntext\n")
    p = sb(
        *("capacity", "--scenario", "default", "--key-inflight", "5", "--concurrency", "1,3"),
        *("--quotas", "5", "--jobs", "20", "--tenant-reps", "2", "--out", str(tmp_path)),
    )
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "capacity-default.png").stat().st_size > 0
    rep = (tmp_path / "REPORT.md").read_text()
    assert "## Other" in rep and rep.count("## Server path: key capacity") == 1
    assert "**server path, key 5 in flight**" in rep
    # the shared-key table is the browser's classrooms (not server jobs) on 3-in-flight keys
    sc = load_scenario("default").with_quota(llm_inflight=3, tts_inflight=3)
    rs = [x for r in range(2) for x in simulate_keygate_tenants(sc, "pipelined", 3, 3, run_id=r)]
    mean = sum(r.makespan_s for r in rs) / len(rs)
    p_failed = sum(r.scenes_failed > 0 for r in rs) / len(rs)
    row = next(ln for ln in rep.splitlines() if ln.startswith("| 3 | ") and "%, " in ln)
    assert row.endswith(f"| {p_failed:.1%}, {mean:.0f} s |")
    (line,) = server_lines(tmp_path)  # what `scenebench recommend` prints for the server path
    assert line.startswith("**server path, key 5 in flight**: PARALLEL_SCENE_CONCURRENCY = ")
    sb(*("capacity", "--concurrency", "1", "--quotas", "5", "--jobs", "4", "--tenant-reps", "0"),
       *("--out", str(tmp_path)))  # fmt: skip
    assert (tmp_path / "REPORT.md").read_text().count("## Server path: key capacity") == 1
