"""``scenebench validate --upstream runs`` (no ``--exact``): generation runs on the wall clock
against the model, an equivalence test (:mod:`runner.experiments.runs_wall`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from .errors import UsageError

__all__ = ["validate_runs_wall_cmd"]


def validate_runs_wall_cmd(a: argparse.Namespace, names: list[str] | None) -> int:
    """Run the runs cells on the wall clock; exit 0 pass, 1 fail, 3 inconclusive."""
    from sim.upstream import RUNS_PROFILE

    from ..experiments import runs_wall as w
    from ..experiments.sweep import ResultsError
    from ..experiments.validate import check_wall_folder
    from ..store.stamps import dumps

    if [p for p in a.upstream if p != RUNS_PROFILE]:
        raise UsageError(
            "scenebench validate: --upstream runs is validated on its own cells "
            "(generation runs); name it alone"
        )
    if [p for p in getattr(a, "adaptive", None) or () if p != "off"]:
        raise UsageError(
            "scenebench validate --upstream runs: the wall-clock cells run upstream's client "
            "(off); the key-wide gate is checked with --exact"
        )
    pool = w.QUICK_CELLS if a.quick else w.FULL_CELLS
    cells = [c for c in pool if names is None or c.scenario in names]
    if not cells:
        raise UsageError(
            "scenebench validate --upstream runs: no wall-clock cell for scenario(s) "
            f"{', '.join(names or [])}; cells exist for: "
            f"{', '.join(sorted({c.scenario for c in pool}))}"
        )
    out = Path(a.out) if a.out else None
    try:
        check_wall_folder(out, Path(a.results_root))
    except ResultsError as e:
        raise UsageError(f"scenebench validate: {e}") from None
    report = w.validate_runs_wall(
        cells, reps=a.reps or (5 if a.quick else 10), seed=a.seed, log=None if a.json else print
    )
    report["provenance"] = w.cells_provenance(cells)
    try:
        d = w.write_results(report, out, Path(a.results_root))
    except ResultsError as e:
        raise UsageError(f"scenebench validate: {e}") from None
    if a.json:
        print(dumps(report))
    else:
        print(f"results: {d}")
        print("\n".join(w.verdict_lines(report)))
    return {w.PASS: 0, w.FAIL: 1}.get(report["verdict"], 3)
