import pytest

from sim import Quota, RetryPolicy, RunConfig, load_scenario, simulate
from sim.fast import quota_free, simulate_fast
from tests.conftest import assert_same_run


def _faulty(name):
    sc = load_scenario(name)
    return sc.replace(
        quota_llm=Quota(p_429=0.15, p_5xx=0.1, retry_after_s=1.0),
        quota_tts=Quota(p_5xx=0.03, p_429=0.03, retry_after_s=None),
        request_timeout_s=30.0,
    ).with_client(retry_tts=RetryPolicy(max_retries=1, initial_delay_s=0.5))


@pytest.mark.parametrize("scenario", ["default", "tts-heavy", "content-heavy", "faulty"])
@pytest.mark.parametrize("mode", ["serial", "hybrid", "pipelined"])
@pytest.mark.parametrize("c", [1, 2, 3, 10])
def test_fast_path_equals_simpy_run_for_run(scenario, mode, c):
    sc = _faulty("default") if scenario == "faulty" else load_scenario(scenario)
    assert quota_free(sc)
    a = simulate(sc, RunConfig.of(mode, c), reps=40, seed=7, run_id=3, engine="simpy")
    b = simulate_fast(sc, RunConfig.of(mode, c), 40, seed=7, first_run=3).results()
    for x, y in zip(a, b, strict=True):
        assert_same_run(x, y)


def test_fast_path_exercises_faults():
    res = simulate_fast(_faulty("default"), RunConfig.of("pipelined", 3), 300, seed=1)
    df = res.frame()
    assert df["retries"].sum() > 0 and df["http_429"].sum() > 0 and df["timeouts"].sum() > 0
    assert (df["status"] == "paused").any()
    assert (df["status"] == "first_scene_failed").any()
    assert (df["upstream"] == "pr696").all()


def test_fast_path_refuses_quota_cells():
    assert not quota_free(load_scenario("low-quota"))
    with pytest.raises(ValueError, match="quota-free"):
        simulate_fast(load_scenario("low-quota"), RunConfig.of("serial", 1), 10)
