"""The fake provider's blocks of keyed draws take scipy's quantiles, never sim.ndtri's
compiled ones (the same numbers): numba's import and first call would fall inside a run timed
on the wall clock. The model's draws do take them."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.typing import NDArray

import sim.ndtri as nd
from runner.world.fake_provider import _BlockProvider
from sim import load_scenario
from sim.dists import COMPILED_FROM
from sim.draws import Draws


def test_the_real_worlds_draws_never_call_the_compiled_ndtri(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def refuse(u: NDArray[np.float64]) -> NDArray[np.float64]:
        raise AssertionError("sim.ndtri called")

    monkeypatch.setattr(nd, "ndtri", refuse)
    sc = load_scenario("default")
    prov = _BlockProvider(sc, 3)
    d, _ = prov.draws_for(100)
    assert not d.compiled
    assert d.latency_us(2, 0).size >= COMPILED_FROM and d.playback_table_us().size > 0
    with pytest.raises(AssertionError, match=r"sim\.ndtri called"):
        Draws(sc, 3, 64, 128).latency_us(2, 0)  # (the model's: compiled)
