"""Both notebooks run top to bottom on a fresh machine (nbclient), stored without outputs."""

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from runner import default_spec
from tests.conftest import swept

NB = Path(__file__).resolve().parents[1] / "notebooks"


@pytest.mark.parametrize("name", ["explore.ipynb", "calibrate.ipynb"])
def test_notebooks_are_stored_without_outputs(name):
    nb = nbformat.read(NB / name, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None


def _run(name, params, tmp_path, edits=()):
    nb = nbformat.read(NB / name, as_version=4)
    first_code = next(c for c in nb.cells if c.cell_type == "code")
    first_code.source = params
    for old, new in edits:  # change a later cell's parameter, as a user would
        cell = next(c for c in nb.cells if c.cell_type == "code" and old in c.source)
        cell.source = cell.source.replace(old, new)
    NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(NB)}}
    ).execute()
    return nb


def _text(nb):
    out = []
    for c in nb.cells:
        for o in c.get("outputs", []):
            out.append(
                o.get("text", "")
                + str(o.get("data", {}).get("text/plain", ""))
                + str(o.get("data", {}).get("text/markdown", ""))
            )
    return "\n".join(out)


@pytest.mark.heavy
def test_explore_runs_on_a_results_folder(tmp_path):
    spec = default_spec(
        quick=True,
        scenarios=["default"],
        backends=["sim"],
        sim_reps=40,
        quotas=[0, 2],
        concurrencies=[1, 2, 3],
    )
    folder = swept(spec, out=tmp_path / "res", workers=1, progress=False)
    nb = _run("explore.ipynb", f"RESULTS = {str(folder)!r}\nRESULTS_ROOT = None", tmp_path)
    text = _text(nb)
    assert "Recommended default PARALLEL_SCENE_CONCURRENCY" in text
    assert f"results folder: {folder}" in text
    images = [o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(images) >= 4  # three saved figures and the re-run plot


def test_calibrate_runs_offline_and_writes_a_scenario(tmp_path):
    out = tmp_path / "cal.toml"
    nb = _run(
        "calibrate.ipynb",
        f'TRACE = "example_trace.csv"\nBASE = "tts-heavy"\nOUT = {str(out)!r}',
        tmp_path,
    )
    assert out.is_file()
    text = _text(nb)
    assert "lognormal" in text and "written:" in text


@pytest.mark.heavy
def test_explore_parameter_cell_uses_the_reports_rule_on_a_tight_key(tmp_path):
    """KEY_INFLIGHT = 3 (the value its comment suggests): pipelined c needs c + 1 LLM slots,
    so every c >= 3 fails a scene in (almost) every run. The cell must not show those
    speedups as plain: it uses the report's rule (runner.store.counts) and lists only the c that
    count."""
    spec = default_spec(
        quick=True,
        scenarios=["default"],
        backends=["sim"],
        sim_reps=20,
        quotas=[0],
        concurrencies=[1, 2],
    )
    folder = swept(spec, out=tmp_path / "res", workers=1, progress=False)
    nb = _run(
        "explore.ipynb",
        f"RESULTS = {str(folder)!r}\nRESULTS_ROOT = None",
        tmp_path,
        edits=[("KEY_INFLIGHT = 0", "KEY_INFLIGHT = 3"), ("REPS = 300", "REPS = 60")],
    )
    text = _text(nb)
    line = next(ln for ln in text.splitlines() if ln.startswith("c that count"))
    counted = [int(x) for x in line.split("[", 1)[1].rstrip("]").split(",") if x.strip()]
    assert 1 in counted and all(c <= 2 for c in counted), line
