"""``scenebench sweep --upstream runs`` and ``recommend`` on its folder, as a user runs them."""

import json
from types import SimpleNamespace

import pytest

from runner.cli.commands import main


def sb(capsys, *args):
    """The command in this process (``main``), as the entry point runs it."""
    try:
        code = main(list(args))
    except SystemExit as e:  # argparse's own errors
        code = int(e.code or 0)
    got = capsys.readouterr()
    return SimpleNamespace(returncode=code, stdout=got.out, stderr=got.err)


def test_a_small_runs_sweep_names_both_knobs_and_recommend_agrees(tmp_path, capsys):
    out = tmp_path / "runs"
    p = sb(
        capsys,
        "sweep", "--upstream", "runs", "--quick", "--backend", "sim", "--quotas", "3",
        "--concurrency", "2", "--max-concurrent", "2", "--reps", "2",
        "--runs-per-deployment", "4", "--workers", "1", "--out", str(out), "--no-progress",
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    # (c, m) in {1, 2} x {2, 4}: upstream's c = 1 and m = 4 are added to the flags'
    cells = sorted(f.name for f in (out / "cells").glob("*.parquet"))
    assert len(cells) == 4 and all("__q3__l30__" in c for c in cells)
    assert "OPENMAIC_GENERATION_RUN_MAX_CONCURRENT = " in p.stdout
    assert "a 3-in-flight key at 30 runs/hour: c = " in p.stdout
    saved = json.loads((out / "recommendation.json").read_text())
    r = sb(capsys, "recommend", "--results", str(out), "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == saved
    assert saved["kind"] == "runs" and {"recommended", "recommended_max_concurrent"} <= set(saved)
    text = sb(capsys, "recommend", "--results", str(out)).stdout
    assert text.splitlines()[0] == (
        f"recommended default: PARALLEL_SCENE_CONCURRENCY = {saved['recommended']}, "
        f"OPENMAIC_GENERATION_RUN_MAX_CONCURRENT = {saved['recommended_max_concurrent']}"
    )


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--upstream", "pr660", "--loads", "10"], "--loads applies to runs sweeps only"),
        (["--upstream", "runs,pr788"], "a runs sweep runs alone"),
        (["--upstream", "runs", "--loads", "0"], "--loads must be a comma list of numbers > 0"),
        (["--upstream", "runs", "--max-concurrent", "0"], "--max-concurrent must be"),
        (
            ["--upstream", "runs", "--adaptive", "aimd"],
            "the runs model has off and gate; got 'aimd'",
        ),
    ],
)
def test_runs_flags_are_checked_in_one_line(tmp_path, capsys, args, says):
    p = sb(capsys, "sweep", *args, "--out", str(tmp_path / "x"), "--no-progress")
    assert p.returncode == 2 and says in p.stderr and len(p.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()
