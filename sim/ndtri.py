"""The inverse of the standard normal CDF, compiled, with scipy's bits (the log-normal draws).

``scipy.special.ndtri`` is Cephes' ``ndtri`` (Stephen L. Moshier, 1984-89; BSD, as SciPy
ships it in ``xsf/cephes/ndtri.h``): a rational function of ``y - 1/2`` in the middle
(``exp(-2) < y <= 1 - exp(-2)``), and in the tails one of ``1/x`` after
``x = sqrt(-2 log y)``, ``x - log(x)/x``. It is re-stated here operation for operation (the
same Horner order, the same divisions, libm's ``log`` and ``sqrt``, no fused multiply-add:
numba without ``fastmath``), so each value has the same bits; tests/sim/test_ndtri.py holds
it to scipy's on millions of uniforms and on the edges of every branch. What makes it faster
than scipy's element-by-element loop (about 2x here) is the order of work only: the middle's
formula for every value in one loop (vectorised), the tails gathered and their ``log``\\ s
taken in loops of their own. Where numba would use Intel's SVML for those loops (its ``log``
is not libm's), scipy's own function is called instead; :class:`sim.dists.LogNormal` calls it
for arrays of :data:`SMALL` values or more (this module imports numba).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from numpy.typing import NDArray
from scipy import special

from .compiled import CompileLock, njit_cached

__all__ = ["ndtri"]

F64 = NDArray[np.float64]
_F = TypeVar("_F", bound=Any)

_P0 = (-5.99633501014107895267e1, 9.80010754185999661536e1, -5.66762857469070293439e1,
       1.39312609387279679503e1, -1.23916583867381258016e0)  # fmt: skip
_Q0 = (1.95448858338141759834e0, 4.67627912898881538453e0, 8.63602421390890590575e1,
       -2.25462687854119370527e2, 2.00260212380060660359e2, -8.20372256168333339912e1,
       1.59056225126211695515e1, -1.18331621121330003142e0)  # fmt: skip
_P1 = (4.05544892305962419923e0, 3.15251094599893866154e1, 5.71628192246421288162e1,
       4.40805073893200834700e1, 1.46849561928858024014e1, 2.18663306850790267539e0,
       -1.40256079171354495875e-1, -3.50424626827848203418e-2,
       -8.57456785154685413611e-4)  # fmt: skip
_Q1 = (1.57799883256466749731e1, 4.53907635128879210584e1, 4.13172038254672030440e1,
       1.50425385692907503408e1, 2.50464946208309415979e0, -1.42182922854787788574e-1,
       -3.80806407691578277194e-2, -9.33259480895457427372e-4)  # fmt: skip
_P2 = (3.23774891776946035970e0, 6.91522889068984211695e0, 3.93881025292474443415e0,
       1.33303460815807542389e0, 2.01485389549179081538e-1, 1.23716634817820021358e-2,
       3.01581553508235416007e-4, 2.65806974686737550832e-6, 6.23974539184983293730e-9)  # fmt: skip
_Q2 = (6.02427039364742014255e0, 3.67983563856160859403e0, 1.37702099489081330271e0,
       2.16236993594496635890e-1, 1.34204006088543189037e-2, 3.28014464682127739104e-4,
       2.89247864745380683936e-6, 6.79019408009981274425e-9)  # fmt: skip
_S2PI = 2.50662827463100050242e0  # sqrt(2 pi)
_EXPM2 = 0.13533528323661269189  # exp(-2)
_HI = 1.0 - _EXPM2  # (as C folds it: in double)
_BLOCK = 4096  # values per pass (the scratch stays in cache)


def _inline(fn: _F) -> _F:
    """Compiled and inlined where called; no division checks (none can divide by zero)."""
    return njit_cached(fn, inline="always", error_model="numpy")


def _compiled(fn: _F) -> _F:
    return njit_cached(fn, error_model="numpy")


@_inline
def _polevl(x: float, c: tuple[float, ...]) -> float:
    """Cephes' ``polevl``: ``c[0] x^n + ... + c[n]``, Horner from ``c[0]``."""
    ans = c[0]
    for k in range(1, len(c)):
        ans = ans * x + c[k]
    return ans


@_inline
def _p1evl(x: float, c: tuple[float, ...]) -> float:
    """Cephes' ``p1evl``: as :func:`_polevl` with a leading coefficient of 1 not stored."""
    ans = x + c[0]
    for k in range(1, len(c)):
        ans = ans * x + c[k]
    return ans


@_inline
def _middle(y0: float) -> float:
    y = y0 - 0.5
    y2 = y * y
    x = y + y * (y2 * _polevl(y2, _P0) / _p1evl(y2, _Q0))
    return x * _S2PI


@_inline
def _tail_end(x: float, lx: float) -> float:
    """The tail's value (before its sign) from ``x = sqrt(-2 log y)`` and ``log(x)``."""
    x0 = x - lx / x
    z = 1.0 / x
    p, q = (_P1, _Q1) if x < 8.0 else (_P2, _Q2)
    return x0 - z * _polevl(z, p) / _p1evl(z, q)


@_inline
def _one(y0: float) -> float:
    """ndtri of one value, as Cephes writes it (the edges and the rare cases)."""
    if y0 == 0.0:
        return -math.inf
    if y0 == 1.0:
        return math.inf
    if y0 < 0.0 or y0 > 1.0:
        return math.nan
    code = 1
    y = y0
    if y > _HI:
        y = 1.0 - y
        code = 0
    if y > _EXPM2:
        return _middle(y)
    x = math.sqrt(-2.0 * math.log(y))
    x = _tail_end(x, math.log(x))
    return -x if code != 0 else x


@_compiled
def _block(u: F64, out: F64, idx: NDArray[np.int64], y: F64, sg: F64, t: F64, lx: F64) -> None:
    """ndtri of ``u`` into ``out`` (at most a block; the rest are scratch of that size)."""
    for i in range(u.shape[0]):  # the middle's formula for every value
        out[i] = _middle(u[i])
    m, odd = 0, 0
    for i in range(u.shape[0]):  # the tails gathered, without a branch
        v = u[i]
        hi = v > _HI
        idx[m] = i
        y[m] = 1.0 - v if hi else v
        sg[m] = 1.0 if hi else -1.0
        m += not (v > _EXPM2 and v <= _HI)
        odd += not (v > 0.0 and v < 1.0)
    for k in range(m):
        t[k] = math.log(y[k])
    for k in range(m):
        t[k] = math.sqrt(-2.0 * t[k])
    for k in range(m):
        lx[k] = math.log(t[k])
    for k in range(m):
        odd += not (t[k] < 8.0)
        lx[k] = _tail_end(t[k], lx[k]) * sg[k]  # times 1 or -1: the sign, exactly
    for k in range(m):
        out[idx[k]] = lx[k]
    if odd:  # 0, 1, outside [0, 1], NaN, or x >= 8: as Cephes writes it
        for k in range(m):
            if not (t[k] < 8.0) or not (u[idx[k]] > 0.0 and u[idx[k]] < 1.0):
                out[idx[k]] = _one(u[idx[k]])


@_compiled
def _all(u: F64, out: F64, idx: NDArray[np.int64], y: F64, sg: F64, t: F64, lx: F64) -> None:
    for s in range(0, u.shape[0], _BLOCK):
        e = min(s + _BLOCK, u.shape[0])
        _block(u[s:e], out[s:e], idx, y, sg, t, lx)


_LOCK = CompileLock(Path(__file__), "numba-ndtri")


def _svml() -> bool:
    """Whether numba would use Intel's SVML for the ``log`` loops (not libm's bits)."""
    import numba

    return bool(getattr(numba.config, "USING_SVML", False))


def ndtri(u: F64) -> F64:
    """``scipy.special.ndtri(u)`` (float64, any shape), bit for bit."""
    x = np.ascontiguousarray(u, dtype=np.float64)
    if _svml():
        return np.asarray(special.ndtri(x), dtype=np.float64)
    out = np.empty_like(x)
    b = min(_BLOCK, x.size)
    idx = np.empty(b, np.int64)
    y, sg, t, lx = (np.empty(b) for _ in range(4))
    with _LOCK.first_use():
        _all(x.reshape(-1), out.reshape(-1), idx, y, sg, t, lx)
    return out
