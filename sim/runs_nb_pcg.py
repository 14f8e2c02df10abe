"""numpy's PCG64 uniforms, many streams in one compiled call (the compiled runs engine's draws).

:class:`sim.draws.Draws` reads each keyed stream through numpy: set a generator's state,
advance it to the block's start, draw the block (a few µs of Python per stream). A small
runs cell reads some fifty streams, so :mod:`sim.runs_nb` draws them here instead, all at
once: the same numbers (numpy's ``PCG64``: a 128-bit LCG, multiplier
``0x2360ED051FC65DA44385DF649FCCF645``, each draw a step then the XSL-RR output of the new
state; a double is the top 53 bits times 2**-53; ``advance`` is the LCG's jump ahead), proved
equal to numpy's in tests/sim/test_runs_nb_pcg.py. 128-bit numbers are (high, low) pairs of
``uint64`` (numba's unsigned arithmetic wraps, as C's does); a product's high word is LLVM's
128-bit multiply.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from .compiled import jit as _jit
from .compiled import leaf as _leaf

__all__ = ["fill_at", "fill_uniforms"]

_M32 = np.uint64(0xFFFFFFFF)
_S32 = np.uint64(32)
_MUL_HI = np.uint64(0x2360ED051FC65DA4)
_MUL_LO = np.uint64(0x4385DF649FCCF645)
_ONE = np.uint64(1)
_ZERO = np.uint64(0)
_ROT = np.uint64(58)
_R63 = np.uint64(63)
_S11 = np.uint64(11)
_TO_DOUBLE = 1.0 / 9007199254740992.0  # 2**-53


def _mulhi_ir(typingctx: Any, a: Any, b: Any) -> tuple[Any, Any]:
    """The high 64 bits of the 128-bit product ``a * b`` (LLVM's ``mul i128``: one
    instruction on x86-64 and arm64)."""
    from llvmlite import ir
    from numba import types

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        i128 = ir.IntType(128)
        p = builder.mul(builder.zext(args[0], i128), builder.zext(args[1], i128))
        return builder.trunc(builder.lshr(p, ir.Constant(i128, 64)), ir.IntType(64))

    return types.uint64(types.uint64, types.uint64), codegen


def _intrinsic(fn: Any) -> Any:
    from numba.extending import intrinsic

    return intrinsic(fn)


_mulhi = _intrinsic(_mulhi_ir)


@_leaf
def _mul(ah: np.uint64, al: np.uint64, bh: np.uint64, bl: np.uint64) -> tuple[np.uint64, np.uint64]:
    """``a * b`` mod 2**128."""
    return _mulhi(al, bl) + ah * bl + al * bh, al * bl


@_leaf
def _add(ah: np.uint64, al: np.uint64, bh: np.uint64, bl: np.uint64) -> tuple[np.uint64, np.uint64]:
    """``a + b`` mod 2**128."""
    lo = al + bl
    carry = _ONE if lo < al else _ZERO
    return ah + bh + carry, lo


@_leaf
def _advance(
    sh: np.uint64, sl: np.uint64, ih: np.uint64, il: np.uint64, delta: np.int64
) -> tuple[np.uint64, np.uint64]:
    """The state ``delta`` steps on (PCG's ``pcg_advance_lcg_128``; ``delta`` >= 0)."""
    amh, aml = _ZERO, _ONE  # the accumulated multiplier and increment
    aph, apl = _ZERO, _ZERO
    cmh, cml = _MUL_HI, _MUL_LO
    cph, cpl = ih, il
    d = delta
    while d > 0:
        if d & 1:
            amh, aml = _mul(amh, aml, cmh, cml)
            th, tl = _mul(aph, apl, cmh, cml)
            aph, apl = _add(th, tl, cph, cpl)
        th, tl = _add(cmh, cml, _ZERO, _ONE)
        cph, cpl = _mul(th, tl, cph, cpl)
        cmh, cml = _mul(cmh, cml, cmh, cml)
        d >>= 1
    th, tl = _mul(amh, aml, sh, sl)
    return _add(th, tl, aph, apl)  # type: ignore[no-any-return]


@_leaf
def _step(
    sh: np.uint64, sl: np.uint64, ih: np.uint64, il: np.uint64
) -> tuple[np.uint64, np.uint64]:
    """The LCG's next state."""
    th, tl = _mul(sh, sl, _MUL_HI, _MUL_LO)
    return _add(th, tl, ih, il)  # type: ignore[no-any-return]


@_leaf
def _double(sh: np.uint64, sl: np.uint64) -> float:
    """The state's XSL-RR output as numpy's double: its top 53 bits times 2**-53."""
    x = sh ^ sl
    r = sh >> _ROT
    x = (x >> r) | (x << ((-r) & _R63))  # rotate right by r
    return float(np.float64(x >> _S11) * _TO_DOUBLE)


@_jit
def fill_uniforms(
    seeded: NDArray[np.uint64], skip: NDArray[np.int64], count: NDArray[np.int64],
    out: NDArray[np.float64],
) -> None:  # fmt: skip
    """Stream ``i`` (``seeded[i]``: its seeded state and increment, high and low words),
    advanced by ``skip[i]`` draws, gives ``count[i]`` doubles, written to ``out`` one stream
    after another (numpy's ``PCG64(...).advance(skip)`` then ``Generator.random(count)``)."""
    at = 0
    for i in range(seeded.shape[0]):
        ih, il = seeded[i, 2], seeded[i, 3]
        sh, sl = _advance(seeded[i, 0], seeded[i, 1], ih, il, skip[i])
        for j in range(count[i]):
            sh, sl = _step(sh, sl, ih, il)
            out[at + j] = _double(sh, sl)
        at += count[i]


_NEAR = 16  # a gap of fewer draws is stepped over, a longer one jumped (``_advance``)


@_jit
def fill_at(
    seeded: NDArray[np.uint64], start: np.int64, cells: NDArray[np.int64], out: NDArray[np.float64]
) -> None:
    """Stream ``i``'s (``seeded[i]``) draws number ``start + cells[j]`` (``cells`` ascending,
    without repeats) written to ``out[i, j]``: a few draws of each stream without drawing
    those between (the numbers ``fill_uniforms`` gives at those places)."""
    for i in range(seeded.shape[0]):
        sh, sl, ih, il = seeded[i, 0], seeded[i, 1], seeded[i, 2], seeded[i, 3]
        pos = np.int64(0)  # draws made so far
        for j in range(cells.shape[0]):
            gap = start + cells[j] - pos
            if gap >= _NEAR:
                sh, sl = _advance(sh, sl, ih, il, gap)
            else:
                for _ in range(gap):
                    sh, sl = _step(sh, sl, ih, il)
            sh, sl = _step(sh, sl, ih, il)
            out[i, j] = _double(sh, sl)
            pos = start + cells[j] + 1
