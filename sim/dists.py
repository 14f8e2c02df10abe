"""Latency and count distributions.

Every distribution is a tiny frozen dataclass with an analytic ``mean`` and two
ways to draw: ``sample(rng, n)`` from an explicit :class:`numpy.random.Generator`,
and ``quantile(u)`` (inverse transform), which the keyed draws use so that a
call's latency is a pure function of its key (see :mod:`sim.draws`).
Invalid parameters raise :class:`~sim.errors.UserError` (a ``ValueError``); nothing is
clipped.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray
from scipy import special

from .errors import UserError

__all__ = [
    "Constant",
    "ConstantInt",
    "Dist",
    "Empirical",
    "EmpiricalInt",
    "Exponential",
    "Gamma",
    "IntDist",
    "LogNormal",
    "Uniform",
    "UniformInt",
    "dist_from_mapping",
    "int_dist_from_mapping",
    "lognormal_quantile",
    "quantile",
]

FloatArray = NDArray[np.float64]
COMPILED_FROM = 512  # quantile(..., compiled=True): a log-normal's from this many values
IntArray = NDArray[np.int64]


class Dist(Protocol):
    """A non-negative continuous distribution of seconds."""

    @property
    def mean(self) -> float: ...

    def quantile(self, u: FloatArray) -> FloatArray: ...

    def sample(self, rng: np.random.Generator, n: int) -> FloatArray: ...

    def to_mapping(self) -> dict[str, Any]: ...


class IntDist(Protocol):
    """A distribution on a finite set of non-negative integers."""

    @property
    def mean(self) -> float: ...

    @property
    def max(self) -> int: ...

    def quantile(self, u: FloatArray) -> IntArray: ...

    def sample(self, rng: np.random.Generator, n: int) -> IntArray: ...

    def to_mapping(self) -> dict[str, Any]: ...


def _finite(name: str, value: float, *, positive: bool = False) -> None:
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        raise UserError(f"{name}: must be a finite number, got {value!r}")
    if positive and value <= 0:
        raise UserError(f"{name}: must be > 0, got {value!r}")
    if not positive and value < 0:
        raise UserError(f"{name}: must be >= 0, got {value!r}")


class _Sampling:
    def quantile(self, u: FloatArray) -> Any:  # pragma: no cover - overridden
        raise NotImplementedError

    def sample(self, rng: np.random.Generator, n: int) -> Any:
        """Draw ``n`` values from ``rng`` by inverse transform."""
        return self.quantile(rng.random(n))


@dataclass(frozen=True)
class Constant(_Sampling):
    value_s: float

    def __post_init__(self) -> None:
        _finite("value_s", self.value_s)

    @property
    def mean(self) -> float:
        return float(self.value_s)

    def quantile(self, u: FloatArray) -> FloatArray:
        return np.full(np.shape(u), float(self.value_s))

    def to_mapping(self) -> dict[str, Any]:
        return {"dist": "constant", "value_s": self.value_s}


@dataclass(frozen=True)
class Uniform(_Sampling):
    low_s: float
    high_s: float

    def __post_init__(self) -> None:
        _finite("low_s", self.low_s)
        _finite("high_s", self.high_s)
        if self.high_s < self.low_s:
            raise UserError(f"high_s: must be >= low_s ({self.low_s}), got {self.high_s}")

    @property
    def mean(self) -> float:
        return (self.low_s + self.high_s) / 2.0

    def quantile(self, u: FloatArray) -> FloatArray:
        return np.asarray(
            self.low_s + (self.high_s - self.low_s) * np.asarray(u, dtype=float), dtype=float
        )

    def to_mapping(self) -> dict[str, Any]:
        return {"dist": "uniform", "low_s": self.low_s, "high_s": self.high_s}


@dataclass(frozen=True)
class Exponential(_Sampling):
    mean_s: float

    def __post_init__(self) -> None:
        _finite("mean_s", self.mean_s, positive=True)

    @property
    def mean(self) -> float:
        return float(self.mean_s)

    def quantile(self, u: FloatArray) -> FloatArray:
        return np.asarray(-self.mean_s * np.log1p(-np.asarray(u, dtype=float)), dtype=float)

    def to_mapping(self) -> dict[str, Any]:
        return {"dist": "exponential", "mean_s": self.mean_s}


@dataclass(frozen=True)
class LogNormal(_Sampling):
    """Log-normal by its median (seconds) and the sigma of the underlying normal."""

    median_s: float
    sigma: float

    def __post_init__(self) -> None:
        _finite("median_s", self.median_s, positive=True)
        _finite("sigma", self.sigma, positive=True)

    @property
    def mean(self) -> float:
        return float(self.median_s * math.exp(self.sigma**2 / 2.0))

    def quantile(self, u: FloatArray) -> FloatArray:
        return self.of_normal(special.ndtri(np.asarray(u, dtype=float)))

    def of_normal(self, z: FloatArray) -> FloatArray:
        """The quantile of the standard normal quantile ``z`` (``ndtri(u)``)."""
        return np.asarray(self.median_s * np.exp(self.sigma * z), dtype=float)

    def to_mapping(self) -> dict[str, Any]:
        return {"dist": "lognormal", "median_s": self.median_s, "sigma": self.sigma}


@dataclass(frozen=True)
class Gamma(_Sampling):
    """Gamma by its shape and mean (seconds); scale = mean / shape."""

    shape: float
    mean_s: float

    def __post_init__(self) -> None:
        _finite("shape", self.shape, positive=True)
        _finite("mean_s", self.mean_s, positive=True)

    @property
    def mean(self) -> float:
        return float(self.mean_s)

    def quantile(self, u: FloatArray) -> FloatArray:
        scale = self.mean_s / self.shape
        return np.asarray(
            scale * special.gammaincinv(self.shape, np.asarray(u, dtype=float)), dtype=float
        )

    def to_mapping(self) -> dict[str, Any]:
        return {"dist": "gamma", "shape": self.shape, "mean_s": self.mean_s}


@dataclass(frozen=True)
class Empirical(_Sampling):
    """Resampled uniformly from observed seconds (a bootstrap of the trace)."""

    values_s: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.values_s) == 0:
            raise UserError("values_s: must be a non-empty list of seconds")
        for v in self.values_s:
            _finite("values_s[]", v)

    @property
    def mean(self) -> float:
        return float(np.mean(self.values_s))

    def quantile(self, u: FloatArray) -> FloatArray:
        arr = np.asarray(self.values_s, dtype=float)
        idx = np.minimum((np.asarray(u, dtype=float) * len(arr)).astype(np.int64), len(arr) - 1)
        return arr[idx]

    def to_mapping(self) -> dict[str, Any]:
        return {"dist": "empirical", "values_s": list(self.values_s)}


@dataclass(frozen=True)
class ConstantInt(_Sampling):
    value: int

    def __post_init__(self) -> None:
        if not isinstance(self.value, int) or isinstance(self.value, bool) or self.value < 0:
            raise UserError(f"value: must be an integer >= 0, got {self.value!r}")

    @property
    def mean(self) -> float:
        return float(self.value)

    @property
    def max(self) -> int:
        return self.value

    def quantile(self, u: FloatArray) -> IntArray:
        return np.full(np.shape(u), self.value, dtype=np.int64)

    def to_mapping(self) -> dict[str, Any]:
        return {"dist": "constant", "value": self.value}


@dataclass(frozen=True)
class UniformInt(_Sampling):
    """Uniform on the integers low..high inclusive."""

    low: int
    high: int

    def __post_init__(self) -> None:
        for name, v in (("low", self.low), ("high", self.high)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise UserError(f"{name}: must be an integer >= 0, got {v!r}")
        if self.high < self.low:
            raise UserError(f"high: must be >= low ({self.low}), got {self.high}")

    @property
    def mean(self) -> float:
        return (self.low + self.high) / 2.0

    @property
    def max(self) -> int:
        return self.high

    def quantile(self, u: FloatArray) -> IntArray:
        span = self.high - self.low + 1
        k = (np.asarray(u, dtype=float) * span).astype(np.int64)
        return self.low + np.minimum(k, span - 1)

    def to_mapping(self) -> dict[str, Any]:
        return {"dist": "uniform_int", "low": self.low, "high": self.high}


@dataclass(frozen=True)
class EmpiricalInt(_Sampling):
    """Resampled uniformly from observed counts."""

    values: tuple[int, ...]

    def __post_init__(self) -> None:
        if len(self.values) == 0:
            raise UserError("values: must be a non-empty list of integers >= 0")
        for v in self.values:
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise UserError(f"values[]: must be integers >= 0, got {v!r}")

    @property
    def mean(self) -> float:
        return float(np.mean(self.values))

    @property
    def max(self) -> int:
        return max(self.values)

    def quantile(self, u: FloatArray) -> IntArray:
        arr = np.asarray(self.values, dtype=np.int64)
        idx = np.minimum((np.asarray(u, dtype=float) * len(arr)).astype(np.int64), len(arr) - 1)
        return arr[idx]

    def to_mapping(self) -> dict[str, Any]:
        return {"dist": "empirical", "values": list(self.values)}


_CONT_KINDS: dict[str, tuple[type, tuple[str, ...]]] = {
    "constant": (Constant, ("value_s",)),
    "uniform": (Uniform, ("low_s", "high_s")),
    "exponential": (Exponential, ("mean_s",)),
    "lognormal": (LogNormal, ("median_s", "sigma")),
    "gamma": (Gamma, ("shape", "mean_s")),
    "empirical": (Empirical, ("values_s",)),
}
_INT_KINDS: dict[str, tuple[type, tuple[str, ...]]] = {
    "constant": (ConstantInt, ("value",)),
    "uniform_int": (UniformInt, ("low", "high")),
    "empirical": (EmpiricalInt, ("values",)),
}


def field_name(key: object) -> str:
    """A field name as it may appear in a one-line error: plain names as they are, anything
    else (spaces, newlines, non-strings) quoted."""
    if isinstance(key, str) and key and all(ch.isalnum() or ch in "_-." for ch in key):
        return key
    return repr(key)


def _build(kinds: Mapping[str, tuple[type, tuple[str, ...]]], m: Mapping[str, Any]) -> Any:
    if not isinstance(m, Mapping):
        raise UserError(f"must be a table like {{dist = ...}}, got {m!r}")
    kind = m.get("dist")
    if not isinstance(kind, str) or kind not in kinds:
        raise UserError(f"dist: must be one of {', '.join(kinds)}; got {kind!r}")
    cls, fields = kinds[kind]
    extra = sorted(set(m) - {"dist", *fields})
    if extra:
        raise UserError(
            f"{field_name(extra[0])}: unknown for dist {kind!r}; allowed: {', '.join(fields)}"
        )
    missing = [f for f in fields if f not in m]
    if missing:
        raise UserError(f"{missing[0]}: required for dist {kind!r}")
    args = []
    for f in fields:
        v = m[f]
        if f in ("values_s", "values"):
            if not isinstance(v, Sequence) or isinstance(v, str):
                raise UserError(f"{f}: must be a list, got {v!r}")
            v = tuple(v)
        args.append(v)
    return cls(*args)


def dist_from_mapping(m: Mapping[str, Any]) -> Dist:
    """Build a latency distribution from a TOML table such as ``{dist="lognormal", ...}``."""
    d: Dist = _build(_CONT_KINDS, m)
    return d


def int_dist_from_mapping(m: Mapping[str, Any]) -> IntDist:
    """Build a count distribution from a TOML table such as ``{dist="uniform_int", ...}``."""
    d: IntDist = _build(_INT_KINDS, m)
    return d


def quantile(dist: Dist, u: FloatArray, *, compiled: bool) -> FloatArray:
    """``dist.quantile(u)``, the same numbers; with ``compiled``, a log-normal's of
    :data:`COMPILED_FROM` values or more through :func:`sim.ndtri.ndtri` (scipy's ``ndtri``
    compiled, bit for bit, about twice as fast; it imports numba, which the real world's
    provider never does: its clock is the wall's)."""
    if compiled and isinstance(dist, LogNormal) and np.size(u) >= COMPILED_FROM:
        return lognormal_quantile(u, dist.median_s, dist.sigma, compiled=True)
    return dist.quantile(u)


def lognormal_quantile(
    u: FloatArray,
    median_s: float | FloatArray,
    sigma: float | FloatArray,
    *,
    compiled: bool,
) -> FloatArray:
    """Value by value ``LogNormal(median_s[i], sigma[i]).quantile(u[i])`` (arrays of ``u``'s
    shape, or one log-normal's numbers): the same operations in the same order as
    :meth:`LogNormal.quantile`, so the same bits, written over the normal quantiles' new
    array (no other); :func:`quantile`'s ``compiled``."""
    x = np.asarray(u, dtype=float)
    if compiled and x.size >= COMPILED_FROM:
        from .ndtri import ndtri

        z = ndtri(x)
    else:
        z = np.asarray(special.ndtri(x), dtype=float)
    np.multiply(sigma, z, out=z)
    np.exp(z, out=z)
    np.multiply(median_s, z, out=z)
    return z
