"""README's commands are what CI runs, and its examples run."""

import re
from pathlib import Path

import pytest

from sim import load_scenario

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _blocks(lang):
    return re.findall(rf"```{lang}\n(.*?)```", README, flags=re.S)


def test_ci_runs_readmes_two_quick_start_commands():
    install, tests = (b.strip() for b in _blocks("bash")[:2])
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert install in ci
    assert tests in ci
    assert "pip install" in install and "pytest" in tests


@pytest.mark.parametrize("i", range(len(_blocks("python"))))
def test_python_examples_run(i):
    exec(compile(_blocks("python")[i], f"README.md python block {i}", "exec"), {})


def test_toml_example_is_a_valid_scenario(tmp_path):
    (toml,) = _blocks("toml")
    p = tmp_path / "example.toml"
    p.write_text(toml)
    sc = load_scenario(p)
    assert sc.name == "my-classroom" and sc.quota_llm.max_inflight == 2
