"""sim.ndtri: scipy's inverse normal CDF re-stated and compiled gives scipy's bits: on
millions of uniforms as the keyed draws make them, at the edges of each of its branches, on
the values it must pass to Cephes' own order (0, 1, outside [0, 1], NaN, the far tail), in
any shape; and the log-normal quantiles the draws use are the same either way."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.typing import NDArray
from scipy import special

import sim.ndtri as nd
from sim.dists import LogNormal, quantile


def _same(a: NDArray[np.float64], b: NDArray[np.float64]) -> bool:
    return a.shape == b.shape and a.tobytes() == b.tobytes()


def _edges() -> NDArray[np.float64]:
    e2 = 0.13533528323661269189  # exp(-2): where the middle ends
    far = float(np.exp(-32.0))  # where the tail's second rational starts
    out: list[float] = [0.0, 1.0, 0.5, 2**-53, 2**-1022, 5e-324, 1 - 2**-53, -1.0, 2.0]
    out += [np.nan, np.inf, -np.inf]
    for x in (e2, 1 - e2, far, 1 - far, 0.5):
        v = np.full(60, x)
        up, down = v.copy(), v.copy()
        for i in range(1, 60):
            up[i] = np.nextafter(up[i - 1], 2.0)
            down[i] = np.nextafter(down[i - 1], -1.0)
        out += [*up, *down]
    out += list(2.0 ** -np.linspace(0, 1074, 5000))  # every scale down to the smallest
    return np.array(out)


def test_millions_of_uniforms_give_scipys_bits() -> None:
    u = np.random.default_rng(2024).random(3_000_000)
    assert _same(nd.ndtri(u), special.ndtri(u))


def test_the_edges_of_every_branch_give_scipys_bits() -> None:
    x = _edges()
    x = np.concatenate([x, 1.0 - x[np.isfinite(x)]])
    got = nd.ndtri(np.tile(x, 3))  # more than a block: the blocks' seams too
    assert _same(got, special.ndtri(np.tile(x, 3)))


def test_any_shape_and_layout() -> None:
    u = np.random.default_rng(5).random((300, 60))
    assert _same(nd.ndtri(u), special.ndtri(u))
    assert _same(nd.ndtri(u[:, ::2]), special.ndtri(u[:, ::2]))


def test_where_numba_would_use_svml_scipy_is_called(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    scipy_ndtri = special.ndtri
    monkeypatch.setattr(nd, "_svml", lambda: True)
    monkeypatch.setattr(nd.special, "ndtri", lambda x: (calls.append(1), scipy_ndtri(x))[1])
    u = np.random.default_rng(6).random(2000)
    assert _same(nd.ndtri(u), scipy_ndtri(u)) and calls == [1]


@pytest.mark.parametrize("compiled", [True, False])
@pytest.mark.parametrize("n", [10, 511, 512, 20_000])
def test_log_normal_quantiles_are_the_same_either_way(n: int, compiled: bool) -> None:
    """sim.dists.quantile: below COMPILED_FROM (or not compiled) scipy's ndtri, from it on
    sim.ndtri's: the same numbers as LogNormal.quantile."""
    dist = LogNormal(median_s=1.2, sigma=0.5)
    u = np.random.default_rng(n).random(n)
    want = dist.median_s * np.exp(dist.sigma * special.ndtri(u))
    assert _same(quantile(dist, u, compiled=compiled), want)
    assert _same(dist.quantile(u), want)
