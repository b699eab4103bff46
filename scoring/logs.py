"""Reading eval logs (this harness's or the AlgoPerf reference's) into time-to-target per trial.

Layout: <LOGS_DIR>/<submission>[-YYYY-MM-DD-HH-MM-SS]/study_<k>/<workload>_<framework>/trial_<i>/
eval_measurements.csv. Only two columns of each CSV are parsed (`score` and the workload's
`validation/<metric>`), with the csv module, which beats building a DataFrame per small file.
A file that cannot be used gives a warning naming it, and its trial counts as not reaching the
target; it never stops the scoring. Which trials and rows count (flags, budget): scoring/official.py.
"""

from __future__ import annotations

import csv
import math
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from algoperf.rulesets import DEFAULT
from scoring import official

FRAMEWORKS = ("pytorch", "jax")
TIMESTAMP = re.compile(r"^(?P<name>.+)-\d{4}-\d{2}-\d{2}-\d{2}-\d{2}-\d{2}$")
EVAL_FILE = "eval_measurements.csv"


@dataclass(frozen=True)
class Target:
    metric: str
    value: float
    higher_is_better: bool
    budget: float
    base: str | None = None
    development: bool = False  # a development workload: not in the benchmark score by default

    def reached(self, v: float) -> bool:
        return v >= self.value if self.higher_is_better else v <= self.value


@dataclass
class TrialTimes:
    """One trial's eval history: the submission time and the validation metric at each eval."""

    submission: str
    study: int
    workload: str
    framework: str
    trial: int
    path: Path
    scores: list[float] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    problem: str | None = None
    harness: str = official.REFERENCE  # who wrote the logs: this harness or the reference
    unofficial: tuple[str, ...] = ()  # why the run does not count (empty: it does)
    evals_past_budget: int = 0  # rows of this harness's logs dropped: score past the budget

    def first_reaching(self, target: Target) -> int | None:
        """The index of the first eval meeting the target, or None."""
        for i, v in enumerate(self.values):
            if not math.isnan(v) and target.reached(v):
                return i
        return None


def submission_name(folder: Path) -> str:
    match = TIMESTAMP.match(folder.name)
    return match.group("name") if match else folder.name


def split_workload_framework(name: str) -> tuple[str, str]:
    for fw in FRAMEWORKS:
        if name.endswith("_" + fw):
            return name[: -len(fw) - 1], fw
    return name, "unknown"


def _parse(path: Path, metric_column: str) -> tuple[list[float], list[float]]:
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            raise ValueError("empty file")
        try:
            i_score = header.index("score")
        except ValueError:
            i_score = (
                header.index("accumulated_submission_time")
                if "accumulated_submission_time" in header
                else -1
            )
        if i_score < 0:
            raise ValueError("no score column")
        if metric_column not in header:
            raise ValueError(f"no {metric_column} column")
        i_metric = header.index(metric_column)
        scores, values = [], []
        for line_no, row in enumerate(reader, start=2):
            if len(row) != len(header):
                raise ValueError(f"truncated or malformed at line {line_no}")
            scores.append(float(row[i_score]))
            cell = row[i_metric]
            values.append(float(cell) if cell not in ("", "nan", "NaN") else math.nan)
    return scores, values


STUDY_DIR = re.compile(r"^study_(\d+)$")
TRIAL_DIR = re.compile(r"^trial_(\d+)$")


def find_trials(
    logs_dirs: list[Path],
) -> list[tuple[str, int, str, str, int, Path, list[str]]]:
    """(submission, study, workload, framework, trial, csv path, flags files) of every eval CSV.

    Any depth under each directory (a team folder above the submissions is fine):
    `<submission>/study_<k>/<workload>_<framework>/trial_<i>/eval_measurements.csv`, or the
    reference's older `<submission>/<workload>_<framework>/trial_<i>/` (study 0). A directory
    given that is itself a submission folder names the submission.
    """
    found = []
    for root in logs_dirs:
        for dirpath, _dirnames, filenames in os.walk(root):
            if EVAL_FILE not in filenames:
                continue
            trial_dir = Path(dirpath)
            trial_match = TRIAL_DIR.match(trial_dir.name)
            if trial_match is None or trial_dir == Path(root):
                continue
            wf_dir = trial_dir.parent
            above = wf_dir.parent
            study_match = STUDY_DIR.match(above.name)
            if study_match:
                study, sub_dir = int(study_match.group(1)), above.parent
            else:
                study, sub_dir = 0, above
            workload, framework = split_workload_framework(wf_dir.name)
            trial = int(trial_match.group(1))
            name = submission_name(sub_dir if sub_dir.name else sub_dir.resolve())
            flags = official.flags_files(filenames)
            found.append((name, study, workload, framework, trial, trial_dir / EVAL_FILE, flags))
    return sorted(found, key=lambda t: (t[0], t[1], t[2], t[4], str(t[5])))


def _drop_past_budget(t: TrialTimes, budget: float) -> None:
    keep = [i for i, s in enumerate(t.scores) if not s > budget]
    t.evals_past_budget = len(t.scores) - len(keep)
    if t.evals_past_budget:
        t.scores = [t.scores[i] for i in keep]
        t.values = [t.values[i] for i in keep]


def read_trials(
    logs_dirs: list[Path],
    targets: dict[str, Target],
    warn: list[str],
    ruleset: str = "external",
    rules: str = DEFAULT,
) -> list[TrialTimes]:
    """Every trial found, parsed; problems go to `warn` (one line naming the file) and `problem`.

    Each trial's flags are checked against `ruleset` and `rules` (its `unofficial` reasons), and
    rows of this harness's logs past the target's budget are dropped (scoring/official.py).
    """
    found = find_trials(logs_dirs)
    sources = [official.provenance(f[5].parent, f[6], ruleset, rules) for f in found]
    # One framework per submission and workload: the one with the most official trials, then
    # the most trials (ties: by name), so smoke runs in another framework never displace them.
    counts: dict[tuple[str, str], Counter[str]] = {}
    official_counts: dict[tuple[str, str], Counter[str]] = {}
    for (submission, _, workload, framework, _, _, _), source in zip(found, sources):
        counts.setdefault((submission, workload), Counter())[framework] += 1
        official_counts.setdefault((submission, workload), Counter())[framework] += int(
            not source.unofficial
        )
    chosen = {
        k: min(c, key=lambda fw: (-official_counts[k][fw], -c[fw], fw))
        for k, c in counts.items()
    }
    trials = []
    for (submission, study, workload, framework, trial, path, _), source in zip(found, sources):
        t = TrialTimes(submission, study, workload, framework, trial, path)
        t.harness, t.unofficial = source.harness, source.unofficial
        warn.extend(source.warnings)
        target = targets.get(workload)
        kept = chosen[(submission, workload)]
        if framework != kept:
            others = ", ".join(sorted(counts[(submission, workload)]))
            t.problem = f"mixed frameworks ({others}); scored with {kept}"
            warn.append(
                f"{path}: {submission} has {workload} logs of several frameworks ({others}); only "
                f"the {kept} trials are scored, this {framework} trial counts as not reaching the "
                "target. Score each framework's logs separately to compare them."
            )
        elif target is None:
            t.problem = f"unknown workload {workload!r}"
            warn.append(
                f"{path}: workload {workload!r} is not in the registry (nor in --targets); "
                "its trial counts as not reaching the target. Add it with --targets FILE."
            )
        else:
            try:
                t.scores, t.values = _parse(path, f"validation/{target.metric}")
                if t.harness == official.OURS:
                    _drop_past_budget(t, target.budget)
            except (ValueError, OSError, csv.Error, UnicodeDecodeError) as e:
                t.problem = str(e)
                t.scores, t.values = [], []
                warn.append(
                    f"{path}: cannot be read ({e}); its trial counts as not reaching the target."
                )
        trials.append(t)
    return trials
