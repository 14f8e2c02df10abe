"""The learner's metrics in a results folder: cells, the QoE rule in recommend --json, the
figures and the REPORT.md section."""

import json
import math

from runner.cli.commands import main
from runner.experiments.sweep import SweepSpec
from sim import load_scenario
from tests.conftest import swept


def test_a_sweep_reports_the_qoe_rule_figures_and_section(tmp_path, capsys):
    spec = SweepSpec(
        scenarios=(load_scenario("default").to_mapping(),),
        backends=("sim",),
        modes=("pipelined",),
        concurrencies=(1, 3),
        quotas=(1, 0),
        sim_reps=30,
        seed=3,
        adaptives=("off", "gate"),
    )
    d = swept(spec, out=tmp_path / "r", workers=1, progress=False)
    for f in ("figures/default-qoe.png", "figures/default-qoe.svg"):
        assert (d / f).is_file(), f
    report = (d / "REPORT.md").read_text()
    assert "## What learners feel" in report and "max(5%, 1 s)" in report
    assert main(["recommend", "--results", str(d), "--json"]) == 0
    rec = json.loads(capsys.readouterr().out)
    q = rec["qoe"]
    assert q["rule"]["stall_tol_rel"] == 0.05 and "text" in q["rule"]
    gate = q["scenarios"]["default"]["gate"]
    for quota in ("0", "1"):
        e = gate["by_quota"][quota]
        for k in ("startup_s", "stall_ratio", "p_any_failed", "speedup"):
            assert set(e[k]) == {"mean", "lo", "hi"}, k
        assert e["startup_s"]["lo"] <= e["startup_s"]["mean"] <= e["startup_s"]["hi"]
    # the fixed cap fails every run on a 1-in-flight key: the rule keeps serial there
    off1 = q["scenarios"]["default"]["off"]["by_quota"]["1"]
    assert off1["concurrency"] == 1 and off1["rejected"] == {"3": "failures"}
    assert gate["by_quota"]["0"]["concurrency"] == 3 and not math.isnan(
        gate["by_quota"]["0"]["speedup"]["mean"]
    )


def test_sim_and_run_json_report_the_learner_metrics(capsys):
    keys = {"startup_s", "stall_s", "stalls_mean", "stall_ratio", "last_scene_s"}
    assert (
        main(
            [
                "sim",
                "--scenario",
                "low-quota",
                "--mode",
                "pipelined",
                "--concurrency",
                "3",
                "--adaptive",
                "gate",
                "--reps",
                "5",
                "--json",
            ]
        )
        == 0
    )
    s = json.loads(capsys.readouterr().out)
    assert keys <= set(s)
    assert (
        main(
            [
                "run",
                "--scenario",
                "default",
                "--mode",
                "pipelined",
                "--concurrency",
                "3",
                "--clock",
                "virtual",
                "--json",
            ]
        )
        == 0
    )
    r = json.loads(capsys.readouterr().out)
    for k in ("startup_s", "stall_s", "stalls", "stall_ratio", "last_scene_s"):
        assert k in r
    assert r["startup_s"] == r["ttfs_s"]  # the foreground scene is the first the learner plays


def test_a_folder_of_the_previous_schema_is_refused_with_its_reason(tmp_path):
    import pytest

    from runner.experiments.sweep import ResultsError, load_runs

    spec = SweepSpec(
        scenarios=(load_scenario("default").to_mapping(),),
        backends=("sim",),
        concurrencies=(2,),
        quotas=(0,),
        sim_reps=4,
    )
    d = swept(spec, out=tmp_path / "r", workers=1, progress=False)
    meta = json.loads((d / "metadata.json").read_text())
    meta["schema_version"] = 2
    (d / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(ResultsError) as e:
        load_runs(d)
    msg = str(e.value)
    assert "schema version 2" in msg and "learner's metrics" in msg and "\n" not in msg
