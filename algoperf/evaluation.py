"""What an eval decides: whether the targets are met (and when), whether the run diverged, and
the row it appends to eval_measurements.csv (RULES.md, Evals and stopping; Logs)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from algoperf.clock import RunClock


def finite_metrics(results: dict[str, float]) -> bool:
    """Whether every metric of an eval is finite (example counts aside)."""
    return all(math.isfinite(v) for k, v in results.items() if not k.endswith("num_examples"))


@dataclass
class Targets:
    """Which targets an eval has met, and the submission time of the first eval that met each."""

    validation: bool = False
    test: bool = False
    time_to_target: float | None = None
    test_time_to_target: float | None = None

    def update(self, workload: Any, results: dict[str, float], submission_time: float) -> None:
        metric = workload.target_metric_name
        if not self.validation and workload.has_reached_validation_target(results):
            self.validation, self.time_to_target = True, submission_time
        if not self.test and f"test/{metric}" in results and workload.has_reached_test_target(results):
            self.test, self.test_time_to_target = True, submission_time

    def reached(self, stop_at: str) -> bool:
        """Whether the run should stop: both targets (the reference), the validation one, or never."""
        if stop_at == "never":
            return False
        return self.validation and (stop_at == "validation" or self.test)

    def state_dict(self) -> dict[str, Any]:
        return {"goals": {"validation": self.validation, "test": self.test},
                "time_to_target": self.time_to_target, "test_time_to_target": self.test_time_to_target}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.validation = state["goals"]["validation"]
        self.test = state["goals"]["test"]
        self.time_to_target = state["time_to_target"]
        self.test_time_to_target = state["test_time_to_target"]


@dataclass
class EvalHistory:
    """`eval_results` as submissions see it: a list of (global_step, metrics)."""

    results: list[tuple[int, dict[str, float]]] = field(default_factory=list)

    @property
    def last(self) -> dict[str, float]:
        return self.results[-1][1] if self.results else {}


def eval_row(results: dict[str, float], clock: RunClock, global_step: int, preemption_count: int) -> dict[str, Any]:
    """One row of eval_measurements.csv, with AlgoPerf's columns; `score` is the submission time."""
    submission_time = clock.submission_time
    return {
        **results,
        "score": submission_time,
        "accumulated_submission_time": submission_time,
        "accumulated_eval_time": clock.phases["eval"],
        "accumulated_logging_time": clock.phases["logging"] + clock.phases["checkpoint"],
        "global_step": global_step,
        "preemption_count": preemption_count,
        "total_duration": clock.total + clock.lost,
    }
