"""The report's figures (matplotlib, Agg): profiles, time-to-target per workload, training curves.

Each function saves `<stem>.png` and `<stem>.svg` in the output folder and returns the PNG path.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from scoring.score import ScoringResult  # noqa: E402


def _colors(names: list[str]) -> dict[str, str]:
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    return {n: cycle[i % len(cycle)] for i, n in enumerate(names)}


def _save(fig: plt.Figure, out: Path, stem: str) -> Path:
    fig.tight_layout()
    fig.savefig(out / f"{stem}.png", dpi=110)
    fig.savefig(out / f"{stem}.svg")
    plt.close(fig)
    return out / f"{stem}.png"


def performance_profiles(result: ScoringResult, out: Path) -> Path:
    fig, ax = plt.subplots(figsize=(7, 4.2))
    colors = _colors(result.submissions)
    for i in np.argsort(-result.scores, kind="stable"):
        s = result.submissions[i]
        ax.step(
            result.tau,
            result.profile[i],
            where="post",
            color=colors[s],
            lw=2,
            label=f"{s} ({result.scores[i]:.3f})",
        )
    ax.set_xlabel("tau (time / best time)")
    ax.set_ylabel("fraction of workloads with ratio <= tau")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlim(result.tau[0], result.tau[-1])
    ax.grid(alpha=0.3)
    ax.legend(title="submission (score)", fontsize=8)
    ax.set_title("Performance profiles")
    return _save(fig, out, "performance_profiles")


def time_to_target(result: ScoringResult, out: Path) -> Path:
    workloads = sorted({w for (_, w) in result.medians})
    n = len(workloads)
    ncols = min(n, 4)  # many workloads wrap into rows, so the figure stays page-wide
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(max(6.5, 3.2 * ncols), 3.6 * nrows + 0.4), squeeze=False
    )
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    colors = _colors(result.submissions)
    for ax, w in zip(axes.flat, workloads):
        budget = result.targets[w].budget if w in result.targets else math.inf
        for x, s in enumerate(result.submissions):
            median = result.medians[(s, w)]
            studies = list(result.study_times.get((s, w), {}).values())
            if math.isfinite(median):
                ax.bar(x, median, color=colors[s], alpha=0.45, width=0.6)
            finite = [t for t in studies if math.isfinite(t)]
            ax.scatter([x] * len(finite), finite, color=colors[s], zorder=3, s=18)
            misses = len(studies) - len(finite)
            if misses:
                ax.annotate(
                    f"{misses} not reached",
                    (x, 0),
                    ha="center",
                    va="bottom",
                    fontsize=7,
                    rotation=90,
                    color="0.3",
                )
        if math.isfinite(budget):
            ax.axhline(budget, color="0.4", ls="--", lw=1)
        ax.set_xticks(range(len(result.submissions)))
        ax.set_xticklabels(result.submissions, rotation=30, ha="right", fontsize=8)
        ax.set_title(w, fontsize=10)
        ax.set_ylabel("time to target (s)")
    fig.suptitle("Time to target (points: studies; bars: median; dashed: budget)", fontsize=10)
    return _save(fig, out, "time_to_target")


def training_curves(result: ScoringResult, out: Path, workload: str) -> Path:
    target = result.targets[workload]
    colors = _colors(result.submissions)
    fig, ax = plt.subplots(figsize=(7, 4))
    labelled = set()
    for t in result.scored_trials:
        if t.workload != workload or not t.scores:
            continue
        label = t.submission if t.submission not in labelled else None
        labelled.add(t.submission)
        ax.plot(t.scores, t.values, color=colors[t.submission], alpha=0.7, lw=1.2, label=label)
    ax.axhline(target.value, color="k", lw=1, ls="-", label=f"target {target.value:g}")
    if math.isfinite(target.budget):
        ax.axvline(target.budget, color="0.4", lw=1, ls="--", label="budget")
    ax.set_xlabel("submission time (s)")
    ax.set_ylabel(f"validation {target.metric}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(f"{workload}: validation {target.metric} per trial")
    return _save(fig, out, f"curves_{workload}")
