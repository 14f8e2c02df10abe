"""The report of a runs sweep (server-side generation runs): the two-knob answer as text,
its figure, ``REPORT.md``, ``cells.csv`` and ``recommendation.json``.

Everything is computed from the folder's saved ``runs.parquet`` through the runs cell table
(:func:`runner.store.runs_cells.runs_cell_table`) and the pure rule
(:mod:`runner.report.runs_recommendation`); ``scenebench report DIR`` re-renders it, and
``scenebench recommend --results DIR`` prints it.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

from ..store.folders import load_runs, read_metadata, write_atomic, write_json_atomic
from ..store.runs_cells import is_runs_spec, runs_cell_table
from .labels import fmt, quota_key
from .runs_gate_orders import gate_order_lines
from .runs_recommendation import (
    RunsCellStats,
    admissible,
    floor_of,
    gate_versus_off,
    recommend_runs,
    runs_rule_cells,
)

__all__ = [
    "is_runs_folder",
    "render_runs_results",
    "runs_answer_lines",
    "runs_figure",
    "runs_findings_lines",
    "runs_recommendation_of",
    "runs_section",
]


def is_runs_folder(d: Path) -> bool:
    """Does ``d`` hold a runs sweep (its metadata's spec says so)?"""
    return is_runs_spec(read_metadata(d)["spec"])


def _evidence(d: Path) -> tuple[dict[str, Any], pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    runs, meta = load_runs(d)
    cells = runs_cell_table(runs)
    stats = runs_rule_cells(cells)
    r = recommend_runs(stats)
    rec = r.as_dict()
    vs = gate_versus_off(stats, r)
    if vs:
        rec["gate_vs_off"] = {s: [x.as_dict() for x in xs] for s, xs in vs.items()}
    return meta, runs, cells, _headline(rec)


def _headline(rec: dict[str, Any]) -> dict[str, Any]:
    """``recommended`` (c) and ``recommended_max_concurrent`` (m): the smallest default pair
    of policy ``off`` over the scenarios, as the browser-era folders carry ``recommended``."""
    offs = [v["off"]["default"] for v in rec["scenarios"].values() if "off" in v]
    pair = min(((d["concurrency"], d["max_concurrent"]) for d in offs), default=(1, 4))
    return {"kind": "runs", "recommended": pair[0], "recommended_max_concurrent": pair[1], **rec}


def runs_recommendation_of(d: Path) -> dict[str, Any]:
    """What ``recommendation.json`` holds for a runs folder, from its saved runs."""
    return _evidence(d)[3]


# -- text -----------------------------------------------------------------------------------
def _pct(x: Any) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}%"


def _delta(p: dict[str, Any], stem: str, nd: int = 0) -> str:
    v, lo, hi = p.get(f"{stem}_s"), p.get(f"{stem}_lo_s"), p.get(f"{stem}_hi_s")
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return f"{v:+.{nd}f} ({fmt(lo, nd)} to {fmt(hi, nd)})"


def _pick_row(e: dict[str, Any]) -> str:
    p, b = e["pick"], e["baseline"] or {}
    key = e["preset"] or ("unlimited" if e["quota"] == 0 else f"{e['quota']} in flight")
    return (
        f"| {key} | {e['load_per_h']:g} | **{e['concurrency']}** | **{e['max_concurrent']}** | "
        f"{fmt(p['ttfs_p50_s'], 0)} / {fmt(p['ttfs_p95_s'], 0)} | "
        f"{fmt(b.get('ttfs_p95_s'), 0)} | {_delta(p, 'ttfs_p95_delta')} | "
        f"{fmt(p['stall_mean_s'], 1)} ({_delta(p, 'stall_delta', 1)}) | "
        f"{_pct(p['p_paused'])} / {_pct(b.get('p_paused'))} | {_pct(p['p_refused'])} | "
        f"{fmt(p['wait_p95_s'], 0)} | {fmt(p['runs_per_h'], 1)}{' ‡' if _overloaded(e) else ''} |"
    )


OVERLOAD = 0.9  # a pick completing fewer runs per hour than this share of the load


def _overloaded(e: dict[str, Any]) -> bool:
    """The key, with the pair picked, completes fewer runs per hour than arrive."""
    x = e["pick"].get("runs_per_h")
    return x is not None and not math.isnan(x) and x < OVERLOAD * e["load_per_h"]


def _overload_note(picks: list[dict[str, Any]]) -> list[str]:
    if not any(_overloaded(e) for e in picks):
        return []
    return [
        "",
        f"‡ overloaded: with the pair picked the deployment completes fewer than "
        f"{100 * OVERLOAD:g}% of the runs per hour that arrive, so the wait for a run slot "
        "grows with the deployment's length (each deployment here is a fixed number of "
        "requested runs); no pair swept serves that load faster there without refusing, "
        "pausing or failing more runs.",
    ]


_HEAD = [
    "| key allows | runs/hour | *c* | max concurrent runs | to first scene p50 / p95 (s) "
    "| p95 at upstream's defaults (s) | Δ p95, paired (95% CI) | stall per run (s) (Δ) "
    "| P(paused) / at defaults | refused | wait for a slot p95 (s) | runs/hour sustained |",
    "|---|---|---|---|---|---|---|---|---|---|---|---|",
]


def _by_key(picks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(picks, key=lambda e: (e["preset"], quota_key(e["quota"]), e["load_per_h"]))


def runs_answer_lines(rec: dict[str, Any]) -> list[str]:
    """The answer in a few sentences: the default pair per policy, and whether the gate
    makes a higher default safe."""
    r = rec["rule"]
    lines: list[str] = []
    for name, per in rec["scenarios"].items():
        off = per.get("off", {}).get("default")
        if off is not None:
            lines.append(
                f"Scenario `{name}`: with upstream's client (no gate), the default should be "
                f"*c* = **{off['concurrency']}** with max concurrent runs = "
                f"**{off['max_concurrent']}** (upstream ships *c* = "
                f"{r['baseline_concurrency']}, {r['baseline_max_concurrent']} runs): "
                + (
                    "the pair that, on every key allowing ≥ "
                    f"{r['min_quota_for_default']} in flight at every load swept, leaves no "
                    "more runs refused, paused or with a failed scene than the best pair (+ "
                    f"{r['failure_budget_pp']:g} point), with the best p95 time to first scene."
                    if off["within_budget"]
                    else "no pair holds on every key and load; this is the one whose worst "
                    "excess of refused, paused or failed runs is least."
                )
            )
        for pol, v in per.items():
            if pol == "off":
                continue
            d = v["default"]
            higher = off is not None and d["concurrency"] > off["concurrency"]
            lines.append(
                f"With the key-wide `{pol}` across runs, the default pair is *c* = "
                f"{d['concurrency']}, max concurrent runs = {d['max_concurrent']}: "
                + ("a higher *c* is safe." if higher else "it does not make a higher *c* safe.")
            )
    return lines


def runs_section(rec: dict[str, Any]) -> list[str]:
    """The runs section: the rule, the answer, and per scenario and policy the pair for each
    key and load with its evidence against upstream's defaults."""
    r = rec["rule"]
    lines = [
        "## The two knobs: `PARALLEL_SCENE_CONCURRENCY` and "
        "`OPENMAIC_GENERATION_RUN_MAX_CONCURRENT`",
        "",
        *[x + "\n" for x in runs_answer_lines(rec)],
        "Rule, per key and load: a run is bad for its learner when its start is refused, it "
        "pauses or a scene fails; a pair (*c*, max concurrent runs) is admissible when its "
        "P(bad run) is at most the least of the pairs swept on that key and load + "
        f"{r['failure_budget_pp']:g} point; among "
        f"the admissible pairs within {100 * r['within_best']:g}% of the best p95 time from "
        f"request to first scene, those within {100 * r['within_best']:g}% (or "
        f"{r['stall_slack_s']:g} s) of the least mean stall; then the smallest *c*, then the "
        "smallest max concurrent runs. Each pick is set against upstream's defaults (*c* = "
        f"{r['baseline_concurrency']}, {r['baseline_max_concurrent']} runs) on the same "
        "seeded deployments: paired differences, 95% bootstrap over the deployments.",
        "",
    ]
    for name, per in rec["scenarios"].items():
        for pol, v in per.items():
            lines += [f"### `{name}`, policy `{pol}`", "", *_HEAD]
            lines += [_pick_row(e) for e in _by_key(v["by_profile"])]
            lines += _overload_note(v["by_profile"])
            blocked = v["default"]["blocked"]
            if blocked:
                said = "; ".join(f"({k}) on {p}" for k, p in list(blocked.items())[:8])
                lines += ["", f"Pairs not admissible as a default, first failing profile: {said}."]
            lines.append("")
    return lines


def _gate_lines(rec: dict[str, Any], name: str) -> list[str]:
    """Whether a key-wide gate across runs makes a higher default safe (when swept): the
    default pair under each policy, then per key and load what it admits against ``off``."""
    per = rec["scenarios"].get(name, {})
    off = per.get("off", {}).get("default")
    pols = [p for p in per if p != "off"]
    if not pols or off is None:
        return [
            "The learner-first `gate` of the browser era (every attempt through a per-key "
            "gate, in the order the learner needs it) is not modelled across runs yet, so "
            "whether a key-wide gate makes a higher default safe is not answered here.",
            "",
        ]
    out: list[str] = []
    rows = rec.get("gate_vs_off", {}).get(name, [])
    for pol in pols:
        d = per[pol]["default"]
        mine = [x for x in rows if x["policy"] == pol]
        yes_c = [x["key"] for x in mine if x["higher_c"]]
        yes_m = [x["key"] for x in mine if x["higher_m"]]
        out += [*_gate_default(pol, d, off), "", *_gate_table(per[pol]["by_profile"], mine), ""]
        out += [
            f"Per key and load (table), `{pol}` admits a higher *c* than upstream's client on "
            f"{len(yes_c)} of {len(mine)} ({', '.join(yes_c) or 'none'}) and a higher *m* on "
            f'{len(yes_m)} ({", ".join(yes_m) or "none"}); "–": no pair of that policy is '
            "admissible there (every pair refuses, pauses or fails more runs than the best pair "
            "of either policy + the budget). The gate's picks trade stall for time to first "
            "scene on tight keys: a new run's first scene passes ahead of the older runs' later "
            "scenes (the stall column).",
            "",
        ]
    return out


def _gate_default(pol: str, d: dict[str, Any], off: dict[str, Any]) -> list[str]:
    """Does the policy make a higher default safe? Yes (its default holds everywhere and is
    higher than ``off``'s), not strictly (higher and less harm, but no pair holds), or no."""
    pair, off_pair = (
        (d["concurrency"], d["max_concurrent"]),
        (
            off["concurrency"],
            off["max_concurrent"],
        ),
    )
    higher = pair[0] > off_pair[0] or (pair[0] == off_pair[0] and pair[1] > off_pair[1])
    head = f"Does the key-wide `{pol}` across runs make a higher default safe? "
    link = "[runs.md](runs.md#the-key-wide-gate-across-runs---adaptive-gate)"
    what = (
        f"With it (one gate per provider key, shared by every run, learner-first; {link}) "
        f"the default pair is *c* = **{pair[0]}** with *m* = **{pair[1]}**"
    )
    if d["within_budget"]:
        verdict = "Yes. " if higher else "No. "
        return [f"{head}{verdict}{what}, admissible on every default key and load."]
    excess = (
        f"its worst excess of runs refused, paused or with a failed scene over the best pair "
        f"is {100 * d['worst_excess']:.1f} points (on {d['worst_profile']}), against "
        f"{100 * off['worst_excess']:.1f} points for *c* = {off_pair[0]}, *m* = {off_pair[1]} "
        f"without it (on {off['worst_profile']})"
    )
    if higher and d["worst_excess"] < off["worst_excess"]:
        return [
            f"{head}Not strictly. {what}: no single pair holds on every key and load with it "
            f"either, but {excess}."
        ]
    return [f"{head}No. {what}; {excess}."]


def _gate_table(picks: list[dict[str, Any]], rows: list[dict[str, Any]]) -> list[str]:
    by = {(e["preset"], e["quota"], e["load_per_h"]): e for e in picks}
    out = [
        "| key allows | runs/hour | highest admissible *c*: off / gate | highest *m*: off "
        "/ gate | pick off → gate (*c*, *m*) | P(bad run) off → gate | gate pick: Δ p95 to "
        "first scene vs defaults, paired (95% CI) | stall (s) (Δ) | higher? |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for x in sorted(rows, key=lambda x: (x["profile"]["preset"], quota_key(x["profile"]["quota"]),
                                         x["profile"]["load_per_h"])):  # fmt: skip
        p = x["profile"]
        e = by.get((p["preset"], p["quota"], p["load_per_h"]))
        pk = e["pick"] if e is not None else {}
        key = p["preset"] or ("unlimited" if p["quota"] == 0 else f"{p['quota']} in flight")
        yes = [w for w, h in (("*c*", x["higher_c"]), ("*m*", x["higher_m"])) if h]
        out.append(
            f"| {key} | {p['load_per_h']:g} | {x['max_c_off'] or '–'} / {x['max_c_pol'] or '–'}"
            f" | {x['max_m_off'] or '–'} / {x['max_m_pol'] or '–'} | "
            f"({x['off_pair'][0]}, {x['off_pair'][1]}) → ({x['pol_pair'][0]}, "
            f"{x['pol_pair'][1]}) | {_pct(x['off_p_bad'])} → {_pct(x['pol_p_bad'])} | "
            f"{_delta(pk, 'ttfs_p95_delta') if pk else '–'} | "
            f"{fmt(pk.get('stall_mean_s'), 1)} ({_delta(pk, 'stall_delta', 1) if pk else '–'}) | "
            f"{'yes: ' + ', '.join(yes) if yes else 'no'} |"
        )
    return out


def _grid_line(spec: dict[str, Any] | None) -> list[str]:
    if not spec:
        return []
    owners = spec.get("owners", 0)
    who = f"from {owners} learners" if owners else "each from its own learner"
    return [
        f"Each cell is {spec['replicates']} simulated deployments of {spec['runs']} requested "
        f"runs {who} (run *r* is learner *r* mod {owners or spec['runs']}'s; a learner's "
        "third active run is refused), arriving as a Poisson stream at the load; deployment "
        "*i* is the same in every cell (paired).",
        "",
    ]


def runs_findings_lines(rec: dict[str, Any], spec: dict[str, Any] | None = None) -> list[str]:
    """The findings' answer under ``runs``: the default pair (bold: what README quotes),
    then per scenario the pair for each key and load with its evidence (``spec``: the
    folder's grid, described under the table)."""
    r = rec["rule"]
    c, m = rec["recommended"], rec["recommended_max_concurrent"]
    offs = [v["off"]["default"] for v in rec["scenarios"].values() if "off" in v]
    held = all(d["within_budget"] for d in offs)
    lines = [
        "## The answer today",
        "",
        "OpenMAIC generates scenes on the server today (upstream profile `runs`: durable "
        "generation runs; every learner's run calls the providers with the deployment's "
        "keys). Two settings decide what learners feel: `PARALLEL_SCENE_CONCURRENCY` (*c*, "
        "the scenes of a run generated ahead) and `OPENMAIC_GENERATION_RUN_MAX_CONCURRENT` "
        f"(*m*, the runs executing at once; upstream ships *c* = {r['baseline_concurrency']} "
        f"and *m* = {r['baseline_max_concurrent']}). The default should be *c* = **{c}** with "
        f"*m* = **{m}**: "
        + (
            f"on every key allowing ≥ {r['min_quota_for_default']} requests in flight, at "
            "every load swept, it leaves no more runs refused, paused or with a failed scene "
            f"than the best pair (+ {r['failure_budget_pp']:g} point) and has the best p95 "
            "time from request to first scene among those that do."
            if held
            else "no single pair holds on every key and load swept (the *m* a tight key needs "
            "starves an unlimited key at high load, and the reverse); this one's worst excess "
            "of runs refused, paused or with a failed scene over the best pair is the least "
            f"({100 * offs[0]['worst_excess']:.1f} points, on {offs[0]['worst_profile']}). A "
            "deployer who knows the key and the load should set both knobs per the table."
        ),
        "",
        *_gate_lines(rec, next(iter(rec["scenarios"]), "")),
    ]
    for name, per in rec["scenarios"].items():
        v = per.get("off")
        if v is None:
            continue
        lines += [f"### The pair per key and load: `{name}` under `runs`", "", *_HEAD]
        lines += [_pick_row(e) for e in _by_key(v["by_profile"])]
        lines += _overload_note(v["by_profile"])
        blocked = v["default"]["blocked"]
        if blocked:
            said = "; ".join(f"({k}) on {p}" for k, p in blocked.items())
            lines += [
                "",
                "Pairs that are not a safe default, with the first key and load each fails "
                f"(`q2@30`: a 2-in-flight key at 30 runs/hour; `q0`: unlimited): {said}.",
            ]
        lines.append("")
    lines += [*_grid_line(spec), "Rule: " + _rule_text(r), ""]
    return lines


def _rule_text(r: dict[str, Any]) -> str:
    return (
        "a run is bad for its learner when its start is refused (429 `ACTIVE_RUN_LIMIT`), it "
        "pauses or a scene fails; per key and load a pair is admissible when its P(bad run) "
        f"is within {r['failure_budget_pp']:g} point of the least of the pairs swept; among "
        f"the admissible pairs within {100 * r['within_best']:g}% of the best p95 time from "
        f"request to first scene, those within {100 * r['within_best']:g}% (or "
        f"{r['stall_slack_s']:g} s) of the least mean stall; then the smallest *c*, then the "
        "smallest *m*. Δ: the pick minus upstream's defaults on the same seeded deployments, "
        "95% bootstrap over the deployments. Keys: in flight per key (both the LLM and the "
        "TTS key), or a provider preset; presets and 1-in-flight keys are shown, not part of "
        "the default."
    )


# -- figure ---------------------------------------------------------------------------------
def runs_figure(cells: pd.DataFrame, figdir: Path) -> list[Path]:
    """``runs-<scenario>-<policy>``: p95 time to first scene vs *c*, one panel per key
    (columns) and load (rows), one line per max concurrent runs; a hollow marker where the
    pair is not admissible (more runs refused, paused or with a failed scene than the
    profile's best pair + the budget)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stats = runs_rule_cells(cells)
    by: dict[Any, list[RunsCellStats]] = {}
    for x in stats:
        by.setdefault(x.profile, []).append(x)
    floors = {p: floor_of(g) for p, g in by.items()}  # over every policy, as the rule
    out: list[Path] = []
    figdir.mkdir(parents=True, exist_ok=True)
    for (scenario, pol), group in _groups(stats).items():
        fig = _panels(plt, group, floors)
        fig.suptitle(
            f"{scenario}, policy {pol}: p95 time from request to first scene (hollow: more "
            "runs refused, paused or with a failed scene than the best pair + 1 point)",
            fontsize=9,
        )
        fig.tight_layout()
        for ext in ("png", "svg"):
            p = figdir / f"runs-{scenario}-{pol}.{ext}"
            fig.savefig(p, dpi=110)
            out.append(p)
        plt.close(fig)
    return out


def _groups(stats: tuple[RunsCellStats, ...]) -> dict[tuple[str, str], list[RunsCellStats]]:
    g: dict[tuple[str, str], list[RunsCellStats]] = {}
    for x in stats:
        g.setdefault((x.scenario, x.adaptive), []).append(x)
    return g


def _panels(plt: Any, group: list[RunsCellStats], floors: dict[Any, float]) -> Any:
    keys = sorted({(x.preset, x.quota) for x in group}, key=lambda k: (k[0], quota_key(k[1])))
    loads = sorted({x.load_per_h for x in group})
    ms = sorted({x.max_concurrent for x in group})
    cmap = plt.get_cmap("viridis")
    fig, axes = plt.subplots(
        len(loads), len(keys), figsize=(3.2 * len(keys), 2.6 * len(loads)), squeeze=False
    )
    for i, load in enumerate(loads):
        for j, (preset, q) in enumerate(keys):
            ax = axes[i][j]
            for k, m in enumerate(ms):
                xs = sorted(
                    (x for x in group if (x.preset, x.quota, x.load_per_h, x.max_concurrent)
                     == (preset, q, load, m)),
                    key=lambda x: x.concurrency,
                )  # fmt: skip
                if not xs:
                    continue
                col = cmap(k / max(1, len(ms) - 1))
                cx = [x.concurrency for x in xs]
                ax.plot(cx, [x.ttfs_p95_s for x in xs], "-", color=col, label=f"m = {m}")
                for x in xs:
                    ok = admissible(x, floors.get(x.profile, math.nan))
                    ax.scatter([x.concurrency], [x.ttfs_p95_s], s=20, edgecolors=[col],
                               facecolors=[col] if ok else ["none"], zorder=3)  # fmt: skip
            key = preset or ("unlimited" if q == 0 else f"{q} in flight")
            ax.set_title(f"{key}, {load:g} runs/h", fontsize=8)
            ax.set_xlabel("c", fontsize=8)
            ax.set_xticks(sorted({x.concurrency for x in group}))
            ax.set_yscale("log")
            ax.grid(alpha=0.3)
        axes[i][0].set_ylabel("p95 to first scene (s, log)", fontsize=8)
    axes[0][-1].legend(fontsize=7, title="max concurrent", title_fontsize=7)
    return fig


# -- the folder -----------------------------------------------------------------------------
def render_runs_results(d: Path) -> dict[str, Any]:
    """(Re-)render cells.csv, the figures, REPORT.md and recommendation.json of a runs
    folder from its runs.parquet."""
    meta, runs, cells, rec = _evidence(d)
    write_atomic(d / "cells.csv", lambda p: cells.to_csv(p, index=False))
    figures = runs_figure(cells, d / "figures")
    argv = " ".join(meta.get("argv", []))
    lines = [
        f"# scenebench report — {d.name} (server-side generation runs)",
        "",
        f"Created {meta.get('created', '?')} from commit `{meta.get('git_commit', '?')}` "
        f"by `{argv}`.",
        "",
        *runs_section(rec),
        *gate_order_lines(runs, cells),
        "## Figures",
        "",
        *[f"![{p.stem}](figures/{p.name})" for p in figures if p.suffix == ".png"],
        "",
    ]
    text = "\n".join(lines)
    write_atomic(d / "REPORT.md", lambda p: p.write_text(text, encoding="utf-8"))
    write_json_atomic(d / "recommendation.json", rec)
    return rec
