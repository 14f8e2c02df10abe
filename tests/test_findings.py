"""docs/findings.md is what the project's own command renders from the committed results."""

from pathlib import Path

from runner.report.findings import render_findings

ROOT = Path(__file__).resolve().parents[1]


def test_findings_are_current(monkeypatch):
    monkeypatch.chdir(ROOT)  # the page names the folder as the command was given it
    want = render_findings(Path("results/findings"))
    got = (ROOT / "docs" / "findings.md").read_text(encoding="utf-8")
    assert got == want, (
        "docs/findings.md is stale: scenebench report results/findings --findings docs/findings.md"
    )


def test_the_findings_name_the_profile_and_the_command():
    text = (ROOT / "docs" / "findings.md").read_text(encoding="utf-8")
    assert "`pr788`" in text and "scenebench sweep" in text and "Do not edit by hand" in text
