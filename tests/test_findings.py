"""docs/findings.md is what the project's own command renders from the committed results."""

from pathlib import Path

import pytest

from runner.report.findings import render_findings

ROOT = Path(__file__).resolve().parents[1]
COMMAND = (
    "scenebench report results/findings --findings docs/findings.md "
    "--history results/findings-browser"
)


@pytest.mark.heavy
def test_findings_are_current(monkeypatch):
    monkeypatch.chdir(ROOT)  # the page names the folders as the command was given them
    want = render_findings(Path("results/findings"), Path("results/findings-browser"))
    got = (ROOT / "docs" / "findings.md").read_text(encoding="utf-8")
    assert got == want, f"docs/findings.md is stale: {COMMAND}"


def test_the_findings_name_the_profiles_and_the_commands():
    text = (ROOT / "docs" / "findings.md").read_text(encoding="utf-8")
    assert COMMAND in text and "Do not edit by hand" in text
    assert "scenebench sweep --upstream runs" in text  # today's data
    assert "`runs`" in text and "`pr788`" in text  # today's answer, and the browser era's


def test_the_committed_results_are_small_and_parquet_only():
    for d in ("results/findings", "results/findings-browser"):
        files = sorted(p.name for p in (ROOT / d).iterdir())
        assert files == ["metadata.json", "runs.parquet"], (d, files)
        assert (ROOT / d / "runs.parquet").stat().st_size < 5_000_000
