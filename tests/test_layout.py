"""docs/design.md's layout table names every module of ``sim/`` and ``runner/`` once, under
its package, and nothing that is not there."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _table() -> dict[str, list[str]]:
    text = (ROOT / "docs" / "design.md").read_text(encoding="utf-8")
    section = text.split("## Layout\n", 1)[1].split("\n## ", 1)[0]
    named: dict[str, list[str]] = {"sim": [], "runner": []}
    for row in re.findall(r"^\| \*\*(sim|runner)/ — [^|]*\*\* \| (.*) \|$", section, flags=re.M):
        named[row[0]] += re.findall(r"`(\w+)`", re.sub(r"\([^)]*\)", "", row[1]))
    return named


def test_the_layout_table_names_every_module_once() -> None:
    named = _table()
    for pkg, mods in named.items():
        files = {f.stem for f in (ROOT / pkg).glob("*.py")} - {"__init__"}
        assert len(mods) == len(set(mods)), f"{pkg}: a module is listed twice"
        assert set(mods) == files, f"{pkg}: missing {files - set(mods)}, stale {set(mods) - files}"
