"""Exact resume: SIGKILL at any moment, then --resume, ends bit-for-bit like an uninterrupted run."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from algoperf import checkpoint

from conftest import REPO, read_eval_rows, read_summary, run_cli, trial_path

MAX_STEPS = "200"  # 4 checkpoints and 4 evals: every kill below lands between two of them
COMMON = [
    "run", "-w", "mnist1d", "-s", "adamw", "--data", "synthetic", "--max-steps", MAX_STEPS,
    "--eval-every", "50", "--checkpoint-every", "50", "--stop-at", "never", "--quiet",
    "--batch-size", "32", "--seed", "3",
    # The rows are compared step for step, so no run may end early on a loaded machine.
    "--max-runtime", "3600",
]
TIME_COLUMNS = {"accumulated_eval_time", "accumulated_logging_time", "accumulated_submission_time",
                "score", "total_duration", "preemption_count"}


def metrics(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    return [{k: v for k, v in r.items() if k not in TIME_COLUMNS} for r in rows]


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory) -> Path:
    exp = tmp_path_factory.mktemp("clean")
    out = run_cli(*COMMON, "--experiment-dir", str(exp), "--name", "r")
    assert out.returncode == 0, out.stderr
    return trial_path(exp, "r")


def start(exp: Path, *extra: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "algoperf.cli", *COMMON, "--experiment-dir", str(exp), "--name", "r", *extra],
        cwd=REPO, env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )


def wait_for(condition, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("the trial did not get there in time")
        time.sleep(0.02)


def checkpoint_steps(trial: Path) -> list[int]:
    index = trial / "checkpoints" / checkpoint.INDEX_FILE
    if not index.exists():
        return []
    try:
        return [e["step"] for e in json.loads(index.read_text())]
    except ValueError:
        return []


def resume_to_the_end(exp: Path) -> Path:
    out = run_cli(*COMMON, "--experiment-dir", str(exp), "--name", "r", "--resume")
    assert out.returncode == 0, out.stderr
    return trial_path(exp, "r")


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def read_events(trial: Path) -> list[dict]:
    return [json.loads(line) for line in (trial / "events.jsonl").read_text().splitlines()]


def assert_same_as_clean(trial: Path, clean: Path) -> None:
    """Every log file of the resumed trial holds what the uninterrupted one holds, no row twice."""
    rows, clean_rows = read_eval_rows(trial), read_eval_rows(clean)
    steps = [int(r["global_step"]) for r in rows]
    assert steps == sorted(set(steps)), "duplicated or out-of-order eval rows"
    assert metrics(rows) == metrics(clean_rows)
    assert read_summary(trial)["last_eval"] == read_summary(clean)["last_eval"]
    measured = read_csv(trial / "measurements.csv")
    assert metrics(measured) == metrics(read_csv(clean / "measurements.csv"))
    for kind in ("eval", "submission_metrics"):
        logged = [e["global_step"] for e in read_events(trial) if e["event"] == kind]
        clean_logged = [e["global_step"] for e in read_events(clean) if e["event"] == kind]
        assert logged == clean_logged, f"{kind} events differ from the uninterrupted run's"
    # A SIGTERM adds a checkpoint of its own, but none is logged twice.
    checkpoints = [e["global_step"] for e in read_events(trial) if e["event"] == "checkpoint"]
    assert checkpoints == sorted(set(checkpoints))


def kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait()


@pytest.mark.slow
def test_kill_before_the_first_checkpoint(tmp_path, clean_run):
    proc = start(tmp_path)
    trial = trial_path(tmp_path, "r")
    wait_for(lambda: (trial / "eval_measurements.csv").exists())
    kill(proc)
    assert checkpoint_steps(trial) == []
    assert_same_as_clean(resume_to_the_end(tmp_path), clean_run)


@pytest.mark.slow
def test_kill_mid_run_three_times(tmp_path, clean_run):
    trial = trial_path(tmp_path, "r")
    for i, at in enumerate((50, 100, 150)):
        proc = start(tmp_path, *(["--resume"] if i else []))
        wait_for(lambda at=at: max(checkpoint_steps(trial), default=0) >= at)
        kill(proc)
    assert_same_as_clean(resume_to_the_end(tmp_path), clean_run)
    summary = read_summary(trial)
    assert summary["preemption_count"] == 3
    assert summary["lost_s"] >= 0.0


@pytest.mark.slow
def test_kill_during_a_checkpoint_write(tmp_path, clean_run):
    proc = start(tmp_path, env={checkpoint.FAULT_ENV: "150"})
    proc.wait(timeout=120)
    assert proc.returncode == -signal.SIGKILL
    trial = trial_path(tmp_path, "r")
    assert checkpoint_steps(trial) == [50, 100]
    assert list((trial / "checkpoints").glob(".checkpoint_150.*.tmp"))  # the torn write
    assert_same_as_clean(resume_to_the_end(tmp_path), clean_run)


@pytest.mark.slow
def test_sigterm_checkpoints_and_exits_interrupted(tmp_path, clean_run):
    proc = start(tmp_path)
    trial = trial_path(tmp_path, "r")
    wait_for(lambda: max(checkpoint_steps(trial), default=0) >= 100)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 3
    summary = read_summary(trial)
    assert summary["status"] == "interrupted"
    assert max(checkpoint_steps(trial)) == summary["global_step"]
    assert_same_as_clean(resume_to_the_end(tmp_path), clean_run)


@pytest.mark.slow
def test_a_corrupted_checkpoint_falls_back_to_the_previous_one(tmp_path, clean_run):
    proc = start(tmp_path)
    trial = trial_path(tmp_path, "r")
    wait_for(lambda: max(checkpoint_steps(trial), default=0) >= 150)
    kill(proc)
    newest = trial / "checkpoints" / f"checkpoint_{max(checkpoint_steps(trial))}.ckpt"
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])  # truncated
    assert_same_as_clean(resume_to_the_end(tmp_path), clean_run)
    events = [json.loads(line) for line in (trial / "events.jsonl").read_text().splitlines()]
    resumes = [e for e in events if e["event"] == "resume"]
    assert resumes[-1]["from_step"] < int(newest.stem.split("_")[1])


# In `make test-heavy`: every resume test above already compares a second run with the clean one.
@pytest.mark.heavy
def test_same_command_same_seed_gives_identical_rows(tmp_path, clean_run):
    out = run_cli(*COMMON, "--experiment-dir", str(tmp_path), "--name", "r")
    assert out.returncode == 0, out.stderr
    assert metrics(read_eval_rows(trial_path(tmp_path, "r"))) == metrics(read_eval_rows(clean_run))
