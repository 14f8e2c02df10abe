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
    assert c["fast_quota_over_simpy"] == pytest.approx(simpy_s / fast_s, rel=1e-12)
    assert c["model_over_simpy"] == pytest.approx(
        cpu["simpy_model"] / cpu["fast_quota_model"], rel=1e-12
    )
    runs = c["reps"] * c["rounds"]
    assert (c["reps"], c["rounds"]) == (500, 2)
    assert c["simpy_per_s"] == pytest.approx(runs / simpy_s, rel=1e-12)
    assert c["fast_quota_per_s"] == pytest.approx(runs / fast_s, rel=1e-12)
    assert section["min_ratio"] == c["fast_quota_over_simpy"]


def test_each_cell_is_one_line_with_both_ratios(section: dict[str, object]) -> None:
    lines = section["lines"]
    assert isinstance(lines, list)
    (c,) = section["cells"]  # type: ignore[misc]
    (line,) = [x for x in lines if c["cell"] in x and "runs per call" not in x]
    assert line.endswith(f"({c['fast_quota_over_simpy']:.1f}x) [{c['model_over_simpy']:.1f}x]")
    assert "in brackets the model alone" in lines[0]
