"""The server path's capacity report: ``capacity-<scenario>.png``, ``SERVER.md`` and (when
present) a section of ``REPORT.md``, from :class:`runner.experiments.server_capacity`'s data
(passed in by the command line), and the recommendation lines read back from a folder."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sim.capacity import KeyLoad, mg1_line, saturation_of
from sim.scenario import Scenario

__all__ = ["SECTION", "server_lines", "write_capacity"]

SECTION = "## Server path: key capacity"


def _figure(
    sc: Scenario, load: KeyLoad, rows: Sequence[dict[str, Any]], inflight: int, path: Path
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cs = sorted({r["c"] for r in rows})
    cmap = plt.get_cmap("viridis")
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for i, c in enumerate(cs):
        g = sorted((r for r in rows if r["c"] == c), key=lambda r: r["per_hour"])
        color = cmap(i / max(1, len(cs) - 1))
        ax.plot(
            [r["per_hour"] for r in g], [r["p95_s"] for r in g], "o-", color=color, label=f"c = {c}"
        )
        lams = np.linspace(g[0]["per_hour"], 0.98 * load.saturation_per_hour, 40)
        ax.plot(lams, [mg1_line(sc, load, c, x) for x in lams], ":", color=color, lw=1)
    ax.axvline(load.saturation_per_hour, color="grey", ls="--", lw=1)
    ax.set_xlabel("job arrivals per hour")
    ax.set_ylabel("p95 job latency (model s)")
    ax.set_yscale("log")
    ax.set_title(f"{sc.name}: server jobs on a {inflight}-in-flight key (key-wide gate); "
                 "dotted: M/G/1-style line, dashed: saturation", fontsize=9)  # fmt: skip
    ax.legend(fontsize=7, ncol=2)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def _markdown(
    sc: Scenario,
    load: KeyLoad,
    inflight: int,
    rows: Sequence[dict[str, Any]],
    lines: Sequence[str],
    grid: Sequence[dict[str, Any]],
    fig: str,
    cmd: str,
) -> str:
    out = [SECTION, "", f"`{cmd}`", ""]
    out.append(
        f"One job puts {load.work_llm_s:.0f} slot-seconds on the LLM key and "
        f"{load.work_tts_s:.1f} on the TTS key; a {inflight}-in-flight key saturates at "
        f"{load.saturation_per_hour:.1f} jobs/h (closed form, the same for every c)."
    )
    out += ["", f"![p95 job latency vs arrival rate]({fig})", ""]
    out += [
        "| c | knee (p95 > 2× its low-load value) | best sustained jobs/h | p95 at lowest rate |"
    ]
    out += ["|---|---|---|---|"]
    for c in sorted({r["c"] for r in rows}):
        g = [r for r in rows if r["c"] == c]
        knee = saturation_of(rows, c)
        best = max(r["jobs_per_hour"] for r in g)
        low = min(g, key=lambda r: r["per_hour"])["p95_s"]
        knee_s = "beyond the grid" if knee is None else f"{knee:.1f} jobs/h"
        out.append(f"| {c} | {knee_s} | {best:.1f} | {low:.0f} s |")
    out += [
        "",
        "Server-path recommendation (stated apart from the browser's, docs/server-path.md):",
        "",
    ]
    out += list(lines)
    if grid:
        out += [
            "",
            "Shared key, browser classrooms at once: P(any failed scene), mean makespan:",
            "",
        ]
        out += ["| c | serial | per-classroom gate | key-wide gate |", "|---|---|---|---|"]
        for r in grid:
            cells = [f"{r[k][0]:.1%}, {r[k][1]:.0f} s" for k in ("serial", "gate", "key_gate")]
            out.append(f"| {r['c']} | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def _write_report(out: Path, text: str) -> None:
    (out / "SERVER.md").write_text(text, encoding="utf-8")
    rep = out / "REPORT.md"
    if rep.exists():
        old = rep.read_text(encoding="utf-8")
        old = re.sub(re.escape(SECTION) + r".*?(?=\n## |\Z)", "", old, flags=re.S).rstrip()
        rep.write_text(old + "\n\n" + text, encoding="utf-8")


def write_capacity(data: Any, out: Path, cmd: str) -> str:
    """Draw the figure and write ``SERVER.md`` (and REPORT.md's section) into ``out`` from a
    :class:`~runner.experiments.server_capacity.CapacityData`; returns the markdown."""
    out.mkdir(parents=True, exist_ok=True)
    fig = f"capacity-{data.scenario.name}.png"
    _figure(data.scenario, data.load, data.rows, data.key_inflight, out / fig)
    text = _markdown(
        data.scenario, data.load, data.key_inflight, data.rows, data.lines, data.grid, fig, cmd
    )
    _write_report(out, text)
    return text


def server_lines(folder: Path) -> list[str]:
    """The server-path recommendation lines that :func:`capacity` wrote to ``folder``."""
    p = folder / "SERVER.md"
    if not p.exists():
        return []
    text = p.read_text(encoding="utf-8")
    return [ln[2:] for ln in text.splitlines() if ln.startswith("- **server path")]
