"""What the compiled loops (:mod:`sim.fast_quota_loop`, :mod:`sim.runs_nb_loop`) share: numba's
decorator as they use it, and the lock under which a process first calls one. numba itself is
imported only when a loop module is (never at ``sim``'s import)."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar, cast

__all__ = ["CompileLock", "jit", "leaf", "njit_cached"]

_F = TypeVar("_F", bound=Callable[..., Any])


def njit_cached(fn: _F, **opts: Any) -> _F:
    """``numba.njit(cache=True, **opts)``, typed; in memory only where no cache folder is
    writable. Without numba's reference counting (``_nrt=False``): the loops allocate nothing,
    and counting every array argument of every call made them ten times slower."""
    import numba

    options: dict[str, Any] = {"_nrt": False, **opts}
    try:
        out = numba.njit(cache=True, **options)(fn)
    except RuntimeError:  # numba found no writable place for its cache
        out = numba.njit(**options)(fn)
    return cast(_F, out)


def jit(fn: _F) -> _F:
    """A compiled function of a loop, called (compiled once, cached)."""
    return njit_cached(fn)


def leaf(fn: _F) -> _F:
    """:func:`jit` for a small helper, or one called from one place: inlined where it is
    called (numba's IR: no call, no arguments passed)."""
    return njit_cached(fn, inline="always")


class CompileLock:
    """A compiled loop's first call in a process, under a lock file shared by processes (one
    per checkout and loop): the first to come compiles the loop and writes numba's cache
    (tens of seconds of CPU), the others wait and then load it from the cache (a fraction of a
    second) instead of each compiling it too (pytest's workers, a sweep's process pool).
    ``before`` runs under the lock ahead of that first call. Later calls take no lock."""

    def __init__(self, loop_file: Path, tag: str, before: Callable[[], object] | None = None):
        self.loop_file, self.tag, self.before = loop_file, tag, before
        self.loaded = False  # whether this process has called the loop

    def path(self) -> Path:
        """The lock file of this checkout's loop (one per source file)."""
        digest = hashlib.sha256(str(self.loop_file.resolve()).encode()).hexdigest()[:16]
        return Path(tempfile.gettempdir()) / f"scenebench-{self.tag}-{digest}.lock"

    @contextlib.contextmanager
    def first_use(self) -> Iterator[None]:
        if self.loaded:
            yield
            return
        with open(self.path(), "a+b") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                if self.before is not None:
                    self.before()
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)
        self.loaded = True
