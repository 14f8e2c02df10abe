"""A scenario's ``[runs]`` table (sim/runs_config.py ``RunsTable``): parsed, validated with
one-line errors naming the field, written back by ``to_mapping``, used by
``RunsConfig.for_scenario`` and ``scenebench sim --upstream runs``; built-in scenarios have
none (their outputs do not change)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from sim.catalog import builtin_names
from sim.dists import Constant, LogNormal
from sim.rules import ScenarioError
from sim.runs import simulate_runs
from sim.runs_config import RunsConfig, RunsSettings, RunsTable
from sim.scenario import load_scenario, scenario_from_mapping

RUNS_TOML = """
[runs]
outline = { dist = "constant", value_s = 12.0 }
outline_deadline_s = 200.0
agents = { dist = "lognormal", median_s = 4.0, sigma = 0.2 }
agents_deadline_s = 90.0
content_deadline_s = 250.0
actions_deadline_s = 45.0
clip_deadline_s = 20.0
confirm = "countdown"
free_on_give_up = true
max_concurrent = 3
per_owner = 1
scan_interval_s = 0.5
"""


def _with_runs(tmp_path: Path, table: str = RUNS_TOML) -> Path:
    """The default scenario's TOML with a ``[runs]`` table appended."""
    src = Path(__file__).parents[2] / "sim" / "scenarios" / "default.toml"
    p = tmp_path / "with-runs.toml"
    p.write_text(src.read_text(encoding="utf-8") + table, encoding="utf-8")
    return p


def test_the_table_is_read_and_round_trips(tmp_path: Path) -> None:
    sc = load_scenario(_with_runs(tmp_path))
    assert sc.runs == RunsTable(
        RunsSettings(
            outline=Constant(12.0),
            outline_deadline_s=200.0,
            agents=LogNormal(4.0, 0.2),
            agents_deadline_s=90.0,
            content_deadline_s=250.0,
            actions_deadline_s=45.0,
            clip_deadline_s=20.0,
            confirm="countdown",
            free_on_give_up=True,
            scan_interval_s=0.5,
        ),
        max_concurrent=3,
        per_owner=1,
    )
    assert scenario_from_mapping(sc.to_mapping()) == sc
    # a RunsConfig on it takes the table's settings and caps; a field given overrides
    cfg = RunsConfig.for_scenario(sc, concurrency=2, runs=5, per_owner=4)
    assert (cfg.max_concurrent, cfg.per_owner, cfg.settings) == (3, 4, sc.runs.settings)


def test_without_a_table_upstream_defaults_and_builtins_unchanged() -> None:
    sc = load_scenario("default", upstream="runs")
    assert sc.runs is None
    cfg = RunsConfig.for_scenario(sc, concurrency=3)
    assert cfg == RunsConfig(concurrency=3)  # 4 per process, 2 per owner, RunsSettings()
    for name in builtin_names():
        assert "runs" not in load_scenario(name).to_mapping()


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ("max_concurrent = 0", "runs.max_concurrent: must be in [1, 1000], got 0"),
        ("per_owner = 1.5", "runs.per_owner: must be an integer in [1, 1e+06], got 1.5"),
        ('confirm = "later"', "runs.confirm: must be one of auto, countdown, wait; got 'later'"),
        ("clip_deadline_s = 0", "runs.clip_deadline_s: must be in (0, 86400], got 0"),
        ('free_on_give_up = "yes"', "runs.free_on_give_up: must be true or false, got 'yes'"),
        (
            'outline = { dist = "lognormal", median_s = -1, sigma = 0.3 }',
            "runs.outline.median_s: must be > 0, got -1",
        ),
        (
            "outline = 5",
            'runs.outline: must be a latency table like {dist = "lognormal", median_s = 18, '
            "sigma = 0.3}, got 5",
        ),
    ],
)
def test_a_bad_field_is_one_line_naming_it(tmp_path: Path, table: str, message: str) -> None:
    with pytest.raises(ScenarioError) as e:
        load_scenario(_with_runs(tmp_path, f"\n[runs]\n{table}\n"))
    assert str(e.value) == message


def test_an_unknown_field_lists_the_allowed(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError) as e:
        load_scenario(_with_runs(tmp_path, "\n[runs]\nspeed = 1\n"))
    msg = str(e.value)
    assert msg.startswith("runs.speed: unknown field; allowed: actions_deadline_s, agents,")
    assert "max_concurrent" in msg and "per_owner" in msg and "\n" not in msg


def test_the_table_drives_a_cell_as_the_same_explicit_config(tmp_path: Path) -> None:
    sc = load_scenario(_with_runs(tmp_path), upstream="runs").with_quota(llm_inflight=3)
    arrivals = ((0.0, 0), (1.0, 0), (2.0, 1), (60.0, 1))
    a = simulate_runs(sc, RunsConfig.for_scenario(sc, concurrency=2, arrivals=arrivals), 1)
    assert sc.runs is not None
    explicit = RunsConfig(
        concurrency=2, arrivals=arrivals, max_concurrent=3, per_owner=1, settings=sc.runs.settings
    )
    b = simulate_runs(sc, explicit, 1)
    assert a.log == b.log and repr(a.records) == repr(b.records)
    # per_owner 1: owner 0's second start (at 1 s) is refused while its first is active
    assert [r.refused for r in a.records][:2] == [False, True]


def test_a_table_keeps_the_settings_dataclass_fields() -> None:
    """Every RunsSettings field can be written in the table (and back)."""
    t = RunsTable(dataclasses.replace(RunsSettings(), media_items=2, review_s=5.0))
    m = t.to_mapping()
    assert set(m) == {*RunsSettings.__dataclass_fields__, "max_concurrent", "per_owner"}
    from sim.runs_config import runs_table_from_mapping

    assert runs_table_from_mapping(m) == t


def test_the_documented_table_is_the_defaults() -> None:
    """docs/runs.md's ``[runs]`` example lists every field at its default."""
    import tomllib

    from sim.runs_config import runs_table_from_mapping

    doc = (Path(__file__).parents[2] / "docs" / "runs.md").read_text(encoding="utf-8")
    block = doc.split("## The `[runs]` table of a scenario", 1)[1].split("```toml", 1)[1]
    m = tomllib.loads(block.split("```", 1)[0])["runs"]
    assert set(m) == {*RunsSettings.__dataclass_fields__, "max_concurrent", "per_owner"}
    assert runs_table_from_mapping(m) == RunsTable()
