import numpy as np
import pytest
from scipy import stats

from sim.dists import (
    Constant,
    ConstantInt,
    Empirical,
    EmpiricalInt,
    Exponential,
    Gamma,
    LogNormal,
    Uniform,
    UniformInt,
    dist_from_mapping,
    int_dist_from_mapping,
    lognormal_quantile,
)

N = 200_000


@pytest.mark.parametrize(
    ("dist", "frozen"),
    [
        (Exponential(3.0), stats.expon(scale=3.0)),
        (LogNormal(2.0, 0.5), stats.lognorm(s=0.5, scale=2.0)),
        (Gamma(2.5, 10.0), stats.gamma(a=2.5, scale=4.0)),
        (Uniform(1.0, 4.0), stats.uniform(loc=1.0, scale=3.0)),
    ],
)
def test_sample_matches_theory(dist, frozen):
    rng = np.random.default_rng(11)
    x = dist.sample(rng, N)
    assert dist.mean == pytest.approx(frozen.mean(), rel=1e-12)
    se = frozen.std() / np.sqrt(N)
    assert abs(x.mean() - dist.mean) < 4 * se
    # the whole shape, not just the mean
    assert stats.kstest(x, frozen.cdf).pvalue > 1e-3
    u = np.array([0.01, 0.5, 0.99])
    np.testing.assert_allclose(dist.quantile(u), frozen.ppf(u), rtol=1e-9)


def test_empirical_resamples_observed_values_uniformly():
    obs = (1.0, 2.0, 2.0, 7.0)
    d = Empirical(obs)
    x = d.sample(np.random.default_rng(3), N)
    assert set(np.unique(x)) == {1.0, 2.0, 7.0}
    assert np.mean(x == 2.0) == pytest.approx(0.5, abs=0.01)
    assert d.mean == pytest.approx(3.0)


def test_int_dists():
    rng = np.random.default_rng(5)
    u = UniformInt(3, 6)
    x = u.sample(rng, N)
    assert x.min() == 3 and x.max() == 6 and u.max == 6
    assert abs(x.mean() - 4.5) < 0.02
    assert np.all(ConstantInt(4).sample(rng, 10) == 4)
    e = EmpiricalInt((0, 5))
    assert set(np.unique(e.sample(rng, 1000))) == {0, 5}


def test_same_generator_state_gives_same_draws():
    a = LogNormal(1.0, 0.3).sample(np.random.default_rng(9), 50)
    b = LogNormal(1.0, 0.3).sample(np.random.default_rng(9), 50)
    assert np.array_equal(a, b)


@pytest.mark.parametrize(
    ("ctor", "msg"),
    [
        (lambda: Exponential(0.0), "mean_s"),
        (lambda: LogNormal(-1.0, 0.5), "median_s"),
        (lambda: LogNormal(1.0, 0.0), "sigma"),
        (lambda: Gamma(0.0, 1.0), "shape"),
        (lambda: Constant(float("nan")), "value_s"),
        (lambda: Uniform(3.0, 1.0), "high_s"),
        (lambda: Empirical(()), "values_s"),
        (lambda: UniformInt(5, 2), "high"),
        (lambda: ConstantInt(-1), "value"),
    ],
)
def test_invalid_parameters_raise_naming_the_field(ctor, msg):
    with pytest.raises(ValueError, match=msg):
        ctor()


def test_from_mapping_names_allowed_kinds_and_fields():
    assert dist_from_mapping({"dist": "gamma", "shape": 2.0, "mean_s": 4.0}) == Gamma(2.0, 4.0)
    assert int_dist_from_mapping({"dist": "uniform_int", "low": 1, "high": 2}) == UniformInt(1, 2)
    with pytest.raises(ValueError, match="dist: must be one of constant"):
        dist_from_mapping({"dist": "weibull"})
    with pytest.raises(ValueError, match="mean: unknown"):
        dist_from_mapping({"dist": "exponential", "mean": 2.0})
    with pytest.raises(ValueError, match="median_s: required"):
        dist_from_mapping({"dist": "lognormal", "sigma": 0.2})


@pytest.mark.parametrize("compiled", [False, True])
@pytest.mark.parametrize("size", [7, 3_000])  # (under and over COMPILED_FROM)
def test_lognormal_quantile_of_several_equals_each_log_normals_own(compiled, size):
    rng = np.random.default_rng(5)
    u = rng.random(size)
    u[:3] = [0.0, 1e-300, 1.0 - 2**-53]  # (the ends too)
    dists = [LogNormal(26.0, 0.25), LogNormal(1.2, 0.5), LogNormal(18.0, 0.3)]
    which = rng.integers(0, len(dists), size)
    med = np.array([dists[i].median_s for i in which])
    sigma = np.array([dists[i].sigma for i in which])
    before = u.copy()
    got = lognormal_quantile(u, med, sigma, compiled=compiled)
    want = np.array([dists[i].quantile(u[k : k + 1])[0] for k, i in enumerate(which)])
    assert got.dtype == np.float64
    assert got.tobytes() == want.tobytes()
    assert u.tobytes() == before.tobytes()  # (a new array: u left as it was)
