"""Writes eval logs in the reference layout for the scoring tests."""

from __future__ import annotations

from pathlib import Path

HEADER = (
    "accumulated_eval_time,accumulated_logging_time,accumulated_submission_time,global_step,"
    "preemption_count,score,test/accuracy,test/loss,test/num_examples,total_duration,"
    "train/accuracy,train/loss,validation/accuracy,validation/loss,validation/num_examples"
)


def write_trial(
    root: Path,
    submission: str,
    study: int,
    workload: str,
    trial: int,
    evals: list[tuple[float, float]],
    framework: str = "pytorch",
) -> Path:
    """One trial's eval_measurements.csv: `evals` = [(score, validation accuracy), ...]."""
    d = root / submission / f"study_{study}" / f"{workload}_{framework}" / f"trial_{trial}"
    d.mkdir(parents=True, exist_ok=True)
    lines = [HEADER]
    for step, (score, acc) in enumerate(evals, start=1):
        lines.append(
            f"1.0,0.1,{score},{step * 100},0,{score},{acc},0.5,100,{score + 5},{acc},0.4,{acc},0.5,100"
        )
    path = d / "eval_measurements.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def reaching_at(time: float, index: int = 0, spacing: float = 1.0) -> list[tuple[float, float]]:
    """Evals that first reach accuracy 0.5 at eval `index`, at submission time `time`."""
    evals = [(time - spacing * (index - i), 0.1) for i in range(index)]
    return evals + [(time, 0.9)]


TARGETS = {
    "wa": {"metric": "accuracy", "target": 0.5, "higher_is_better": True, "budget": 100.0},
    "wb": {"metric": "accuracy", "target": 0.5, "higher_is_better": True, "budget": 100.0},
    "wc": {"metric": "accuracy", "target": 0.5, "higher_is_better": True, "budget": 100.0},
}


def write_curve(
    root: Path,
    submission: str,
    study: int,
    workload: str,
    trial: int,
    times: list[float],
    values: list[float],
    metric: str,
    framework: str = "pytorch",
) -> Path:
    """A trial's eval_measurements.csv with the reference's columns for any target metric."""
    metrics = sorted({metric, "loss"})
    columns = sorted(
        ["accumulated_eval_time", "accumulated_logging_time", "accumulated_submission_time"]
        + ["global_step", "preemption_count", "score", "total_duration"]
        + [f"{split}/{m}" for split in ("train", "validation", "test") for m in metrics]
        + ["validation/num_examples", "test/num_examples"]
    )
    d = root / submission / f"study_{study}" / f"{workload}_{framework}" / f"trial_{trial}"
    d.mkdir(parents=True, exist_ok=True)
    lines = [",".join(columns)]
    for step, (t, v) in enumerate(zip(times, values, strict=True), start=1):
        row = {
            "accumulated_eval_time": 0.5 * step,
            "accumulated_logging_time": 0.01 * step,
            "accumulated_submission_time": t,
            "global_step": 100 * step,
            "preemption_count": 0,
            "score": t,
            "total_duration": t + 0.6 * step,
            "validation/num_examples": 1000,
            "test/num_examples": 1000,
        }
        for split in ("train", "validation", "test"):
            for m in metrics:
                row[f"{split}/{m}"] = v if m == metric else 1.0 / step
        lines.append(
            ",".join(
                repr(float(row[c]))
                if "/" in c or "time" in c or c in ("score", "total_duration")
                else str(row[c])
                for c in columns
            )
        )
    path = d / "eval_measurements.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


# What this harness's runner writes into flags_<p>.json for a default `algoperf run` (the keys the
# scorer reads: data, max_steps, max_runtime, eval_every, batch_size, ruleset, rules; null = the
# flag was not given).
OUR_FLAGS = {
    "workload": "wa",
    "submission": "submissions/adamw/adamw_pytorch.py",
    "framework": "pytorch",
    "seed": 0,
    "data": "real",
    "data_dir": None,
    "max_steps": None,
    "max_runtime": None,
    "stop_at": "both",
    "ruleset": "external",
    "rules": "v0.6",
    "batch_size": None,
    "study": 0,
    "trial": 1,
    "resume": False,
    "checkpoint_every": None,
    "eval_every": None,
}

# A reference-harness flags_<p>.json: absl's dump of every flag submission_runner.py defines
# (a subset of them, with their defaults), plus absl's own.
REFERENCE_FLAGS = {
    "submission_path": "reference_algorithms/paper_baselines/adamw/jax/submission.py",
    "workload": "wa",
    "tuning_ruleset": "external",
    "tuning_search_space": "tuning_search_space.json",
    "num_tuning_trials": 5,
    "data_dir": "~/data",
    "framework": "jax",
    "experiment_dir": "experiments",
    "experiment_name": "adamw",
    "max_global_steps": None,
    "save_checkpoints": True,
    "resume_last_run": None,
    "logtostderr": False,
    "verbosity": 0,
}


def write_flags(eval_csv: Path, preemption: int = 0, **changes: object) -> Path:
    """This harness's flags_<p>.json next to `eval_csv`: a default run's flags with `changes`."""
    import json

    path = eval_csv.parent / f"flags_{preemption}.json"
    path.write_text(json.dumps({**OUR_FLAGS, **changes}))
    return path


def write_reference_flags(eval_csv: Path, preemption: int = 0) -> Path:
    import json

    path = eval_csv.parent / f"flags_{preemption}.json"
    path.write_text(json.dumps(REFERENCE_FLAGS))
    return path
