"""REPORT.md of a results folder, one function per section, and the whole re-render.

Everything here reads the saved ``runs.parquet`` (never memory), so a report can be
re-rendered at any time with ``scenebench report DIR`` (:func:`render_results`: cells.csv,
the figures, REPORT.md and recommendation.json). The sections, in order: the header
(provenance), the recommendation (:mod:`runner.report.recommendation`) with one subsection per
scenario, failed cells, adaptive concurrency (:mod:`runner.report.adaptive_verdict`), figures
(:mod:`runner.report.figures`), the evidence table, real pipeline vs model, and what learners feel
(:mod:`runner.report.qoe_report`); then the upstream-profile, preset and server-path sections.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from sim.scenario import Scenario, scenario_from_mapping

from ..store.cells import cell_table
from ..store.counts import FAILURE_BUDGET_PP, fails_too_often
from ..store.stamps import provenance, provenance_line
from .adaptive_verdict import adaptive_verdict
from .figures import HOLLOW_CAPTION, render_figures
from .labels import fmt, quota_key, quota_label
from .presets import (
    preset_cells,
    recommend_presets,
    render_presets_section,
    shared_verdicts,
    split_presets,
)
from .qoe_report import qoe_section
from .recommendation import RULE, recommend
from .upstream import render_profile_section

__all__ = [
    "evidence_table",
    "folder_provenance",
    "recommendation_of",
    "render_report",
    "render_results",
]


def folder_provenance(meta: dict[str, Any]) -> dict[str, Any]:
    """What a results folder models and which scenebench made it (from its metadata; folders
    written before provenance was recorded: their git commit and version, today's upstream
    lookup)."""
    if isinstance(meta.get("provenance"), dict):
        return dict(meta["provenance"])
    prov = provenance(list(meta["spec"]["scenarios"]))
    prov["scenebench_commit"] = meta.get("git_commit", "unknown")
    prov["scenebench_version"] = meta.get("versions", {}).get("scenebench", "unknown")
    return prov


def _by_quota(items: Any) -> list[Any]:
    """``(quota, value)`` pairs in report order: in-flight limits ascending, unlimited last."""
    return sorted(items, key=lambda kv: quota_key(kv[0]))


# -- header and recommendation --------------------------------------------------------------
def _header(d: Path, meta: dict[str, Any], prov: dict[str, Any]) -> list[str]:
    return [
        f"# scenebench report — {d.name}",
        "",
        f"{provenance_line(prov)}.",
        "",
        f"Created {meta.get('created', '?')} from commit `{meta.get('git_commit', '?')}` "
        f"by `{' '.join(meta.get('argv', []))}`.",
        "",
    ]


def _adaptive_default_line(defaults: dict[str, Any]) -> list[str]:
    """The adaptive defaults beside the fixed one (when the sweep ran a policy)."""
    if not defaults:
        return []
    picks = {p: c for p, c in defaults.items() if c is not None}
    said = (
        "; ".join(
            f"`{p}` on at c = **{c}** dominates off on every quota profile"
            for p, c in sorted(picks.items())
        )
        if picks
        else "no adaptive policy in this sweep dominates off at any c >= 2"
    )
    return ["**With an adaptive limiter**: " + said + " (section Adaptive concurrency).\n"]


def _recommendation_section(rec: dict[str, Any]) -> list[str]:
    r = rec["rule"]
    return [
        "## Recommendation",
        "",
        f"**Default `PARALLEL_SCENE_CONCURRENCY` = {rec['recommended']}** "
        f"(for the merged pipelined design, under the upstream profile "
        f"`{rec.get('upstream', '?')}`: the client rules of OpenMAIC's browser loop, which "
        "server-side generation runs replaced after release 1.1.2).",
        "",
        *_adaptive_default_line(rec.get("adaptive", {}).get("defaults", {})),
        f"Rule: for each scenario, *c* is admissible when, for every quota profile that "
        f"allows ≥ {r['min_quota_for_default']} requests in flight (unlimited included), "
        f"P(any failed scene) at *c* is at most serial's + {r['failure_budget_pp']:g} "
        f"percentage point; the recommendation is the smallest admissible *c* whose "
        f"speedup (geometric mean over those profiles) is within "
        f"{100 * r['within_best']:g}% of the best admissible one; across scenarios the "
        f"smallest recommendation (of the scenarios under that profile). Measured on the "
        f"{r['backend']} backend.",
        "",
    ]


# -- one scenario's recommendation ----------------------------------------------------------
def _blocked_line(table: list[dict[str, Any]]) -> list[str]:
    """The *c* that are not admissible, with the profile that rules each out."""
    blocked = [t for t in table if not t["admissible"]]
    if not blocked:
        return []
    said = "; ".join(
        f"*c* = {t['concurrency']} (P(any failed) "
        f"{fmt(100 * t['p_any_failed'][t['blocked_by']], 1)}% with "
        f"{quota_label(t['blocked_by'])} vs "
        f"{fmt(100 * t['p_any_failed_serial'][t['blocked_by']], 1)}% serial)"
        for t in blocked[:4]
    )
    return [
        "- not admissible: " + said + ("; and more" if len(blocked) > 4 else "") + ". In pipelined "
        "mode the actions call of scene *i* needs a slot beside *c* content calls on the "
        "same LLM key (a key needs *c* + 1), and within-scene TTS at *c* needs *c* TTS "
        "slots."
    ]


def _one_in_flight_line(v: dict[str, Any]) -> str:
    o = v["one_in_flight"]
    if math.isnan(o["p_any_failed"]):
        return "- keys allowing 1 request in flight: not in this sweep (`--quotas 1,...`)."
    if v["recommended"] > 1:
        return (
            f"- keys allowing 1 request in flight: P(any failed scene) "
            f"{fmt(100 * o['p_any_failed'], 1)}% at *c* = {v['recommended']} vs "
            f"{fmt(100 * o['p_any_failed_serial'], 1)}% serial — no fixed *c* > 1 is "
            "safe for them (see the failures figure)."
        )
    return "- keys allowing 1 request in flight: serial (the recommendation) is unchanged for them."


def _per_quota_lines(by_quota: dict[int, Any]) -> list[str]:
    lines = ["- if you know your keys' in-flight limit (same rule, that profile alone):"]
    for q, bq in _by_quota(by_quota.items()):
        ci_q = f" (95% CI {fmt(bq['lo'])}–{fmt(bq['hi'])})" if "lo" in bq else ""
        lines += [
            f"  - {quota_label(q)}: *c* = {bq['concurrency']}, speedup {fmt(bq['speedup'])}×{ci_q}"
        ]
    return lines


def _claim_lines(b: dict[str, float], claims: dict[str, Any]) -> list[str]:
    """Upstream's '≈2–3× at concurrency 3' against the bound and the measured speedups."""
    if not b:
        return []
    lines = [
        f"- upstream's claim '≈2–3× at concurrency 3': the bound from mean "
        f"latencies is (C+A+k·T)/(A+k·T) = ({fmt(b['C_s'], 1)} + "
        f"{fmt(b['S_serial_s'], 1)})/{fmt(b['S_serial_s'], 1)} = "
        f"{fmt(b['limit_serial_tts'])}× as N grows, "
        f"{fmt(b['finite_n'])}× for this N with clips 3 at a time."
    ]
    for m, cl in claims.items():
        sp = f"{fmt(cl['speedup'])}× (95% CI {fmt(cl['lo'])}–{fmt(cl['hi'])})"
        if not cl.get("counts", True):
            sp = f"({sp}, over the few runs that completed)†"
        lines += [f"  - {m} at c = 3, unlimited key: {sp}: the claim **{cl['verdict']}**."]
    return lines


def _scenario_section(name: str, v: dict[str, Any]) -> list[str]:
    """``### Scenario`` under the recommendation: its *c*, the evidence, the per-quota picks."""
    ci = v["speedup_unlimited_ci"]
    adm = [str(t["concurrency"]) for t in v["table"] if t["admissible"]]
    return [
        f"### Scenario `{name}`",
        "",
        f"- recommended *c* = **{v['recommended']}**; expected speedup with an "
        f"unlimited key {fmt(v['speedup_unlimited'])}× (95% CI {fmt(ci[0])}–"
        f"{fmt(ci[1])}, {v['pairs']} paired runs).",
        f"- profiles checked: {', '.join(quota_label(q) for q in v['profiles'])}.",
        f"- admissible *c*: {', '.join(adm) or 'none'}; best admissible geometric-"
        f"mean speedup {fmt(v['best_admissible_speedup'])}×.",
        *_blocked_line(v["table"]),
        _one_in_flight_line(v),
        *_per_quota_lines(v["by_quota"]),
        *_claim_lines(v["bound"], v["claim_c3"]),
        "",
    ]


# -- the other sections ---------------------------------------------------------------------
def _failed_cells_section(d: Path) -> list[str]:
    failed_path = d / "failed_cells.json"
    failed = json.loads(failed_path.read_text()) if failed_path.is_file() else {}
    if not failed:
        return []
    return [
        "## Failed cells",
        "",
        f"{len(failed)} cell(s) failed and are not in the tables; "
        f"`scenebench sweep --resume {d}` runs them again.",
        "",
        *(f"- `{cid}`: {reason}" for cid, reason in sorted(failed.items())),
        "",
    ]


def _adaptive_at_3(r: dict[str, Any]) -> str:
    """One policy at c = 3, quota by quota."""
    parts = []
    for q, v in _by_quota(r["per_quota"].items()):
        kept = "" if math.isnan(v["kept"]) else f", keeps {100 * v['kept']:.0f}%"
        bad = fails_too_often(v["p_any_failed"], v["p_any_failed_serial"])
        parts.append(
            f"{quota_label(q)}: P(failed) "
            f"{100 * v['p_any_failed']:.1f}% vs serial "
            f"{100 * v['p_any_failed_serial']:.1f}%, "
            + (f"({fmt(v['speedup'])}×)†" if bad else f"{fmt(v['speedup'])}×")
            + kept
        )
    return "  - at c = 3: " + "; ".join(parts) + "."


def _adaptive_section(policies: dict[str, Any]) -> list[str]:
    if not policies:
        return []
    lines = [
        "## Adaptive concurrency",
        "",
        "A policy *dominates off* at *c* when, on every quota profile, P(any failed "
        "scene) is at most serial's + "
        f"{RULE.failure_budget_pp:g} pp and it is no slower than serial (2% "
        "slack); *kept* is its speedup over fixed *c*'s, where fixed *c* is "
        "admissible (pipelined, one classroom per key, model).",
        "",
    ]
    for pol, per_sc in policies.items():
        for name, rows in per_sc.items():
            dom = [r["concurrency"] for r in rows if r["dominates_off"]]
            lines += [
                f"- `{pol}` on `{name}`: dominates off at c = "
                f"{', '.join(map(str, dom)) if dom else 'none'}."
            ]
            lines += [_adaptive_at_3(r) for r in rows if r["concurrency"] == 3]
    return [*lines, ""]


def _figures_section(figures: list[Path]) -> list[str]:
    lines = ["## Figures", "", f"In every figure: {HOLLOW_CAPTION}.", ""]
    for p in figures:
        if p.suffix == ".png":
            lines += [f"![{p.stem}](figures/{p.name})", ""]
    return lines


def _speedup_cell(x: Any) -> str:
    """A speedup for a table: plain only when the cell's runs count (the shared rule)."""
    sp = x.get("speedup", math.nan)
    ci = f"{fmt(x.get('speedup_lo', math.nan))}–{fmt(x.get('speedup_hi', math.nan))}"
    if sp is None or (isinstance(sp, float) and math.isnan(sp)):
        return "– (no run completed)" if x.get("pairs", 0) == 0 else "–"
    flag = x.get("fails_too_often")
    if flag is None or flag != flag or bool(flag):
        return f"({fmt(sp)}, {ci})†"
    return f"{fmt(sp)} ({ci})"


def _evidence_row(x: Any, extra: list[str]) -> str:
    cols = [
        str(x["scenario"]),
        quota_label(int(x["quota"])),
        *(str(x[k]) for k in extra),
        str(x["mode"]),
        str(x["concurrency"]),
        str(x["runs"]),
        fmt(x["makespan_mean_s"], 1),
        fmt(x["makespan_p95_s"], 1),
        fmt(x["ttfs_mean_s"], 1),
        fmt(x["http_429_mean"], 1),
        f"{fmt(100 * x['p_any_failed'], 1)}%",
        _speedup_cell(x),
    ]
    return "| " + " | ".join(cols) + " |"


def evidence_table(cells: pd.DataFrame) -> list[str]:
    """Every cell of the model backend (every quota, mode, c, policy and tenant count of the
    sweep), or every cell when there is no model backend; says what it leaves out."""
    has_sim = bool((cells["backend"] == "sim").any())
    show = cells[cells["backend"] == "sim"] if has_sim else cells
    left = len(cells) - len(show)
    extra = [k for k in ("adaptive", "tenants") if k in show.columns and show[k].nunique() > 1]
    head = ["scenario", "quota", *extra, "mode", "c", "runs", "makespan mean (s)", "p95 (s)"]
    head += ["TTFS (s)", "429/run", "P(failed)", "speedup (95% CI)"]
    qs = ", ".join(quota_label(int(q)) for q in sorted(show["quota"].unique(), key=quota_key))
    return [
        f"{len(show)} cells: every quota ({qs}), mode and *c* of the "
        + ("model backend" if has_sim else "sweep")
        + (
            f"; the {left} cells of the real backend are in `cells.csv` (see the section "
            "Real pipeline vs model)."
            if left
            else "."
        )
        + f" † P(any failed scene) above serial's + {FAILURE_BUDGET_PP:g} pp: the speedup is "
        "over the few runs that completed with every scene, not one a user gets.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
        *(_evidence_row(x, extra) for _, x in show.iterrows()),
    ]


def _evidence_section(cells: pd.DataFrame, spec: dict[str, Any]) -> list[str]:
    reps = cells.groupby("backend")["runs"].max().to_dict()
    return [
        "## Evidence: cells",
        "",
        "Replications per cell: "
        + ", ".join(f"{k}: {v}" for k, v in reps.items())
        + f"; seed {spec['seed']} (the same run ids in every cell: speedups are paired). "
        "Speedup = mean serial makespan / mean cell makespan over runs that completed "
        "with every scene in both, 95% bootstrap CI.",
        "",
        *evidence_table(cells),
        "",
        "All cells: `cells.csv`; all runs: `runs.parquet` / `runs.csv`.",
        "",
    ]


def _real_vs_model_section(cells: pd.DataFrame) -> list[str]:
    if not set(cells["backend"]) >= {"sim", "real"}:
        return []
    reps = cells.groupby("backend")["runs"].max().to_dict()
    both = cells.pivot_table(
        index=["scenario", "quota", "mode", "concurrency"],
        columns="backend",
        values="makespan_mean_s",
    )
    return [
        "## Real pipeline vs model in this sweep",
        "",
        f"{len(both.dropna())} cells ran on both backends. The real backend ran "
        f"{reps.get('real', 0)} runs per cell with the same seeds as the model's "
        "first runs; see `scenebench validate` for the wall-clock check.",
        "",
    ]


def render_report(
    d: Path, cells: pd.DataFrame, rec: dict[str, Any], meta: dict[str, Any], figures: list[Path]
) -> str:
    """REPORT.md's text (before the profile, preset and server-path sections)."""
    prov = rec.get("provenance") or folder_provenance(meta)
    sections = [
        _header(d, meta, prov),
        _recommendation_section(rec),
        *(_scenario_section(name, v) for name, v in rec["scenarios"].items()),
        _failed_cells_section(d),
        _adaptive_section(rec.get("adaptive", {}).get("policies", {})),
        _figures_section(figures),
        _evidence_section(cells, meta["spec"]),
        _real_vs_model_section(cells),
        [qoe_section(rec["qoe"])] if rec.get("qoe", {}).get("scenarios") else [],
    ]
    return "\n".join(line for section in sections for line in section)


def _evidence(
    d: Path,
) -> tuple[dict[str, Any], pd.DataFrame, dict[str, Scenario], dict[str, Any]]:
    """A results folder's metadata, cell table, scenarios and recommendation, from its saved
    runs; nothing is written."""
    from ..store.folders import load_runs

    runs, meta = load_runs(d)
    runs, preset_runs = split_presets(runs)  # provider presets: their own section
    cells = cell_table(runs)
    scenarios = {m["name"]: scenario_from_mapping(m) for m in meta["spec"]["scenarios"]}
    rec = recommend(cells, scenarios)
    rec["adaptive"] = adaptive_verdict(cells)
    rec["provenance"] = folder_provenance(meta)
    rec["presets"] = recommend_presets(preset_cells(preset_runs, cell_table), rec["rule"])
    rec["shared_capacity"] = shared_verdicts(cells, scenarios)
    return meta, cells, scenarios, rec


def recommendation_of(d: Path) -> dict[str, Any]:
    """What ``recommendation.json`` holds, computed from the folder's saved runs without
    drawing a figure or writing a file (``scenebench recommend``); a runs sweep's folder:
    the two-knob answer (:mod:`runner.report.runs_report`)."""
    from .runs_report import is_runs_folder, runs_recommendation_of

    if is_runs_folder(d):
        return runs_recommendation_of(d)
    return _evidence(d)[3]


def render_results(d: Path) -> dict[str, Any]:
    """(Re-)render cells.csv, figures, REPORT.md and recommendation.json from runs.parquet."""
    from ..store.folders import write_atomic, write_json_atomic
    from .runs_report import is_runs_folder, render_runs_results

    if is_runs_folder(d):
        return render_runs_results(d)
    meta, cells, scenarios, rec = _evidence(d)
    write_atomic(d / "cells.csv", lambda p: cells.to_csv(p, index=False))
    figures = render_figures(cells, scenarios, d / "figures")
    report = render_report(d, cells, rec, meta, figures)
    extra = render_profile_section(cells, rec, scenarios)
    extra += render_presets_section(rec["presets"], rec["shared_capacity"])
    server = d / "SERVER.md"  # the server path's section, written by `scenebench capacity`
    if server.is_file():
        extra += ["", server.read_text(encoding="utf-8").rstrip("\n")]
    if extra:
        report = report.rstrip("\n") + "\n\n" + "\n".join(extra).lstrip("\n") + "\n"
    write_atomic(d / "REPORT.md", lambda p: p.write_text(report))
    write_json_atomic(d / "recommendation.json", rec)
    return rec
