"""The regression gate: passes on the baseline, fails readably on a broken pipeline."""

import json
import math
from pathlib import Path

import pytest

from runner.experiments import gate
from runner.experiments.sweep import write_json_atomic
from runner.store.stamps import dumps
from runner.world.pipeline import ScenePipeline

BASELINE = Path(__file__).resolve().parents[2] / "results" / "baseline.json"


def _no_constants(c):
    raise ValueError(f"non-standard JSON constant {c}")


@pytest.fixture(scope="module")
def baseline():
    return json.loads(BASELINE.read_text(), parse_constant=_no_constants)


def test_committed_baseline_has_the_gate_version_and_metrics(baseline):
    assert baseline["gate_version"] == gate.GATE_VERSION
    # 18 model cells x (429s, P(failed)) always; speedup and TTFS only where runs count
    assert len(baseline["metrics"]) >= 2 * len(gate.MODEL_CELLS) + 20
    assert baseline["metrics"]["real vs model exact_mismatches"] == 0
    assert gate.undefined_metrics(baseline) == []  # every gated metric is defined
    assert baseline["provenance"]["upstream"] and baseline["provenance"]["scenario"] == "default"


@pytest.mark.heavy
def test_gate_fails_on_a_broken_pipeline(baseline, monkeypatch):
    # that this code passes the gate is .ci/run's last step, `scenebench gate --baseline
    # results/baseline.json`: the same comparison of every metric with the same baseline (and
    # the wall-clock check besides), so it is not measured a second time here

    # break the pipelined mode: each content waits for the previous one (one slot)
    monkeypatch.setattr(ScenePipeline, "content_slots", staticmethod(lambda c, n: 1))
    broken = gate.compare(baseline, gate.measure(wall=False))
    failed = {m.name for m in broken if not m.ok}
    assert "real q=0 pipelined c=3 real_speedup" in failed
    assert "real vs model exact_mismatches" in failed
    table = gate.render_table(broken, only_failed=True)
    assert "baseline" in table.splitlines()[0] and "tolerance" in table.splitlines()[0]
    assert "real q=0 pipelined c=3 real_speedup" in table and "NO" in table
    # what gate --json prints for it is strict JSON: a metric missing now is null, not NaN
    text = dumps({"ok": False, "metrics": [m.to_json() for m in broken]})
    parsed = json.loads(text, parse_constant=_no_constants)
    assert all(isinstance(m["ok"], bool) for m in parsed["metrics"])
    # only the pipeline's metrics moved: the model's cells do not run it
    assert not {n for n in failed if n.startswith("model ")}


def test_compare_flags_drift_missing_metrics_and_writes_junit(tmp_path):
    base = {
        "gate_version": 1,
        "metrics": {
            "model q=0 pipelined c=3 speedup": 2.85,
            "model q=0 pipelined c=3 p_any_failed": 0.02,
            "gone speedup": 1.0,
        },
    }
    now = {
        "metrics": {
            "model q=0 pipelined c=3 speedup": 2.80,
            "model q=0 pipelined c=3 p_any_failed": 0.021,
        }
    }
    ms = {m.name: m for m in gate.compare(base, now)}
    assert not ms["model q=0 pipelined c=3 speedup"].ok  # 1.8% > 0.5%
    assert ms["model q=0 pipelined c=3 p_any_failed"].ok  # 0.001 <= 0.005
    assert not ms["gone speedup"].ok and math.isnan(ms["gone speedup"].now)
    junit = tmp_path / "gate.xml"
    gate.write_junit(list(ms.values()), junit)
    text = junit.read_text()
    assert 'tests="3"' in text and 'failures="2"' in text


def test_update_rewrites_the_baseline(tmp_path):
    p = tmp_path / "b.json"
    write_json_atomic(p, {"gate_version": 1, "metrics": {"x speedup": 1.0}})
    gate.save_baseline({"gate_version": 1, "metrics": {"y speedup": 2.0}, "notes": []}, p)
    assert json.loads(p.read_text())["metrics"] == {"y speedup": 2.0}
