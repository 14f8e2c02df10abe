"""``--gate-order``: the key-wide gate's waiting order as a setting (``RunsConfig.gate_order``),
checked once at the edge and carried to the gates in every driver; on ``sweep`` an axis."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from runner.experiments.runs_sweep import RunsCell, RunsSweepSpec, runs_grid, runs_spec
from runner.world.runs_port import run_runs_real
from tests.sim.test_run_gate import S, later_outline_us, later_run_cell

CMD = [sys.executable, "-m", "runner.cli"]


def sb(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CMD, *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    "args",
    [
        ("sim", "--upstream", "runs", "--concurrency", "2", "--runs", "2", "--adaptive", "gate"),
        ("run", "--upstream", "runs", "--concurrency", "2", "--runs", "2", "--adaptive", "gate"),
        ("validate", "--exact", "--upstream", "runs", "--adaptive", "gate", "--quick"),
        ("sweep", "--upstream", "runs", "--adaptive", "gate", "--quick"),
    ],
)
def test_a_bad_gate_order_exits_2_in_one_line(args: tuple[str, ...], tmp_path: Path) -> None:
    out = ("--out", str(tmp_path / "s")) if args[0] == "sweep" else ()
    p = sb(*args, *out, "--gate-order", "lifo")
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 2 and len(lines) == 1, p.stderr
    assert "--gate-order" in lines[0] and "need, need-arrival, tiers, fifo" in lines[0]


def test_a_gate_order_without_the_gate_is_refused(tmp_path: Path) -> None:
    for args in (
        ("sim", "--upstream", "runs", "--concurrency", "2", "--runs", "2"),
        ("sweep", "--upstream", "runs", "--quick", "--out", str(tmp_path / "s")),
    ):
        p = sb(*args, "--gate-order", "need")
        lines = p.stderr.strip().splitlines()
        assert p.returncode == 2 and len(lines) == 1 and "--adaptive gate" in lines[0], p.stderr


def test_sim_reports_the_order_it_ran() -> None:
    flags = ("--concurrency", "2", "--runs", "3", "--adaptive", "gate", "--gate-order", "need")
    p = sb("sim", "--upstream", "runs", *flags, "--json")
    assert p.returncode == 0, p.stderr
    s = json.loads(p.stdout)["summary"]
    assert s["adaptive"] == "gate" and s["gate_order"] == "need"


@pytest.mark.parametrize(("order", "sent_s"), [("need", 63), ("tiers", 58), ("fifo", 88)])
def test_the_asyncio_port_orders_its_gate_from_the_config(order: str, sent_s: int) -> None:
    # the hand-derived later run of tests/sim/test_run_gate.py, over HTTP on the virtual clock
    out = run_runs_real(*later_run_cell(order), 1)
    assert [r.state for r in out.result.records] == ["completed", "completed"]
    assert later_outline_us(out.result.log) == sent_s * S


def test_the_sweep_axis_keeps_the_default_cells_ids() -> None:
    cell = RunsCell("sim", "default", 3, "", 30.0, 4, 2, "gate", 4, 8, 2, 0)
    assert cell.cell_id == "runs__sim__default__q3__l30__m4__c2__a-gate"
    need = RunsCell("sim", "default", 3, "", 30.0, 4, 2, "gate", 4, 8, 2, 0, "need")
    assert need.cell_id == cell.cell_id + "__o-need"
    spec = runs_spec(quick=True, scenarios=None, adaptives=("off", "gate"),
                     gate_orders=("tiers", "need"))  # fmt: skip
    cells = runs_grid(spec)
    per = {(a, o): sum(1 for c in cells if (c.adaptive, c.gate_order) == (a, o))
           for a, o in {(c.adaptive, c.gate_order) for c in cells}}  # fmt: skip
    assert set(per) == {("off", "tiers"), ("gate", "tiers"), ("gate", "need")}
    assert len(set(per.values())) == 1  # every order: the whole grid, off once
    old = {k: v for k, v in spec.to_json().items() if k != "gate_orders"}
    assert RunsSweepSpec.from_json(old).gate_orders == ("tiers",)  # folders from before


@pytest.mark.heavy
@pytest.mark.multicore
def test_the_report_compares_the_orders_a_sweep_ran(tmp_path: Path) -> None:
    # an unlimited key: the gate's cap never binds, nothing waits, so the order cannot
    # matter: both orders' rows are the same pick with the same figures
    d = tmp_path / "s"
    grid = ("--quotas", "0", "--concurrency", "2", "--max-concurrent", "4")
    p = sb("sweep", "--upstream", "runs", "--quick", *grid, "--adaptive", "off,gate",
           "--gate-order", "tiers,need", "--out", str(d), "--no-progress")  # fmt: skip
    assert p.returncode == 0, p.stderr
    assert (d / "cells" / "runs__sim__default__q0__l30__m4__c2__a-gate__o-need.parquet").exists()
    text = (d / "REPORT.md").read_text(encoding="utf-8")
    assert "## The gate's waiting orders compared" in text
    row = next(x for x in text.splitlines() if x.startswith("| unlimited, 30/h"))
    cols = [c.strip() for c in row.strip("|").split("|")]
    assert cols[1] == cols[2] and cols[1].startswith("(") and cols[3] == "need, tiers"
    assert "policy `gate-need`" in text


@pytest.mark.heavy
@pytest.mark.multicore
def test_a_gate_only_sweep_on_a_tight_key_reports(tmp_path: Path) -> None:
    # no profile a default must hold on (1 in flight is below the rule's minimum key) and no
    # off cells: the report still renders, with upstream's pair as the (unheld) default
    d = tmp_path / "s"
    grid = ("--quotas", "1", "--concurrency", "2", "--max-concurrent", "4")
    p = sb("sweep", "--upstream", "runs", "--quick", *grid, "--adaptive", "gate",
           "--gate-order", "tiers,fifo", "--out", str(d), "--no-progress")  # fmt: skip
    assert p.returncode == 0, p.stderr
    text = (d / "REPORT.md").read_text(encoding="utf-8")
    assert "| 1 in flight, 30/h |" in text and "| key, load | tiers | fifo |" in text
