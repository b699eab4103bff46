"""From trials to times: the study's time (trial selection) and the workload's (median over studies)."""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np

from scoring.logs import Target, TrialTimes

SELECTIONS = ("earliest", "fastest")


def trial_time(trial: TrialTimes, target: Target) -> float:
    """The submission time of the first eval reaching the target; inf if none does."""
    i = trial.first_reaching(target)
    return math.inf if i is None else trial.scores[i]


def study_time(trials: list[TrialTimes], target: Target, select: str = "earliest") -> float:
    """The time of one study from its trials.

    `earliest` (the reference scorer): the trial reaching the target at the earliest eval index,
    ties broken by the smaller time. `fastest` (the documented rule): the smallest time.
    """
    candidates = []
    for t in trials:
        i = t.first_reaching(target)
        if i is not None:
            time = t.scores[i]
            candidates.append((i, time) if select == "earliest" else (time, i))
    if not candidates:
        return math.inf
    best = min(candidates)
    return float(best[1] if select == "earliest" else best[0])


def workload_time(study_times: list[float]) -> float:
    """The median over studies (an even count averages the two middle ones; inf propagates)."""
    if not study_times:
        return math.inf
    return float(np.median(np.asarray(study_times, dtype=float)))


def study_times(
    trials: list[TrialTimes], targets: dict[str, Target], select: str = "earliest"
) -> dict[tuple[str, str], dict[int, float]]:
    """{(submission, workload): {study: time}} for every study present in the logs."""
    if select not in SELECTIONS:
        raise ValueError(f"select must be one of {SELECTIONS}, got {select!r}")
    grouped: dict[tuple[str, str, int], list[TrialTimes]] = defaultdict(list)
    for t in trials:
        grouped[(t.submission, t.workload, t.study)].append(t)
    out: dict[tuple[str, str], dict[int, float]] = defaultdict(dict)
    for (submission, workload, study), group in grouped.items():
        target = targets.get(workload)
        out[(submission, workload)][study] = (
            math.inf if target is None else study_time(group, target, select)
        )
    return dict(out)
