"""How the report, the figures and the findings write a quota profile and a number."""

from __future__ import annotations

import math
from typing import Any

__all__ = ["fmt", "quota_key", "quota_label"]


def quota_label(q: Any) -> str:
    """``0`` → ``unlimited``, ``3`` → ``3 in flight``."""
    return "unlimited" if int(q) == 0 else f"{int(q)} in flight"


def quota_key(q: Any) -> tuple[bool, Any]:
    """Sort key of quota profiles: in-flight limits ascending, unlimited last."""
    return (q == 0, q)


def fmt(x: Any, nd: int = 2) -> str:
    """``x`` with ``nd`` decimals; an en dash for a missing value (None or NaN)."""
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{nd}f}"
