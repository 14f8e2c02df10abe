"""run_result builds its RunResult without the frozen dataclass's __init__ (sim.timeline._built):
the object must be the one ``RunResult(**fields)`` makes — equal, the same ``__dict__`` in the
same order, the same pickle — for every field, including the defaults it must set itself."""

import dataclasses
import pickle

from sim.rules import Counts, RunStatus
from sim.scenario import load_scenario
from sim.schema import RunResult
from sim.timeline import Timeline, run_result


def _result(ready: list[tuple[int, int]], failed: list[int]) -> RunResult:
    sc = load_scenario("default")
    counts = Counts(requests=7, http_429=2, http_5xx=1, retries=3, timeouts=1)
    status = RunStatus.PAUSED if failed else RunStatus.COMPLETED
    tl = Timeline(ready, failed, counts, status, 9_000_000)
    play = {i: 60_000_000 for i, _ in ready}
    return run_result(
        sc, tl, play, world="sim", mode="pipelined", concurrency=3, tts_concurrency=3,
        seed=5, classroom=11, tenants=2, tenant=1,
    )  # fmt: skip


def test_built_result_is_the_one_init_makes() -> None:
    for ready, failed in (([(0, 1_000_000), (2, 4_500_000)], [1]), ([], [0])):
        got = _result(ready, failed)
        want = RunResult(**{f.name: getattr(got, f.name) for f in dataclasses.fields(RunResult)})
        assert list(vars(got)) == list(vars(want)) == [f.name for f in dataclasses.fields(got)]
        assert repr(vars(got)) == repr(vars(want))  # NaN fields too (NaN != NaN in ==)
        assert pickle.dumps(got) == pickle.dumps(want)
        assert got.scene_order == tuple(i for i, _ in ready)
        assert got.scene_ready_s == tuple(t / 1e6 for _, t in ready)
        assert got.schema_version == want.schema_version
        assert (got.requests, got.retries, got.tenant) == (7, 3, 1)
