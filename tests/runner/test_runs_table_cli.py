"""``scenebench sim --upstream runs`` and a scenario's ``[runs]`` table: the table gives the
cell, a flag given overrides it, the flags keep upstream's defaults."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from sim.scenario import load_scenario
from tests.sim.test_runs_table import _with_runs


def test_the_cli_reads_the_table_and_a_flag_overrides_it(tmp_path: Path) -> None:
    path = str(_with_runs(tmp_path))
    cmd = [sys.executable, "-m", "runner.cli", "sim", "--upstream", "runs", "--scenario", path]
    cmd += ["--concurrency", "2", "--runs", "3", "--json"]
    got = []
    for extra in ([], ["--max-concurrent", "5"]):
        p = subprocess.run([*cmd, *extra], capture_output=True, text=True, timeout=120)
        assert p.returncode == 0, p.stderr
        s = json.loads(p.stdout)["summary"]
        got.append((s["max_concurrent"], s["per_owner"]))
    assert got == [(3, 1), (5, 1)]


def test_only_the_flags_given_override_the_table(tmp_path: Path) -> None:
    """``sim --upstream runs``'s flags keep upstream's defaults (other commands read them as
    before); the scenario's table applies to each flag not given."""
    import argparse

    from runner.cli.runs_sim import add_runs_args, runs_config_from_args

    p = argparse.ArgumentParser()
    add_runs_args(p)
    sc = load_scenario(_with_runs(tmp_path))
    extra = {"concurrency": 2, "arrival_per_hour": None, "arrivals": None}
    for argv, want in (
        ([], (3, 1, "countdown", True)),
        (["--per-owner", "2", "--confirm", "auto"], (3, 2, "auto", True)),
    ):
        a = p.parse_args(argv, argparse.Namespace(**extra))
        cfg = runs_config_from_args(a, sc)
        got = (cfg.max_concurrent, cfg.per_owner, cfg.settings.confirm)
        assert (*got, cfg.settings.free_on_give_up) == want
    bare = p.parse_args([], argparse.Namespace(**extra))
    assert (bare.max_concurrent, bare.per_owner, bare.confirm, bare.free_on_give_up) == (
        4,
        2,
        "auto",
        False,
    )
    off = load_scenario("default")  # no table: --free-on-give-up turns it on
    given = p.parse_args(["--free-on-give-up"], argparse.Namespace(**extra))
    assert runs_config_from_args(given, off).settings.free_on_give_up is True
