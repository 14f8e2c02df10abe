"""Issue 12: scenebench calibrate fits tokens per call and output speed from token columns."""

import numpy as np
import pandas as pd
import pytest

from runner.cli.commands import main
from sim.calibrate import read_trace
from sim.calibrate_tokens import fit_tokens
from sim.scenario import load_scenario


def _trace(path, n=400, tps=110.0, ttft_median=0.8, sigma=0.2, seed=3):
    rng = np.random.default_rng(seed)
    rows = []
    for step, lo, hi in (("content", 1500, 4000), ("actions", 500, 1500)):
        out = rng.integers(lo, hi, n)
        ttft = ttft_median * np.exp(sigma * rng.standard_normal(n))
        inp = rng.integers(1000, 5000, n)
        for o, t, i in zip(out, ttft, inp, strict=True):
            rows.append(
                {"step": step, "seconds": t + o / tps, "input_tokens": i, "output_tokens": o}
            )
    for _ in range(50):
        rows.append(
            {"step": "tts", "seconds": 1.0 + rng.random(), "input_tokens": "", "output_tokens": ""}
        )
    pd.DataFrame(rows).to_csv(path, index=False)


def test_speed_and_time_to_first_token_come_back_from_a_synthetic_trace(tmp_path):
    _trace(tmp_path / "t.csv")
    fits = fit_tokens(read_trace(tmp_path / "t.csv"))
    assert set(fits) == {"content", "actions"}  # tts rows carry no counts
    mean_ttft = 0.8 * np.exp(0.2**2 / 2)  # lognormal mean
    for f in fits.values():
        # the slope's standard error is ~ sd(ttft)/(sd(out)·sqrt(n)): well under 2 %
        assert f.output_tps == pytest.approx(110.0, rel=0.02)
        # the intercept's standard error is sd(ttft)·sqrt((1 + mean(out)²/var(out))/n):
        # 0.16·sqrt(15.6/400) ≈ 0.03 s for content; allow 4 of them
        assert f.ttft_mean_s == pytest.approx(mean_ttft, abs=0.12)
        assert f.ttft is not None and f.ttft.mean == pytest.approx(mean_ttft, abs=0.12)
        assert f.input is not None and f.input.mean == pytest.approx(3000, rel=0.05)
    assert fits["content"].output.mean == pytest.approx((1500 + 3999) / 2, rel=0.05)


def test_the_cli_writes_a_scenario_whose_latency_is_derived_from_tokens(tmp_path, capsys):
    _trace(tmp_path / "t.csv")
    out = tmp_path / "cal.toml"
    assert main(["calibrate", str(tmp_path / "t.csv"), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "output speed" in text and "tok/s" in text
    sc = load_scenario(out)
    for step in (0, 1):
        spec = sc.step_tokens(step)
        assert spec is not None and spec.output_tps == pytest.approx(110.0, rel=0.02)
    assert sc.step_tokens(2) is None
    assert sc.content.mean == pytest.approx(0.8 * np.exp(0.02), abs=0.12)  # now the TTFT


def test_negative_token_counts_are_a_one_line_error(tmp_path):
    pd.DataFrame([{"step": "content", "seconds": 1.0, "output_tokens": -3}]).to_csv(
        tmp_path / "bad.csv", index=False
    )
    with pytest.raises(Exception, match=r"^trace\.output_tokens: "):
        read_trace(tmp_path / "bad.csv")
