import pytest

from sim import analytic as an


def test_closed_forms_small_cases():
    s = an.scene_tail(5.0, 2.0, 3)  # 11
    assert s == 11.0
    assert an.scene_tail(5.0, 2.0, 3, tts_concurrency=2) == 9.0
    assert an.serial_makespan(4, 20.0, s) == 124.0
    assert an.hybrid_makespan(4, 3, 20.0, s) == 84.0
    assert an.hybrid_ttfs(4, 3, 20.0, s) == 51.0
    # c >= ceil(C/S) = 2: C + N*S
    assert an.min_useful_concurrency(20.0, s) == 2
    assert an.pipelined_makespan(4, 2, 20.0, s) == 20.0 + 4 * s
    # c = 1 degenerates to serial
    assert an.pipelined_makespan(4, 1, 20.0, s) == an.serial_makespan(4, 20.0, s)
    assert an.pipelined_speedup_bound(4, 20.0, s) == pytest.approx(124.0 / 64.0)


def test_paths():
    c = [10.0, 50.0, 1.0]
    s = [5.0, 5.0, 5.0]
    assert an.pipelined_lower_bound(c, s) == 25.0
    assert an.longest_path(c, s) == 60.0  # through content 1
    assert an.harmonic(3) == pytest.approx(1 + 1 / 2 + 1 / 3)
