"""``docs/findings.md``: the project's findings, generated from a committed results folder.

No number in the findings is typed by hand: :func:`render_findings` re-derives every one
from the folder's saved runs (``runs.parquet`` and ``metadata.json``) with the same cell
table and recommendation rule as ``REPORT.md``, and ``tests/test_findings.py`` checks that
the committed file is what this code renders from the committed folders. Today's answer
comes from a runs sweep (server-side generation runs: the two knobs,
:mod:`runner.report.runs_report`); the browser era's (``pr788``, ``pr660``), from its own
folder, follows as history. Regenerate with::

    scenebench report results/findings --findings docs/findings.md \\
        --history results/findings-browser

A browser-era folder alone (no ``--history``) renders the browser-era page as before.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

from sim.scenario import Scenario, scenario_from_mapping

from ..store.cells import cell_table
from ..store.folders import ResultsError
from .labels import quota_label
from .recommendation import recommend
from .upstream import base_name, render_profile_section

__all__ = ["render_findings", "write_findings"]

_QUOTAS = (1, 2, 3, 5, 0)


def _pct(x: float) -> str:
    return "–" if math.isnan(x) else f"{100 * x:.1f}%"


def _cell(cells: pd.DataFrame, scenario: str, q: int, mode: str, c: int) -> pd.Series | None:
    g = cells[
        (cells["backend"] == "sim")
        & (cells["scenario"] == scenario)
        & (cells["quota"] == q)
        & (cells["mode"] == mode)
        & (cells["concurrency"] == c)
        & (cells["adaptive"] == "off")
        & (cells["tenants"] == 1)
    ]
    return g.iloc[0] if len(g) else None


def _per_quota_table(cells: pd.DataFrame, name: str, v: dict[str, Any]) -> list[str]:
    lines = [
        "| key allows | set *c* | paired speedup (95% CI) | P(any failed scene) at *c* "
        "| serial | mean time to first scene |",
        "|---|---|---|---|---|---|",
    ]
    for q in _QUOTAS:
        pick = v["by_quota"].get(q, v["by_quota"].get(str(q)))
        if pick is None:
            continue
        c = int(pick["concurrency"])
        at = _cell(cells, name, q, "pipelined" if c > 1 else "serial", c)
        ser = _cell(cells, name, q, "serial", 1)
        if at is None or ser is None:
            continue
        sp = (
            f"{pick['speedup']:.2f}× ({pick['lo']:.2f}–{pick['hi']:.2f})"
            if c > 1 and "lo" in pick
            else "1.00× (serial)"
        )
        lines.append(
            f"| {quota_label(q)} | **{c}** | {sp} | {_pct(float(at['p_any_failed']))} | "
            f"{_pct(float(ser['p_any_failed']))} | {float(at['ttfs_mean_s']):.1f} s |"
        )
    return lines


def _why_off(cells: pd.DataFrame, name: str) -> list[str]:
    rows = []
    for q in (1, 2, 3):
        ser = _cell(cells, name, q, "serial", 1)
        fails = [(c, _cell(cells, name, q, "pipelined", c)) for c in (2, 3, 5)]
        if ser is None or all(x is None for _, x in fails):
            continue
        at = ", ".join(
            f"*c* = {c}: {_pct(float(x['p_any_failed']))}" for c, x in fails if x is not None
        )
        rows.append(f"- {quota_label(q)}: serial {_pct(float(ser['p_any_failed']))}; {at}.")
    return rows


def _iv(d: dict[str, float], nd: int = 1) -> str:
    return "–" if math.isnan(d["mean"]) else f"{d['mean']:.{nd}f}"


def _qoe_table(qoe: dict[str, Any], name: str) -> list[str]:
    """What the learner feels, per adaptive policy: the QoE rule's c per key limit."""
    lines: list[str] = []
    for pol, d in qoe.get("scenarios", {}).get(name, {}).items():
        lines += [
            "",
            f"What learners feel with adaptive `{pol}` (QoE rule; default *c* = "
            f"**{d['default']}**): mean stall serial → at *c*, startup, last scene ready.",
            "",
            "| key allows | *c* | stall (s) | startup (s) | last scene (s) | P(any failed) |",
            "|---|---|---|---|---|---|",
        ]
        for q in _QUOTAS:
            e = d["by_quota"].get(str(q), d["by_quota"].get(q))
            if e is None:
                continue
            ser = e["serial"]
            lines.append(
                f"| {quota_label(q)} | {e['concurrency']} | {_iv(ser['stall_s'])} → "
                f"{_iv(e['stall_s'])} | {_iv(e['startup_s'])} | {_iv(e['last_scene_s'], 0)} | "
                f"{_pct(e['p_any_failed']['mean'])} |"
            )
    return lines


def _scenario_section(
    cells: pd.DataFrame, name: str, rec: dict[str, Any], sc: Scenario
) -> list[str]:
    lines = [f"### `{base_name(name)}` under `{sc.upstream}`", ""]
    lines += _per_quota_table(cells, name, rec["scenarios"][name])
    lines += ["", "P(any failed scene) on tight keys, serial vs pipelined:", ""]
    lines += _why_off(cells, name)
    lines += _qoe_table(rec.get("qoe", {}), name)
    lines.append("")
    return lines


def _gate_line(rec: dict[str, Any], scenarios: dict[str, Scenario]) -> list[str]:
    """The QoE rule's default with scenebench's ``gate`` policy, when the sweep ran it."""
    today = [n for n, s in scenarios.items() if s.upstream == rec["upstream"]]
    per = rec.get("qoe", {}).get("scenarios", {})
    cs = [per[n]["gate"]["default"] for n in today if "gate" in per.get(n, {})]
    if not cs or len(cs) != len(today):
        return []
    return [
        f"With scenebench's `gate` policy in the client (every attempt through a per-key "
        f"gate in the order the learner needs it; not in upstream), the learner-first rule "
        f"below admits *c* = **{min(cs)}** on every key of every scenario: failures at "
        "serial's level, startup unchanged, less stall.",
        "",
    ]


def render_findings(d: Path, history: Path | None = None) -> str:
    """The findings page for the results folder ``d`` (deterministic in its saved data): a
    runs sweep's two-knob answer with the browser-era folder ``history`` after it, or a
    browser-era folder's page."""
    from .runs_report import is_runs_folder

    if is_runs_folder(d):
        return _render_runs_findings(d, history)
    if history is not None:
        raise ResultsError(f"--history: {str(d)!r} is not a runs sweep; history follows one")
    return _render_browser(d)


def _render_browser(d: Path) -> str:
    from ..store.folders import load_runs

    runs, meta = load_runs(d)
    cells = cell_table(runs)
    scenarios = {m["name"]: scenario_from_mapping(m) for m in meta["spec"]["scenarios"]}
    rec = recommend(cells, scenarios)
    argv = " ".join(["scenebench", *meta.get("argv", [])[1:]])
    lines = ["# Findings", ""]
    lines += [
        "Generated by `scenebench report "
        f"{d.as_posix()} --findings docs/findings.md` from the runs of `{argv}` "
        f"(data from commit `{str(meta.get('git_commit', '?'))[:12]}`). Do not edit by hand.",
        "",
        "## The answer today",
        "",
        f"Under the upstream profile `{rec['upstream']}` (what OpenMAIC runs today), the "
        f"default `PARALLEL_SCENE_CONCURRENCY` should stay **{rec['recommended']}** "
        f"({'off' if rec['recommended'] <= 1 else 'on'}): the rule admits a *c* only when "
        "it fails no more classrooms than serial (+1 point) on every key that allows ≥ 2 "
        "requests in flight. A deployer who knows the key's limit can set *c* per the tables.",
        "",
        *_gate_line(rec, scenarios),
    ]
    # the headline's profile (the default when the sweep ran it, else the newest it ran)
    today = [n for n, s in scenarios.items() if s.upstream == rec["upstream"]] or list(scenarios)
    for name in today:
        lines += _scenario_section(cells, name, rec, scenarios[name])
    lines += render_profile_section(cells, rec, scenarios)
    return "\n".join(lines).rstrip("\n") + "\n"


def _history(h: Path) -> list[str]:
    """The browser-era page as a section: its headings one level down, its date said."""
    text = _render_browser(h)
    body = text.split("\n## The answer today\n", 1)[1].lstrip("\n")
    body = body.replace("(what OpenMAIC runs today)", "(what OpenMAIC ran in the browser)")
    out = [
        "## History: the browser era",
        "",
        "Before release 1.1.2 OpenMAIC generated scenes in the browser, one learner's loop on "
        "the key; the answer then, from the runs of `" + _argv(h) + f"` (folder `{h.as_posix()}`):",
        "",
        *_renamed_note(h),
    ]
    for line in body.split("\n"):
        out.append("#" + line if line.startswith("#") else line)
    return out


def _renamed_note(h: Path) -> list[str]:
    """A folder made before the profiles followed upstream's history says what its ``pr788``
    was (:data:`sim.upstream.PR788_RENAMED_ON`)."""
    from sim.upstream import PR788_RENAMED_ON

    from ..store.folders import read_metadata

    meta = read_metadata(h)
    if "pr788" not in meta["provenance"]["upstream"] or meta["created"] >= PR788_RENAMED_ON:
        return []
    return [
        "(This folder predates the profiles' renaming: its `pr788` is the rules scenebench now "
        "calls `pr696`, #788 with #696's clips at *c*; [upstream.md](upstream.md).)",
        "",
    ]


def _argv(d: Path) -> str:
    from ..store.folders import read_metadata

    return " ".join(["scenebench", *read_metadata(d).get("argv", [])[1:]])


def _render_runs_findings(d: Path, history: Path | None) -> str:
    from ..store.folders import read_metadata
    from .runs_report import runs_findings_lines, runs_recommendation_of

    meta = read_metadata(d)
    rec = runs_recommendation_of(d)
    cmd = f"scenebench report {d.as_posix()} --findings docs/findings.md"
    if history is not None:
        cmd += f" --history {history.as_posix()}"
    lines = [
        "# Findings",
        "",
        f"Generated by `{cmd}` from the runs of `{_argv(d)}` (data from commit "
        f"`{str(meta.get('git_commit', '?'))[:12]}`). Do not edit by hand.",
        "",
        *runs_findings_lines(rec, meta["spec"]),
    ]
    if history is not None:
        lines += _history(history)
    return "\n".join(lines).rstrip("\n") + "\n"


def write_findings(d: Path, out: Path, history: Path | None = None) -> None:
    """Render and write atomically."""
    from ..store.folders import write_atomic

    text = render_findings(d, history)
    write_atomic(out, lambda p: p.write_text(text, encoding="utf-8"))
