"""Issue 12: shared capacity (sim.sharing) and its closed forms (sim.analytic)."""

import random
from fractions import Fraction

import pytest

from sim import RunConfig, simulate
from sim.analytic import (
    serial_makespan,
    shared_efficiency,
    shared_hybrid_makespan,
    shared_pipelined_speedup_bound,
)
from sim.dists import Constant, ConstantInt
from sim.scenario import load_scenario
from sim.sharing import SharedCore, ps_rate

S = 1_000_000


def _ends(core, until):
    return [(f.key, f.at_us, f.expired) for f in core.advance(until)]


def test_rate_per_request_is_the_curve_over_n_times_its_first_point():
    assert ps_rate((), 5) == 1
    assert ps_rate((75.0,), 3) == Fraction(1, 3)
    assert ps_rate((1.0, 2.0, 2.5), 2) == 1
    assert ps_rate((1.0, 2.0, 2.5), 4) == Fraction(5, 8)  # flat after the last point


def test_flat_sharing_conserves_work():
    # A (1 s of work) alone from 0; B (1 s) joins at 0.5 s: A has 0.5 s left, now at half
    # speed → ends at 0.5 + 1.0 = 1.5 s; B did 0.5 s of work by then, ends 0.5 s later.
    core = SharedCore(curve=(75.0,))
    assert core.add(0, "A", S)
    assert _ends(core, S // 2) == []
    assert core.add(S // 2, "B", S)
    assert core.next_event_us() == 3 * S // 2
    assert _ends(core, 10 * S) == [("A", 3 * S // 2, False), ("B", 2 * S, False)]


def test_a_linear_curve_serves_each_request_as_if_alone():
    core = SharedCore(curve=(1.0, 2.0))
    core.add(0, "A", S)
    core.add(0, "B", S)
    assert _ends(core, 5 * S) == [("A", S, False), ("B", S, False)]


def test_one_at_a_time_is_a_fifo_queue_with_a_cap_and_a_hold():
    core = SharedCore(parallel=1, max_queue=2, max_hold_us=S + S // 2)
    assert core.add(0, "A", S) and core.add(0, "B", S) and core.add(0, "C", S)
    assert not core.add(0, "D", S)  # queue full (2 waiting): refused at once
    # A ends at 1 s, B starts then and ends at 2 s; C has waited 1.5 s at 1.5 s: held out
    assert _ends(core, 10 * S) == [("A", S, False), ("C", S + S // 2, True), ("B", 2 * S, False)]


def test_a_request_starting_at_its_holds_end_is_served():
    core = SharedCore(parallel=1, max_hold_us=S)
    core.add(0, "A", S)
    core.add(0, "B", S)
    assert _ends(core, 10 * S) == [("A", S, False), ("B", 2 * S, False)]


def test_the_result_does_not_depend_on_when_the_core_is_asked():
    rnd = random.Random(5)
    jobs = sorted((rnd.randrange(0, 5 * S), k, rnd.randrange(1, 3 * S)) for k in range(12))
    curve = (75.0, 135.0, 195.0)

    def run(steps):
        core = SharedCore(curve=curve, parallel=2, max_hold_us=2 * S)
        out = []
        for t, k, w in jobs:
            for s in steps:
                if s < t:
                    out += _ends(core, s)
            out += _ends(core, t)
            core.add(t, k, w)
        return out + _ends(core, 100 * S)

    assert run([]) == run(sorted(rnd.randrange(0, 5 * S) for _ in range(300)))


def _constant(name, content_s, actions_s):
    sc = load_scenario(name)
    return sc.replace(
        content=Constant(content_s),
        actions=Constant(actions_s),
        speech_actions=ConstantInt(0),
        tokens={},
    )


@pytest.mark.parametrize("c", [2, 3, 4])
def test_hybrid_on_a_vllm_curve_takes_the_closed_form(c):
    sc = _constant("shared-vllm", 20.0, 8.0)
    n = sc.outlines - 1  # the foreground first scene runs alone before the loop
    assert sc.client.foreground_first_scene
    want = 20.0 + 8.0 + shared_hybrid_makespan(n, c, 20.0, 8.0, sc.quota_llm.throughput)
    # e.g. c = 3: waves of 3, 3, 3 contents, each 3·20/e(3) with e(3) = 195/75 = 2.6
    got = simulate(sc, RunConfig.of("hybrid", c), seed=1)[0].makespan_s
    assert got == pytest.approx(want, abs=1e-5)  # whole-µs rounding per wave
    assert got < serial_makespan(sc.outlines, 20.0, 8.0)


def test_flat_curve_pipelining_is_no_faster_than_serial_and_the_bound_says_so():
    sc = _constant("shared-flat", 20.0, 8.0)
    serial = simulate(sc, RunConfig.of("serial", 1), seed=1)[0].makespan_s
    for c in (2, 3, 10):
        assert simulate(sc, RunConfig.of("pipelined", c), seed=1)[0].makespan_s == pytest.approx(
            serial, abs=1e-5
        )
        assert shared_pipelined_speedup_bound(10, c, 20.0, 8.0, 8.0, (75.0,)) == 1.0
    assert serial == pytest.approx(serial_makespan(10, 20.0, 8.0), abs=1e-5)


def test_vllm_curve_pipelined_speedup_stays_under_the_bound_it_implies():
    sc = _constant("shared-vllm", 20.0, 8.0)
    curve = sc.quota_llm.throughput
    serial = simulate(sc, RunConfig.of("serial", 1), seed=1)[0].makespan_s
    for c in (2, 3, 5):
        got = serial / simulate(sc, RunConfig.of("pipelined", c), seed=1)[0].makespan_s
        bound = shared_pipelined_speedup_bound(10, c, 20.0, 8.0, 8.0, curve)
        assert 1.0 < got <= bound + 1e-9
    # the bound: N(C+A) over the best rate, e(c+1) = T(4)/T(1) = 255/75 = 3.4 for c = 3,
    # against the critical path C + N·A = 100 s: 280 / max(280/3.4, 100) = 2.8
    assert shared_pipelined_speedup_bound(10, 3, 20.0, 8.0, 8.0, curve) == pytest.approx(2.8)
    assert shared_efficiency(curve, 3) == pytest.approx(2.6)
