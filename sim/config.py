"""One run's settings as one typed, validated value: :class:`RunConfig`.

Built and checked once, at the edge (the command line, a sweep cell, a test), and passed
whole to both worlds' one entry point each (:func:`sim.simulate`, :func:`runner.run`) and
below them; nothing below re-checks or re-clamps it. Light: no numpy, no SimPy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import cast

from .errors import UserError
from .rules import (
    MODES,
    POLICIES,
    STAGGER_DISTS,
    Mode,
    Policy,
    clamp_concurrency,
)

__all__ = ["RunConfig", "check_mode"]


def check_mode(mode: str) -> None:
    """The one check of a generation mode (a one-line :class:`~sim.errors.UserError`)."""
    if mode not in MODES:
        raise UserError(f"mode: must be one of {', '.join(MODES)}; got {mode!r}")


def _check(mode: str, adaptive: str, tenants: int, stagger_s: float, stagger_dist: str) -> None:
    """One-line errors naming the setting; the mode first."""
    check_mode(mode)
    if adaptive not in POLICIES:
        raise UserError(f"adaptive: must be one of {', '.join(POLICIES)}; got {adaptive!r}")
    if not (stagger_s >= 0 and math.isfinite(stagger_s)):
        raise UserError(f"stagger_s: must be a finite number >= 0, got {stagger_s}")
    if tenants < 1:
        raise UserError(f"tenants: must be >= 1, got {tenants}")
    if stagger_dist not in STAGGER_DISTS:
        raise UserError(
            f"stagger_dist: must be one of {', '.join(STAGGER_DISTS)}; got {stagger_dist!r}"
        )


@dataclass(frozen=True)
class RunConfig:
    """How a run goes (the scenario says what it meets; seed and run id which draws).

    ``concurrency`` is clamped like upstream's ``PARALLEL_SCENE_CONCURRENCY``
    (:func:`sim.rules.clamp_concurrency`); ``None`` means "read the provider's knob" (the
    real world; the model reads it as 0). ``tts_concurrency`` is the one asked for (``None``:
    the profile's rule, :func:`sim.rules.tts_concurrency`). ``tenants`` classrooms share the
    keys, tenant ``j`` starting ``j * stagger_s`` s after tenant 0
    (``stagger_dist="constant"``) or after exponential gaps of that mean
    (``"exponential"``). ``records`` keeps the provider's per-request log in the results.
    Strings are accepted for ``mode`` and ``adaptive`` and stored as
    :class:`~sim.rules.Mode` and :class:`~sim.rules.Policy`; a bad value is a one-line
    :class:`~sim.errors.UserError`, checked here and nowhere below.
    """

    mode: Mode
    concurrency: int | None
    tts_concurrency: int | None = None
    adaptive: Policy = Policy.OFF
    tenants: int = 1
    stagger_s: float = 0.0
    stagger_dist: str = "constant"
    records: bool = False

    def __post_init__(self) -> None:
        _check(self.mode, self.adaptive, self.tenants, self.stagger_s, self.stagger_dist)
        object.__setattr__(self, "mode", Mode(self.mode))
        object.__setattr__(self, "adaptive", Policy(self.adaptive))
        if self.concurrency is not None:
            object.__setattr__(self, "concurrency", clamp_concurrency(self.concurrency))

    @classmethod
    def of(
        cls,
        mode: str,
        concurrency: int | None,
        *,
        tts_concurrency: int | None = None,
        adaptive: str = "off",
        tenants: int = 1,
        stagger_s: float = 0.0,
        stagger_dist: str = "constant",
        records: bool = False,
    ) -> RunConfig:
        """A config from plain values (strings for the enums, checked and converted by the
        constructor)."""
        return cls(
            cast(Mode, mode),
            concurrency,
            tts_concurrency,
            cast(Policy, adaptive),
            tenants,
            stagger_s,
            stagger_dist,
            records,
        )

    @property
    def c(self) -> int:
        """The concurrency the model uses (a knob not read is 0, as upstream parses it)."""
        return self.concurrency or 0
