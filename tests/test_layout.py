"""docs/design.md's layout table names every module of each role folder once, in its own
folder, and nothing that is not there (the layers themselves are enforced on the import graph
by tests/test_layers.py)."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _table() -> dict[str, list[str]]:
    text = (ROOT / "docs" / "design.md").read_text(encoding="utf-8")
    section = text.split("## Layout\n", 1)[1].split("\n## ", 1)[0]
    named: dict[str, list[str]] = {}
    for folder, mods in re.findall(r"^\| \*\*[^|]*\*\* \| `([\w/]+)/` \| (.*) \|$", section, re.M):
        named.setdefault(folder, [])
        named[folder] += re.findall(r"`(\w+)`", re.sub(r"\([^)]*\)", "", mods))
    return named


def test_the_layout_table_names_every_module_once() -> None:
    named = _table()
    folders = {"sim"} | {
        f"runner/{d.name}"
        for d in (ROOT / "runner").iterdir()
        if d.is_dir() and (d / "__init__.py").exists()
    }
    assert set(named) == folders
    for folder, mods in named.items():
        files = {f.stem for f in (ROOT / folder).glob("*.py")} - {"__init__", "__main__"}
        assert len(mods) == len(set(mods)), f"{folder}: a module is listed twice"
        assert set(mods) == files, (
            f"{folder}: missing {files - set(mods)}, stale {set(mods) - files}"
        )


def test_the_layout_measures_are_current() -> None:
    """The modules-per-folder line of docs/design.md counts what is on disk."""
    text = (ROOT / "docs" / "design.md").read_text(encoding="utf-8")
    line = next(ln for ln in text.splitlines() if ln.startswith("Measures of the layout"))
    stated = {f: int(n) for f, n in re.findall(r"`([\w/]+)/` (\d+)", line)}
    on_disk = {
        f: len({p.stem for p in (ROOT / f).glob("*.py")} - {"__init__", "__main__"}) for f in stated
    }
    assert len(stated) == 6 and stated == on_disk
