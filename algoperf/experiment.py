"""Experiments: the plan of studies x trials, trial states and locks, and running a plan.

An experiment directory holds `experiment.json` (the plan) and the AlgoPerf layout
`study_<k>/<workload>_<framework>/trial_<i>/`. A trial's state is read from its files alone, so
running the same `tune` command again is idempotent: finished trials are skipped, interrupted
ones resumed from their last checkpoint, missing ones started. Trials can also be run one at a
time (`--study K --trial I`) by a scheduler, in any order and in parallel processes, on any
number of hosts sharing the directory: a trial being run holds a lock file created atomically
(O_CREAT|O_EXCL) whose heartbeat (its modification time) the holder renews; a lock whose
heartbeat is older than the timeout is stale on any host (its node died) and is broken.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from algoperf import logs, rulesets
from algoperf.trial_config import ConfigError, RunRequest

PLAN_FILE = "experiment.json"
LOCK_FILE = ".running"
FINAL_STATUSES = ("reached", "budget", "max_steps", "diverged", "completed", "error")
# A lock not renewed for this long belongs to a dead process or node (ALGOPERF_LOCK_TIMEOUT_S).
LOCK_TIMEOUT_S = float(os.environ.get("ALGOPERF_LOCK_TIMEOUT_S", "300"))


# ---- trial states ----------------------------------------------------------------------------
def trial_state(trial_dir: Path, locked_by_me: bool = False) -> str:
    """done/<status>, diverged, error, interrupted, running or missing (`locked_by_me`: the
    caller holds the trial's lock, so the lock says nothing about the trial)."""
    summary_path = trial_dir / logs.SUMMARY_FILE
    if not locked_by_me and lock_is_live(trial_dir / LOCK_FILE):
        return "running"
    if summary_path.exists():
        try:
            status = logs.read_json(summary_path)["status"]
        except (ValueError, KeyError, OSError):
            return "interrupted"
        if status in ("diverged", "error", "interrupted"):
            return status
        return f"done/{status}"
    if trial_dir.exists() and any(not p.name.startswith(LOCK_FILE) for p in trial_dir.iterdir()):
        return "interrupted"
    return "missing"


def is_finished(state: str) -> bool:
    return state.startswith("done/") or state in ("diverged", "error")


# ---- locks -----------------------------------------------------------------------------------
def _read_lock(lock: Path) -> dict[str, Any] | None:
    try:
        return dict(json.loads(lock.read_text()))
    except (ValueError, OSError, TypeError):
        return None


def lock_is_live(lock: Path, timeout: float | None = None) -> bool:
    """Whether a lock's holder is alive: its process (same host) exists and its heartbeat is
    recent (any host). A lock being written (no content yet) counts as live."""
    timeout = LOCK_TIMEOUT_S if timeout is None else timeout
    try:
        age = time.time() - lock.stat().st_mtime
    except FileNotFoundError:
        return False
    if age > timeout:
        return False
    info = _read_lock(lock)
    if info is None:
        return age < 5.0  # just created, its content not yet written
    if info.get("host") == socket.gethostname():
        try:
            os.kill(int(info["pid"]), 0)
        except (ProcessLookupError, ValueError, KeyError):
            return False
        except PermissionError:
            return True
    return True


class TrialLock:
    """The lock of one trial folder, held while the trial runs, with a heartbeat thread."""

    def __init__(self, trial_dir: Path, timeout: float | None = None) -> None:
        self.path = Path(trial_dir) / LOCK_FILE
        self.timeout = LOCK_TIMEOUT_S if timeout is None else timeout
        self.token = uuid.uuid4().hex
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def acquire(self) -> bool:
        """True if this process now holds the lock; False if a live holder has it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                if lock_is_live(self.path, self.timeout) or not self._break_stale():
                    return False
                continue
            with os.fdopen(fd, "w") as f:
                json.dump({"pid": os.getpid(), "host": socket.gethostname(), "token": self.token,
                           "started": time.time()}, f)
            self._thread = threading.Thread(target=self._beat, name="algoperf-lock-heartbeat", daemon=True)
            self._thread.start()
            return True
        return False

    def _break_stale(self) -> bool:
        """Removes a stale lock, under a short-lived breaker lock so that two processes never
        both break it (one could otherwise remove the fresh lock the other just made)."""
        breaker = self.path.with_name(LOCK_FILE + ".break")
        try:
            fd = os.open(breaker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                if time.time() - breaker.stat().st_mtime > 60:
                    breaker.unlink(missing_ok=True)  # its breaker died mid-break
            except FileNotFoundError:
                pass
            return False
        os.close(fd)
        try:
            if lock_is_live(self.path, self.timeout):
                return False
            self.path.unlink(missing_ok=True)
            return True
        finally:
            breaker.unlink(missing_ok=True)

    def _beat(self) -> None:
        interval = max(0.5, self.timeout / 10)
        while not self._stop.wait(interval):
            try:
                os.utime(self.path)
            except FileNotFoundError:
                return

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        info = _read_lock(self.path)
        if info is not None and info.get("token") == self.token:
            self.path.unlink(missing_ok=True)


@contextmanager
def holding(trial_dir: Path) -> Iterator[bool]:
    """`with holding(dir) as mine:` -- mine is False when another live process holds the trial."""
    lock = TrialLock(trial_dir)
    mine = lock.acquire()
    try:
        yield mine
    finally:
        if mine:
            lock.release()


# ---- plans -----------------------------------------------------------------------------------
def plan_of(request: RunRequest, studies: int | None = None, trials: int | None = None) -> dict[str, Any]:
    preset = rulesets.get(request.rules)
    return {
        "workload": request.workload,
        "submission": request.submission,
        "ruleset": request.ruleset,
        "rules": request.rules,
        "seed": request.seed,
        "studies": studies if studies is not None else preset.studies(request.ruleset),
        "trials": 1 if request.ruleset == "self" else (
            trials if trials is not None else preset.trials_per_study(request.ruleset)),
    }


def record_plan(root: Path, plan: dict[str, Any]) -> None:
    """Writes experiment.json, refusing to continue an experiment of other settings."""
    path = root / PLAN_FILE
    if path.exists():
        old = logs.read_json(path)
        keys = ("workload", "submission", "ruleset", "rules", "seed")
        changed = [k for k in keys if old.get(k) != plan[k]]
        if changed:
            raise ConfigError(
                f"{root} is an experiment with a different {', '.join(changed)} "
                f"({', '.join(f'{k}={old.get(k)!r}' for k in changed)}). Use another --name, or the "
                "same settings to continue it."
            )
        plan = {**plan, "studies": max(plan["studies"], old.get("studies", 0)),
                "trials": max(plan["trials"], old.get("trials", 0))}
    root.mkdir(parents=True, exist_ok=True)
    logs.write_json(path, plan)


def tune(
    request: RunRequest, name: str, studies: list[int], trials: list[int],
    run_trial: Callable[[Any], Any], report: Callable[[str], None],
) -> dict[str, int]:
    """Runs every (study, trial) of the plan that is not finished or running elsewhere.

    `run_trial(config)` runs one trial and returns its TrialResult; `report(line)` tells the user
    what happens. Returns how many trials ended in each way (`skipped` for the others).
    """
    from algoperf import trial_config

    counts: dict[str, int] = {}
    for study in studies:
        for trial in trials:
            config = trial_config.build(request, study, trial, name)
            label = f"study {study} trial {trial}"
            with holding(config.trial_dir) as mine:
                state = trial_state(config.trial_dir, locked_by_me=True) if mine else "running"
                if is_finished(state) or state == "running":
                    report(f"{label}: {state}, skipped")
                    counts["skipped"] = counts.get("skipped", 0) + 1
                    continue
                config.resume = state == "interrupted"
                report(f"{label}: {'resuming' if config.resume else 'starting'} -> {config.trial_dir}")
                result = run_trial(config)
            ttt = "not reached" if result.time_to_target_s is None else f"{result.time_to_target_s:.2f} s"
            report(f"{label}: {result.status}, {result.global_step} steps, time to target {ttt}")
            counts[result.status] = counts.get(result.status, 0) + 1
            if result.status == "interrupted":
                return counts
    return counts


def experiment_trials(root: Path) -> list[tuple[int, str, int, Path]]:
    """(study, workload_framework, trial, dir) of every planned or present trial."""
    found: dict[tuple[int, str, int], Path] = {}
    for d in root.glob("study_*/*/trial_*"):
        if d.is_dir():
            found[(int(d.parent.parent.name.split("_")[1]), d.parent.name, int(d.name.split("_")[1]))] = d
    plan_path = root / PLAN_FILE
    if plan_path.exists():
        plan = logs.read_json(plan_path)
        frameworks = {k[1] for k in found} or {f"{plan['workload']}_pytorch"}
        for study in range(plan["studies"]):
            for trial in range(1, plan["trials"] + 1):
                for wf in frameworks:
                    found.setdefault((study, wf, trial), root / f"study_{study}" / wf / f"trial_{trial}")
    return [(s, wf, t, found[(s, wf, t)]) for (s, wf, t) in sorted(found)]


def status_rows(root: Path) -> list[dict[str, str]]:
    """One row per trial of an experiment, read from the trial folders themselves."""
    rows = []
    for study, wf, trial, d in experiment_trials(root):
        row = {"study": str(study), "workload": wf, "trial": str(trial), "state": trial_state(d),
               "steps": "", "time to target": "", "last validation": ""}
        summary_path = d / logs.SUMMARY_FILE
        if summary_path.exists():
            try:
                s = logs.read_json(summary_path)
                row["steps"] = str(s.get("global_step", ""))
                ttt = s.get("time_to_target_s")
                row["time to target"] = "-" if ttt is None else f"{ttt:.2f} s"
                metric = s.get("target_metric", "")
                v = s.get("last_eval", {}).get(f"validation/{metric}")
                row["last validation"] = "" if v is None else f"{metric} {v:.4f}"
            except (ValueError, OSError):
                pass
        rows.append(row)
    return rows
