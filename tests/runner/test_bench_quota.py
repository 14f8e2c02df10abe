"""``bench``'s limited-key section: SimPy and the limited-key engine timed to the same point,
a sweep's cell (the model and the frame the sweep saves) and the model alone; the ratios are
the parts' (speed itself is never asserted)."""

from __future__ import annotations

import pytest

from runner.experiments import bench


@pytest.fixture(scope="module")
def section() -> dict[str, object]:
    serial = [c for c in bench.quota_engine_cells() if "serial" in c[0]]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(bench, "quota_engine_cells", lambda: serial)
        return bench.run_quota_engine_bench(quick=True)


def test_both_sides_are_timed_to_the_frame_and_the_ratios_are_the_parts(
    section: dict[str, object],
) -> None:
    cells = section["cells"]
    assert isinstance(cells, list) and len(cells) == 1
    (c,) = cells
    cpu = c["cpu_s"]
    assert set(cpu) == {"simpy_model", "simpy_frame", "fast_quota_model", "fast_quota_frame"}
    assert all(v > 0 for v in cpu.values())
    simpy_s = cpu["simpy_model"] + cpu["simpy_frame"]
    fast_s = cpu["fast_quota_model"] + cpu["fast_quota_frame"]
    assert (c["reps"], c["rounds"]) == (500, 2)
    assert c["calls_per_round"] == {"simpy": 1, "fast_quota": bench.ENGINE_CALLS}
    simpy_runs, fast_runs = 500 * 2, 500 * 2 * bench.ENGINE_CALLS
    assert c["simpy_per_s"] == pytest.approx(simpy_runs / simpy_s, rel=1e-12)
    assert c["fast_quota_per_s"] == pytest.approx(fast_runs / fast_s, rel=1e-12)
    assert c["fast_quota_over_simpy"] == pytest.approx(
        (fast_runs / fast_s) / (simpy_runs / simpy_s), rel=1e-12
    )
    assert c["model_over_simpy"] == pytest.approx(
        (fast_runs / cpu["fast_quota_model"]) / (simpy_runs / cpu["simpy_model"]), rel=1e-12
    )
    assert section["min_ratio"] == c["fast_quota_over_simpy"]


def test_each_cell_is_one_line_with_both_ratios(section: dict[str, object]) -> None:
    lines = section["lines"]
    assert isinstance(lines, list)
    (c,) = section["cells"]  # type: ignore[misc]
    (line,) = [x for x in lines if c["cell"] in x and "runs per call" not in x]
    assert line.endswith(f"({c['fast_quota_over_simpy']:.1f}x) [{c['model_over_simpy']:.1f}x]")
    assert "in brackets the model alone" in lines[0]


def test_each_engine_is_warmed_at_the_cells_size_and_the_warm_up_is_not_counted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[tuple[int, int, str]] = []

    def fake(sc: object, cfg: object, reps: int, seed: int, engine: str) -> tuple[float, float]:
        calls.append((reps, seed, engine))
        # the warm-up would count 1,000 s; each round's model 2 s (SimPy) or 0.1 s, frame 1 s
        if seed == 10_000:
            return 1000.0, 0.0
        return (2.0 if engine == "simpy" else 0.1), 1.0

    monkeypatch.setattr(bench, "_quota_run", fake)
    monkeypatch.setattr(bench, "ENGINE_CALLS", 2)
    name, sc, cfg = bench.quota_engine_cells()[1]
    c = bench._quota_cell(name, sc, cfg, reps=300, rounds=3)
    assert calls[:2] == [(300, 10_000, "simpy"), (300, 10_000, "fast_quota")]
    # per round SimPy once, the engine twice (its second call on a seed of its own)
    assert calls[2:] == [
        (300, 100, "simpy"), (300, 100, "fast_quota"), (300, 1100, "fast_quota"),
        (300, 101, "fast_quota"), (300, 1101, "fast_quota"), (300, 101, "simpy"),
        (300, 102, "simpy"), (300, 102, "fast_quota"), (300, 1102, "fast_quota"),
    ]  # fmt: skip
    # 3 rounds: SimPy 900 runs in 3 x (2 + 1) s; the engine 1,800 in 6 x (0.1 + 1) s
    assert c["simpy_per_s"] == pytest.approx(900 / 9.0)
    assert c["fast_quota_per_s"] == pytest.approx(1800 / 6.6)
    assert c["fast_quota_over_simpy"] == pytest.approx((1800 / 6.6) / (900 / 9.0))
    assert c["model_over_simpy"] == pytest.approx((1800 / 0.6) / (900 / 6.0))
