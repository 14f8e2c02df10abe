"""README is a short front page whose commands are what CI runs; examples run; links resolve."""

import re
from pathlib import Path

import pytest

from sim import load_scenario

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
DOCS = sorted((ROOT / "docs").glob("*.md"))
PAGES = [ROOT / "README.md", *DOCS]
# Pages whose ```python blocks are executed (kept small and fast).
EXECUTED = [ROOT / "README.md", ROOT / "docs" / "api.md", ROOT / "docs" / "runs.md"]


def _blocks(lang, text=README):
    return re.findall(rf"```{lang}\n(.*?)```", text, flags=re.S)


def _section(text, heading):
    """The text under a '## heading' up to the next heading of any level."""
    m = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^#+ |\Z)", text, flags=re.S | re.M)
    assert m, f"no section '## {heading}'"
    return m.group(1)


def test_ci_runs_readmes_two_quick_start_commands():
    install, tests = (b.strip() for b in _blocks("bash")[:2])
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert install in ci
    assert tests in ci
    assert "pip install" in install and "pytest" in tests


def test_readme_is_a_front_page():
    assert len(README.splitlines()) <= 200


def test_readmes_answer_is_the_generated_findings():
    """README quotes no number by hand: the bold ones in its answer are the findings' own."""
    findings = (ROOT / "docs" / "findings.md").read_text(encoding="utf-8")
    bold = re.compile(r"\*\*(.+?)\*\*")
    ours = bold.findall(_section(README, "The answer today"))
    theirs = bold.findall(_section(findings, "The answer today"))
    assert ours and ours == theirs
    assert "scenebench report results/findings --findings docs/findings.md" in README


_EXAMPLES = [
    (page, i, block)
    for page in EXECUTED
    for i, block in enumerate(_blocks("python", page.read_text(encoding="utf-8")))
]


@pytest.mark.parametrize(
    ("page", "i", "block"), _EXAMPLES, ids=[f"{p.name}-{i}" for p, i, _ in _EXAMPLES]
)
def test_python_examples_run(page, i, block):
    exec(compile(block, f"{page.name} python block {i}", "exec"), {})


def test_every_page_with_python_examples_is_executed():
    for page in PAGES:
        if _blocks("python", page.read_text(encoding="utf-8")):
            assert page in EXECUTED, f"{page.name} has ```python blocks that no test runs"


def test_toml_example_is_a_valid_scenario(tmp_path):
    (toml,) = _blocks("toml", (ROOT / "docs" / "scenarios.md").read_text(encoding="utf-8"))
    p = tmp_path / "example.toml"
    p.write_text(toml)
    sc = load_scenario(p)
    assert sc.name == "my-classroom" and sc.quota_llm.max_inflight == 2


def _slug(heading):
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    h = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return h.replace(" ", "-")


def _anchors(text):
    seen, out = {}, set()
    for h in re.findall(r"^#{1,6} (.+)$", re.sub(r"```.*?```", "", text, flags=re.S), flags=re.M):
        s = _slug(h)
        n = seen.get(s, 0)
        seen[s] = n + 1
        out.add(s if n == 0 else f"{s}-{n}")
    return out


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_relative_links_resolve(page):
    text = page.read_text(encoding="utf-8")
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    bad = []
    for target in re.findall(r"\]\(([^)\s]+)\)", prose):
        if re.match(r"[a-z]+:", target):
            continue  # http(s), mailto: not checked here
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            bad.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest.read_text("utf-8")):
            bad.append(f"{target}: no such heading")
    assert not bad, f"{page.name}: " + "; ".join(bad)
