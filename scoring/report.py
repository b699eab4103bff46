"""`algoperf report`: one self-contained HTML page (images inlined) and a Markdown file."""

from __future__ import annotations

import base64
import html
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from scoring import plots
from scoring.score import ScoringResult


def run_facts(meta: Any) -> dict[str, str]:
    """Hardware, packages and git hash from one meta_data file: this harness's nested format
    or the reference's flat one (cpu_model_name, gpu_model_name, git_commit_hash, ...)."""
    if not isinstance(meta, dict):
        return {}
    facts: dict[str, str] = {}
    hw = meta.get("hardware")
    if isinstance(hw, dict) and hw:
        accel = ", ".join(map(str, hw.get("accelerators") or [])) or "no accelerator"
        facts["hardware"] = f"{hw.get('cpu', '?')} x{hw.get('cpu_count', '?')}, {accel}"
    elif "cpu_model_name" in meta or "gpu_model_name" in meta:
        gpu = meta.get("gpu_model_name")
        accel = f"{meta.get('gpu_count', '?')} x {gpu}" if gpu else "no accelerator"
        facts["hardware"] = (
            f"{meta.get('cpu_model_name', '?')} x{meta.get('cpu_count', '?')}, {accel}"
        )
    packages = meta.get("packages")
    if isinstance(packages, dict) and packages:
        facts["packages"] = ", ".join(f"{k} {v}" for k, v in sorted(packages.items()) if v)
    elif meta.get("python_version"):
        facts["packages"] = f"python {meta['python_version']}"
    git = meta.get("git_hash") or meta.get("git_commit_hash")
    if isinstance(git, str) and git:
        facts["harness git hash"] = git[:12]
    return facts


def provenance(result: ScoringResult) -> dict[str, Any]:
    """Where the numbers come from: rule set, this scorer's version, and the runs' metadata."""
    from algoperf import metadata

    runs: dict[str, set[str]] = {"hardware": set(), "packages": set(), "harness git hash": set()}
    for t in result.scored_trials:
        for path in sorted(t.path.parent.glob("meta_data_*.json"))[:1]:
            try:
                meta = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            for key, value in run_facts(meta).items():
                runs[key].add(value)
    rev = metadata.git_revision()
    return {
        "rule set": f"{result.rules}, {result.ruleset} tuning, trial selection '{result.select}', "
        f"{'exact' if result.exact else 'trapezoid (100 points)'} integral"
        + (", unofficial trials included" if result.include_unofficial else ""),
        "scored by": f"algoperf {metadata.package_versions().get('algoperf')} "
        f"(git {str(rev.get('git_hash'))[:12]})",
        **{f"runs: {k}": "; ".join(sorted(v)) or "not recorded" for k, v in runs.items()},
    }


def _fmt_time(t: float) -> str:
    return "not reached" if math.isinf(t) else f"{t:,.1f} s"


def time_cell(result: ScoringResult, submission: str, workload: str) -> str:
    """The median time with its bootstrap interval and how many studies reached the target."""
    t = result.medians[(submission, workload)]
    studies = list(result.study_times.get((submission, workload), {}).values())
    if not studies:
        return "no logs"
    reached = sum(math.isfinite(x) for x in studies)
    low, high = result.time_ci.get((submission, workload), (t, t))
    text = _fmt_time(t)
    if math.isfinite(t) and math.isfinite(high) and (low, high) != (t, t):
        text += f" [{low:,.0f}, {high:,.0f}]"
    elif math.isfinite(t) and not math.isfinite(high):
        text += f" [{low:,.0f}, inf]"
    return f"{text} ({reached}/{len(studies)})"


def leaderboard_rows(result: ScoringResult) -> list[list[str]]:
    rows = []
    for i in np.argsort(-result.scores, kind="stable"):
        cells = ["inf" if math.isinf(r) else f"{r:.2f}" for r in result.ratios[i]]
        rows.append(
            [
                str(int(result.ranks[i])),
                result.submissions[i],
                f"{result.scores[i]:.4f}",
                f"[{result.score_ci[i, 0]:.3f}, {result.score_ci[i, 1]:.3f}]",
                f"{result.rank_ci[i, 0]:.0f}-{result.rank_ci[i, 1]:.0f}",
                *cells,
            ]
        )
    return rows


def _inline(png: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode()


def write_report(result: ScoringResult, out: Path) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    figures = [
        ("Performance profiles", plots.performance_profiles(result, out)),
        ("Time to target per workload", plots.time_to_target(result, out)),
    ]
    for w in sorted({t.workload for t in result.scored_trials if t.workload in result.targets}):
        figures.append((f"Training curves: {w}", plots.training_curves(result, out, w)))
    header = ["rank", "submission", "score", "95% CI", "rank 95% CI", *result.workloads]
    rows = leaderboard_rows(result)
    times_header = ["submission", *sorted({w for (_, w) in result.medians})]
    times_rows = [
        [
            result.submissions[i],
            *(time_cell(result, result.submissions[i], w) for w in times_header[1:]),
        ]
        for i in np.argsort(-result.scores, kind="stable")
    ]
    prov = provenance(result)
    missing = [
        f"{s}: {n}" for s, notes in sorted(result.missing.items()) for n in notes
    ] + result.warnings

    md = [
        f"# algoperf leaderboard ({result.rules}, {result.ruleset} tuning)",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    md += ["| " + " | ".join(r) + " |" for r in rows]
    md += [
        "",
        "Workload cells: time to target / best time on that workload (the performance ratio).",
        "",
        "## Time to target",
        "",
        "Median over studies, [95% bootstrap interval over studies], (studies reaching the target / studies).",
        "",
        "| " + " | ".join(times_header) + " |",
        "|" + "---|" * len(times_header),
    ]
    md += ["| " + " | ".join(r) + " |" for r in times_rows]
    md += ["", "## Figures", ""] + [f"![{title}]({png.name})" for title, png in figures]
    if missing:
        md += ["", "## Missing and warnings", ""] + [f"- {m}" for m in missing]
    md += ["", "## Provenance", ""] + [f"- **{k}**: {v}" for k, v in prov.items()]
    md_path = out / "report.md"
    md_path.write_text("\n".join(md) + "\n")

    def table(head: list[str], body: list[list[str]], cls: str) -> str:
        th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
        trs = "".join(
            "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in body
        )
        return f'<table class="{cls}"><thead><tr>{th}</tr></thead><tbody>{trs}</tbody></table>'

    figs = "".join(
        f'<figure><img alt="{html.escape(t)}" src="{_inline(p)}"><figcaption>{html.escape(t)}</figcaption></figure>'
        for t, p in figures
    )
    missing_html = (
        (
            "<h2>Missing and warnings</h2><ul>"
            + "".join(f"<li>{html.escape(m)}</li>" for m in missing)
            + "</ul>"
        )
        if missing
        else ""
    )
    prov_html = (
        "<dl>"
        + "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>" for k, v in prov.items())
        + "</dl>"
    )
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>algoperf leaderboard ({html.escape(result.rules)}, {html.escape(result.ruleset)} tuning)</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
th, td {{ border: 1px solid #ccc; padding: 0.35em 0.7em; text-align: right; }}
th {{ background: #f0f3f7; }} table.leaderboard td:nth-child(2) {{ text-align: left; font-weight: 600; }}
table.times td:first-child {{ text-align: left; font-weight: 600; }}
table.times td {{ white-space: nowrap; }} .scroll {{ overflow-x: auto; }}
figure {{ margin: 1.5em 0; }} img {{ max-width: 100%; border: 1px solid #eee; }}
dt {{ font-weight: 600; margin-top: 0.5em; }} .note {{ color: #555; font-size: 0.9em; }}
</style></head><body>
<h1>algoperf leaderboard</h1>
<p class="note">{html.escape(prov["rule set"])}. Score = area under the performance profile over
tau in [1, 4], normalised to [0, 1]; 95% intervals from a bootstrap over studies.</p>
<div class="scroll">{table(header, rows, "leaderboard")}</div>
<p class="note">Workload cells: time to target / best time on that workload (the performance ratio).</p>
<h2>Time to target</h2>
<p class="note">Median over studies, [95% bootstrap interval over studies], (studies reaching the target / studies).</p>
<div class="scroll">{table(times_header, times_rows, "times")}</div>
<h2>Figures</h2>
{figs}
{missing_html}
<h2>Provenance</h2>
{prov_html}
</body></html>
"""
    html_path = out / "report.html"
    html_path.write_text(page)
    return html_path, md_path
