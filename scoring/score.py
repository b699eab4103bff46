"""`algoperf score`: logs -> time-to-target per workload -> performance profiles -> one score.

The steps (RULES.md, Scoring): trial selection per study, median over studies, v0.5 held-out
gating, the 4 x cutoff, performance ratios, rho(tau), the integral. Confidence: a seeded
bootstrap over studies re-runs every step on resampled studies. Before all that, unofficial
trials are left out and rows past the budget dropped (scoring/official.py).
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from scoring import profiles
from scoring import rules as rules_lib
from scoring.logs import Target, TrialTimes, read_trials
from scoring.time_to_target import study_times, trial_time, workload_time


def targets_from_registry(ruleset: str = "external", rules: str = "v0.6") -> dict[str, Target]:
    """Every registered workload's validation target and budget (metadata only, no framework)."""
    from workloads import registry

    multiplier = rules_lib.get(rules).budget_multiplier(ruleset)
    return {
        name: Target(
            info.target_metric_name,
            info.validation_target,
            info.higher_is_better,
            info.max_allowed_runtime_sec * multiplier,
            info.base,
            info.development,
        )
        for name, info in registry.all_workloads().items()
    }


def load_targets_file(
    path: Path, base: dict[str, Target], budget_multiplier: float = 1.0
) -> dict[str, Target]:
    """--targets FILE: {workload: {"metric", "target", "higher_is_better", "budget"}} overrides.

    A "budget" is the workload's (its max_allowed_runtime_sec): the rule set's multiplier for
    the tuning ruleset scored (`budget_multiplier`) applies to it, as to the registry's.
    """
    try:
        raw = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"--targets {path}: cannot be read as JSON ({e}).") from None
    if not isinstance(raw, dict) or not all(isinstance(v, dict) for v in raw.values()):
        raise ValueError(
            f'--targets {path}: expected an object {{workload: {{"target": number, "metric": '
            '"accuracy", "higher_is_better": true, "budget": seconds}}}}.'
        )
    out = dict(base)
    for name, spec in raw.items():
        old = base.get(name)
        try:
            out[name] = Target(
                metric=spec.get("metric", old.metric if old else None),
                value=float(spec["target"]),
                higher_is_better=bool(
                    spec.get("higher_is_better", old.higher_is_better if old else True)
                ),
                budget=(
                    float(spec["budget"]) * budget_multiplier
                    if "budget" in spec
                    else (old.budget if old else math.inf)
                ),
                base=spec.get("base", old.base if old else None),
                development=bool(spec.get("development", old.development if old else False)),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(
                f"--targets {path}: entry {name!r} needs a numeric 'target' (and 'metric' for a new "
                f"workload): {e}"
            ) from None
        if out[name].metric is None:
            raise ValueError(f"--targets {path}: entry {name!r} needs 'metric'.")
    return out


@dataclass
class ScoringResult:
    rules: str
    ruleset: str
    select: str
    submissions: list[str]
    workloads: list[str]  # the scored (base) workloads, the columns of `times`
    times: np.ndarray  # after gating and cutoff: submissions x workloads
    medians: dict[tuple[str, str], float]  # before gating/cutoff, variants included
    study_times: dict[tuple[str, str], dict[int, float]]
    ratios: np.ndarray
    scores: np.ndarray
    score_ci: np.ndarray  # submissions x 2
    ranks: np.ndarray
    rank_ci: np.ndarray
    time_ci: dict[tuple[str, str], tuple[float, float]]
    tau: np.ndarray
    profile: np.ndarray  # submissions x len(tau)
    missing: dict[str, list[str]]
    warnings: list[str]
    trials: list[TrialTimes]  # every trial found, counted or not (trials.csv lists them all)
    targets: dict[str, Target]
    exact: bool = False
    include_unofficial: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def counted(self, trial: TrialTimes) -> bool:
        """Whether the trial is in the scores: official, or unofficial with --include-unofficial."""
        return self.include_unofficial or not trial.unofficial

    @property
    def scored_trials(self) -> list[TrialTimes]:
        return [t for t in self.trials if self.counted(t)]


def _columns(
    found: set[str],
    targets: dict[str, Target],
    rules: rules_lib.ScoringRules,
    only: list[str] | None,
    notes: list[str],
) -> tuple[list[str], dict[str, str]]:
    """The base workloads scored, and the held-out variants (variant -> base) that gate them.

    Development workloads (e.g. mnist) are not part of the benchmark: they are scored only when
    named in `only` or when the logs hold nothing else.
    """
    known = sorted(w for w in found if w in targets and targets[w].base is None)
    if only:
        unknown = [w for w in only if w not in known]
        if unknown:
            raise ValueError(
                f"--workloads {' '.join(unknown)}: no logs of these base workloads were found; "
                f"the logs hold: {', '.join(known) or 'none'}."
            )
        bases = [w for w in known if w in only]
    else:
        bases = [w for w in known if not targets[w].development] or known
        for w in sorted(set(known) - set(bases)):
            notes.append(
                f"{w} is a development workload and is not part of the benchmark score; "
                f"score it with --workloads {w}."
            )
    held: dict[str, str] = {}
    for v in rules.held_out_variants:
        base = targets[v].base if v in found and v in targets else None
        if base is not None and (base in bases or (not only and not targets[base].development)):
            held[v] = base
            if base not in bases:
                bases.append(base)
    return sorted(bases), held


def _pipeline(
    t: np.ndarray,
    columns: list[str],
    held: dict[str, str],
    rules: rules_lib.ScoringRules,
    exact: bool,
) -> tuple[np.ndarray, list[str], np.ndarray, np.ndarray]:
    gated, kept = profiles.gate_held_out(t, columns, held, rules)
    ratios = profiles.performance_ratios(gated)
    return gated, kept, ratios, profiles.benchmark_score(ratios, rules, exact)


def _incomplete(
    submission: str,
    columns: list[str],
    trials: list[TrialTimes],
    rules: rules_lib.ScoringRules,
    ruleset: str,
) -> str | None:
    """One note if the submission has fewer studies or trials than the rule set expects."""
    studies = rules.studies(ruleset)
    per_study = rules.trials_per_study(ruleset)
    counts: dict[str, dict[int, int]] = {}
    for t in trials:
        if t.submission == submission and t.workload in columns:
            by_study = counts.setdefault(t.workload, {})
            by_study[t.study] = by_study.get(t.study, 0) + 1
    short = []
    for w in columns:
        found = counts.get(w)
        if not found:
            continue  # reported as "no logs"
        parts = []
        if len(found) < studies:
            parts.append(f"{len(found)}/{studies} studies")
        few = sorted(k for k, n in found.items() if n < per_study)
        if few:
            parts.append(f"fewer than {per_study} trials in study {', '.join(map(str, few))}")
        if parts:
            short.append(f"{w} ({'; '.join(parts)})")
    if not short:
        return None
    return f"fewer runs than {rules.name} {ruleset} tuning expects: " + ", ".join(short)


def _ranks(scores: np.ndarray) -> np.ndarray:
    """1 = best; equal scores share the better rank."""
    order = -scores
    return (order[..., :, None] > order[..., None, :]).sum(axis=-1) + 1


def score(
    logs_dirs: list[Path],
    rules: str | rules_lib.ScoringRules = "v0.6",
    ruleset: str = "external",
    select: str = "earliest",
    exact: bool = False,
    targets: dict[str, Target] | None = None,
    workloads: list[str] | None = None,
    bootstrap: int = 1000,
    seed: int = 0,
    include_unofficial: bool = False,
) -> ScoringResult:
    """Scores the logs under `logs_dirs`. Unofficial trials of this harness (run with flags the
    rules fix, scoring/official.py) are left out unless `include_unofficial`."""
    preset = rules if isinstance(rules, rules_lib.ScoringRules) else rules_lib.get(rules)
    targets = targets if targets is not None else targets_from_registry(ruleset, preset.name)
    warnings: list[str] = []
    for d in logs_dirs:
        if not Path(d).is_dir():
            raise ValueError(
                f"{d} is not a directory of logs. Give folders that hold "
                "<submission>/study_<k>/<workload>_<framework>/trial_<i>/."
            )
    trials = read_trials([Path(d) for d in logs_dirs], targets, warnings, ruleset, preset.name)
    if not trials:
        raise ValueError(
            f"No eval_measurements.csv found under {', '.join(map(str, logs_dirs))} "
            "(expected <submission>/study_<k>/<workload>_<framework>/trial_<i>/)."
        )
    scored = [t for t in trials if include_unofficial or not t.unofficial]
    if not scored:
        raise ValueError(
            f"All {len(trials)} trials under {', '.join(map(str, logs_dirs))} are unofficial "
            f"(e.g. {trials[0].path.parent}: {'; '.join(trials[0].unofficial)}), so nothing "
            "counts. Score them anyway with --include-unofficial."
        )
    per_study = study_times(scored, targets, select)
    submissions = sorted({t.submission for t in trials})
    found = {t.workload for t in trials}
    columns, held = _columns(found, targets, preset, workloads, warnings)
    if not columns:
        raise ValueError(
            "None of the workloads in these logs is a scored (base) workload known to "
            "the registry or --targets."
        )
    all_columns = columns + sorted(held)
    medians = {
        (s, w): workload_time(list(per_study.get((s, w), {}).values()))
        for s in submissions
        for w in all_columns
    }
    raw = np.array([[medians[(s, w)] for w in all_columns] for s in submissions], dtype=float)
    gated, kept, ratios, scores = _pipeline(raw, all_columns, held, preset, exact)
    tau = profiles.taus(preset)
    prof = profiles.profile(ratios, tau)

    # What is missing, per submission.
    missing: dict[str, list[str]] = {}
    by_submission: dict[str, list[TrialTimes]] = {}
    for t in trials:
        by_submission.setdefault(t.submission, []).append(t)
    left_out = {
        (t.submission, t.workload) for t in trials if t.unofficial and not include_unofficial
    }
    max_studies = {
        w: max((len(per_study.get((s, w), {})) for s in submissions), default=0)
        for w in all_columns
    }
    for s in submissions:
        notes = []
        for w in all_columns:
            n = len(per_study.get((s, w), {}))
            if n == 0 and (s, w) in left_out:
                notes.append(f"{w}: only unofficial trials (counted as infinite)")
            elif n == 0:
                notes.append(f"{w}: no logs (counted as infinite)")
            elif n < max_studies[w]:
                notes.append(f"{w}: {n} of {max_studies[w]} studies")
        own = by_submission.get(s, [])
        counted = [t for t in own if include_unofficial or not t.unofficial]
        short = _incomplete(s, all_columns, counted, preset, ruleset)
        if short:
            notes.append(short)
        bad = [t for t in own if t.problem]
        if bad:
            notes.append(f"{len(bad)} trial log(s) not used (see the warnings)")
        unofficial = [t for t in own if t.unofficial]
        if unofficial:
            reasons = sorted({r.split(" (")[0] for t in unofficial for r in t.unofficial})
            notes.append(
                f"{len(unofficial)} unofficial trial(s) "
                + (
                    "counted (--include-unofficial)"
                    if include_unofficial
                    else "left out (see trials.csv; --include-unofficial counts them)"
                )
                + f": {', '.join(reasons)}"
            )
        past = sum(t.evals_past_budget for t in own)
        if past:
            notes.append(f"{past} eval row(s) past the budget not counted (see trials.csv)")
        if notes:
            missing[s] = notes

    # Bootstrap over studies: resample each cell's studies with replacement, redo every step.
    rng = np.random.default_rng(seed)
    n_boot = max(0, bootstrap)
    boot = np.full((n_boot, len(submissions), len(all_columns)), np.inf)
    for i, s in enumerate(submissions):
        for j, w in enumerate(all_columns):
            values = np.array(list(per_study.get((s, w), {}).values()), dtype=float)
            if len(values) and n_boot:
                idx = rng.integers(0, len(values), size=(n_boot, len(values)))
                boot[:, i, j] = np.median(values[idx], axis=1)
    if n_boot:
        _, _, _, boot_scores = _pipeline(boot, all_columns, held, preset, exact)
        score_ci = np.percentile(boot_scores, [2.5, 97.5], axis=0).T
        boot_ranks = _ranks(boot_scores)
        rank_ci = np.percentile(boot_ranks, [2.5, 97.5], axis=0, method="inverted_cdf").T
        with np.errstate(invalid="ignore"):
            time_bounds = np.percentile(boot, [2.5, 97.5], axis=0, method="inverted_cdf")
        time_ci = {
            (s, w): (float(time_bounds[0, i, j]), float(time_bounds[1, i, j]))
            for i, s in enumerate(submissions)
            for j, w in enumerate(all_columns)
        }
    else:
        score_ci = np.stack([scores, scores], axis=1)
        rank_ci = np.stack([_ranks(scores)] * 2, axis=1).astype(float)
        time_ci = {k: (v, v) for k, v in medians.items()}
    return ScoringResult(
        rules=preset.name,
        ruleset=ruleset,
        select=select,
        submissions=submissions,
        workloads=kept,
        times=gated,
        medians=medians,
        study_times=per_study,
        ratios=ratios,
        scores=scores,
        score_ci=score_ci,
        ranks=_ranks(scores),
        rank_ci=rank_ci,
        time_ci=time_ci,
        tau=tau,
        profile=prof,
        missing=missing,
        warnings=warnings,
        trials=trials,
        targets=targets,
        exact=exact,
        include_unofficial=include_unofficial,
    )


# ---- outputs ---------------------------------------------------------------------------------
def _num(x: float) -> str:
    return "inf" if math.isinf(x) else repr(float(x))


def write_outputs(result: ScoringResult, out: Path) -> list[Path]:
    """scores.csv, time_to_targets.csv, workload_times.csv (with the bootstrap interval and the
    time after gating and cutoff), trials.csv, performance_profile.csv, missing.txt."""
    out.mkdir(parents=True, exist_ok=True)
    order = np.argsort(-result.scores, kind="stable")
    paths = []
    with open(out / "scores.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(
            ["submission", "score", "score_low", "score_high", "rank", "rank_low", "rank_high"]
        )
        for i in order:
            w.writerow(
                [
                    result.submissions[i],
                    repr(float(result.scores[i])),
                    repr(float(result.score_ci[i, 0])),
                    repr(float(result.score_ci[i, 1])),
                    int(result.ranks[i]),
                    repr(float(result.rank_ci[i, 0])),
                    repr(float(result.rank_ci[i, 1])),
                ]
            )
    paths.append(out / "scores.csv")
    columns = sorted({w for (_, w) in result.medians})
    with open(out / "time_to_targets.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["submission", *columns])
        for s in result.submissions:
            w.writerow([s, *(_num(result.medians[(s, c)]) for c in columns)])
    paths.append(out / "time_to_targets.csv")
    with open(out / "workload_times.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(
            [
                "submission",
                "workload",
                "time",
                "time_low",
                "time_high",
                "studies",
                "studies_reached",
                "scored_time",
            ]
        )
        for i, s in enumerate(result.submissions):
            for c in columns:
                studies = list(result.study_times.get((s, c), {}).values())
                low, high = result.time_ci.get((s, c), (math.inf, math.inf))
                scored = (
                    result.times[i, result.workloads.index(c)]
                    if c in result.workloads
                    else math.nan
                )
                w.writerow(
                    [
                        s,
                        c,
                        _num(result.medians[(s, c)]),
                        _num(low),
                        _num(high),
                        len(studies),
                        sum(math.isfinite(t) for t in studies),
                        "" if math.isnan(scored) else _num(scored),
                    ]
                )
    paths.append(out / "workload_times.csv")
    with open(out / "trials.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(
            [
                "submission",
                "study",
                "workload",
                "framework",
                "trial",
                "time_to_target",
                "num_evals",
                "evals_past_budget",
                "harness",
                "counted",
                "unofficial",
                "problem",
                "path",
            ]
        )
        for t in result.trials:
            target = result.targets.get(t.workload)
            ttt = math.inf if target is None or t.problem else trial_time(t, target)
            w.writerow(
                [
                    t.submission,
                    t.study,
                    t.workload,
                    t.framework,
                    t.trial,
                    _num(ttt),
                    len(t.scores),
                    t.evals_past_budget,
                    t.harness,
                    "yes" if result.counted(t) else "no",
                    "; ".join(t.unofficial),
                    t.problem or "",
                    str(t.path),
                ]
            )
    paths.append(out / "trials.csv")
    with open(out / "performance_profile.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["tau", *result.submissions])
        for k, tau in enumerate(result.tau):
            w.writerow(
                [
                    repr(float(tau)),
                    *(repr(float(result.profile[i, k])) for i in range(len(result.submissions))),
                ]
            )
    paths.append(out / "performance_profile.csv")
    lines = [f"{s}: {note}" for s, notes in sorted(result.missing.items()) for note in notes]
    (out / "missing.txt").write_text(
        "\n".join(lines + result.warnings) + ("\n" if lines or result.warnings else "")
    )
    paths.append(out / "missing.txt")
    return paths


def print_table(result: ScoringResult) -> None:
    import sys

    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=f"algoperf leaderboard ({result.rules}, {result.ruleset} tuning, "
        f"{'exact' if result.exact else 'trapezoid'} integral)"
    )
    table.add_column("rank")
    table.add_column("submission")
    table.add_column("score [95% CI]")
    for w in result.workloads:
        table.add_column(w, justify="right")
    for i in np.argsort(-result.scores, kind="stable"):
        cells = []
        for j, _w in enumerate(result.workloads):
            r = result.ratios[i, j]
            cells.append("inf" if math.isinf(r) else f"{r:.2f}")
        table.add_row(
            str(int(result.ranks[i])),
            result.submissions[i],
            f"{result.scores[i]:.4f} [{result.score_ci[i, 0]:.3f}, {result.score_ci[i, 1]:.3f}]",
            *cells,
        )
    console = Console(width=None if sys.stdout.isatty() else 160)
    console.print(table)
    console.print("cells: time / best time on the workload (performance ratio)")
    for s, notes in sorted(result.missing.items()):
        console.print(f"[yellow]{s}[/yellow] (incomplete logs): " + "; ".join(notes))
