import numpy as np
import pandas as pd
import pytest

from sim import LogNormal, ScenarioError, load_scenario
from sim.calibrate import (
    MIN_FIT,
    fit_step,
    fit_trace,
    read_trace,
    scenario_from_fits,
    write_scenario,
)


def test_fits_recover_the_generating_distribution():
    rng = np.random.default_rng(4)
    x = LogNormal(12.0, 0.35).sample(rng, 3000)
    fits = fit_step("content", x)
    assert fits[0].name == "lognormal"
    assert fits[0].dist.median_s == pytest.approx(12.0, rel=0.03)
    assert fits[0].dist.sigma == pytest.approx(0.35, rel=0.05)
    assert fits[-1].name == "exponential" and fits[-1].aic > fits[0].aic
    g = rng.gamma(3.0, 2.0, 3000)
    gf = fit_step("tts", g)
    assert gf[0].name == "gamma" and gf[0].dist.shape == pytest.approx(3.0, rel=0.08)


def test_scenario_from_a_trace_round_trips_through_toml(tmp_path):
    rng = np.random.default_rng(1)
    trace = pd.DataFrame(
        {
            "step": ["content"] * 200 + ["tts"] * 5,
            "seconds": np.r_[LogNormal(20.0, 0.2).sample(rng, 200), [1, 2, 3, 4, 5]],
        }
    )
    p = tmp_path / "t.csv"
    trace.to_csv(p, index=False)
    tr = read_trace(p)
    sc = scenario_from_fits(load_scenario("default"), fit_trace(tr), tr, name="cal")
    out = write_scenario(sc, tmp_path / "cal.toml")
    back = load_scenario(out)
    assert back == sc and back.name == "cal"
    assert isinstance(back.content, LogNormal) and back.content.median_s == pytest.approx(
        20, rel=0.05
    )
    assert back.tts.to_mapping() == {"dist": "empirical", "values_s": [1.0, 2.0, 3.0, 4.0, 5.0]}
    assert back.actions == load_scenario("default").actions  # untraced steps are kept
    assert any("maximum likelihood" in s for s in back.sources)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("step,sec\ncontent,1\n", "trace.seconds: missing column"),
        ("step,seconds\nvideo,1\n", "trace.step: must be one of content"),
        ("step,seconds\ncontent,-1\n", "trace.seconds: must be finite numbers >= 0"),
    ],
)
def test_bad_traces_are_one_line_errors(tmp_path, text, needle):
    p = tmp_path / "t.csv"
    p.write_text(text)
    with pytest.raises(ScenarioError, match=needle.replace("(", r"\(")):
        read_trace(p)


def test_the_shipped_example_trace_is_a_valid_trace():
    from pathlib import Path

    tr = read_trace(Path(__file__).resolve().parents[2] / "notebooks" / "example_trace.csv")
    assert set(tr["step"]) == {"content", "actions", "tts"} and len(tr) > 500


def test_a_trace_without_calls_is_refused_before_anything_is_written(tmp_path):
    p = tmp_path / "empty.csv"
    p.write_text("step,seconds\n")
    with pytest.raises(ScenarioError, match="has no calls"):
        read_trace(p)
    from runner.experiments.calibration import calibrate

    out = tmp_path / "out.toml"
    with pytest.raises(ScenarioError):
        calibrate(p, out)
    assert not out.exists()


def test_a_trace_too_short_to_fit_keeps_its_observed_times(tmp_path):
    from runner.experiments.calibration import calibrate

    p = tmp_path / "one.csv"
    p.write_text("step,seconds\ncontent,12.5\n")
    cal = calibrate(p, tmp_path / "out.toml")
    assert cal.summary.empty and list(cal.summary.columns)[:3] == ["step", "rank", "candidate"]
    assert cal.scenario.content.mean == pytest.approx(12.5)  # the one observed call
    assert len(cal.lines()) == 1 and f"{MIN_FIT} calls" in cal.lines()[0]
    assert load_scenario(tmp_path / "out.toml").content.mean == pytest.approx(12.5)
