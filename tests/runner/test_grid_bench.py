"""``bench``'s grid time: the scaling it states (no speed is asserted)."""

import pytest

from runner.experiments.grid_bench import scale_line


def test_the_line_through_two_sizes_gives_the_fixed_part_and_the_part_per_run() -> None:
    # 3 s fixed and 0.5 s per run: 5.5 s at 5 runs, 15.5 s at 25, 1003 s at 2,000
    per_run, fixed, full = scale_line(5.5, 15.5, 5, 25, 2000)
    assert per_run == pytest.approx(0.5)
    assert fixed == pytest.approx(3.0)
    assert full == pytest.approx(3.0 + 0.5 * 2000)


def test_noise_never_makes_a_part_negative() -> None:
    # the larger size measured faster (a noisy machine): no time per run, all of it fixed
    assert scale_line(2.0, 1.0, 5, 25, 2000) == (0.0, 2.0, 2.0)
    # more than all of the small size's time per run: no fixed part
    per_run, fixed, full = scale_line(1.0, 9.0, 5, 25, 2000)
    assert per_run == pytest.approx(0.4)
    assert fixed == 0.0
    assert full == pytest.approx(0.4 * 2000)
