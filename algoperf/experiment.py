"""Experiments: the plan of studies x trials, trial states, `algoperf tune` and `algoperf status`.

An experiment directory holds `experiment.json` (the plan) and the AlgoPerf layout
`study_<k>/<workload>_<framework>/trial_<i>/`. A trial's state is read from its files alone, so
running the same `tune` command again is idempotent: finished trials are skipped, interrupted
ones resumed from their last checkpoint, missing ones started. Trials can also be run one at a
time (`--study K --trial I`) by a scheduler, in any order and in parallel processes.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from algoperf import logs, tuning

PLAN_FILE = "experiment.json"
LOCK_FILE = ".running"
FINAL_STATUSES = ("reached", "budget", "max_steps", "diverged", "completed", "error")


def trial_state(trial_dir: Path) -> str:
    """done/reached, done/budget, done/max_steps, done/completed, diverged, error, interrupted, running or missing."""
    summary_path = trial_dir / logs.SUMMARY_FILE
    lock = trial_dir / LOCK_FILE
    if lock.exists() and _lock_alive(lock):
        return "running"
    if summary_path.exists():
        try:
            status = logs.read_json(summary_path)["status"]
        except (ValueError, KeyError, OSError):
            return "interrupted"
        if status in ("diverged", "error", "interrupted"):
            return status
        return f"done/{status}"
    if trial_dir.exists() and any(trial_dir.iterdir()):
        return "interrupted"
    return "missing"


def is_finished(state: str) -> bool:
    return state.startswith("done/") or state in ("diverged", "error")


def _lock_alive(lock: Path) -> bool:
    try:
        info = json.loads(lock.read_text())
    except (ValueError, OSError):
        return False
    if info.get("host") != socket.gethostname():
        return True  # another machine's trial: assume it is alive
    try:
        os.kill(int(info["pid"]), 0)
    except (ProcessLookupError, ValueError, KeyError):
        return False
    except PermissionError:
        return True
    return True


@contextmanager
def running_lock(trial_dir: Path) -> Any:
    trial_dir.mkdir(parents=True, exist_ok=True)
    lock = trial_dir / LOCK_FILE
    lock.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}))
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)


def plan_of(args: argparse.Namespace) -> dict[str, Any]:
    rules = tuning.RULE_SETS[args.rules]
    if args.ruleset == "self":
        studies, trials = rules.self_studies, 1
    else:
        studies, trials = rules.external_studies, rules.external_trials
    return {
        "workload": args.workload,
        "submission": args.submission,
        "ruleset": args.ruleset,
        "rules": args.rules,
        "seed": args.seed,
        "studies": args.studies if args.studies is not None else studies,
        "trials": 1 if args.ruleset == "self" else (args.trials if args.trials is not None else trials),
    }


def _check_plan(root: Path, plan: dict[str, Any]) -> None:
    from algoperf.cli import UsageError

    path = root / PLAN_FILE
    if path.exists():
        old = logs.read_json(path)
        keys = ("workload", "submission", "ruleset", "rules", "seed")
        changed = [k for k in keys if old.get(k) != plan[k]]
        if changed:
            raise UsageError(
                f"{root} is an experiment with a different {', '.join(changed)} "
                f"({', '.join(f'{k}={old.get(k)!r}' for k in changed)}). Use another --name, or the "
                "same settings to continue it."
            )
        plan = {**plan, "studies": max(plan["studies"], old.get("studies", 0)),
                "trials": max(plan["trials"], old.get("trials", 0))}
    root.mkdir(parents=True, exist_ok=True)
    logs.write_json(path, plan)


def cmd_tune(args: argparse.Namespace) -> int:
    from algoperf import cli, runner
    from algoperf import submission as submission_lib

    if args.resume or args.overwrite:
        raise cli.UsageError("tune resumes interrupted trials and skips finished ones by itself; "
                             "--resume/--overwrite apply to `algoperf run`.")
    try:
        source = submission_lib.resolve(args.submission, args.framework)
    except submission_lib.SubmissionError as e:
        raise cli.UsageError(str(e)) from None
    name = args.name or (source.name if args.ruleset == "external" else f"{source.name}_self")
    root = Path(args.experiment_dir) / name
    plan = plan_of(args)
    studies = [args.study] if args.study is not None else list(range(plan["studies"]))
    trials = [args.trial] if args.trial is not None else list(range(1, plan["trials"] + 1))
    # Validate everything (workload, submission, search space) before any training starts.
    cli.build_trial_config(args, studies[0], trials[0], name)
    _check_plan(root, plan)
    counts: dict[str, int] = {}
    worst = cli.EXIT_OK
    for study in studies:
        for trial in trials:
            config = cli.build_trial_config(args, study, trial, name)
            state = trial_state(config.trial_dir)
            label = f"study {study} trial {trial}"
            if is_finished(state) or state == "running":
                print(f"{label}: {state}, skipped", file=sys.stderr)
                counts["skipped"] = counts.get("skipped", 0) + 1
                continue
            config.resume = state == "interrupted"
            print(f"{label}: {'resuming' if config.resume else 'starting'} -> {config.trial_dir}",
                  file=sys.stderr)
            progress = cli.ProgressLine(args.quiet)
            with running_lock(config.trial_dir):
                result = runner.train_once(config, progress)
            progress.close()
            ttt = "not reached" if result.time_to_target_s is None else f"{result.time_to_target_s:.2f} s"
            print(f"{label}: {result.status}, {result.global_step} steps, time to target {ttt}",
                  file=sys.stderr)
            counts[result.status] = counts.get(result.status, 0) + 1
            if result.status == "interrupted":
                return cli.EXIT_INTERRUPTED
            worst = max(worst, cli.exit_code(result.status))
    print(f"tune {name}: " + ", ".join(f"{n} {k}" for k, n in sorted(counts.items())))
    print(f"  status: algoperf status {root}")
    return worst


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
                    key = (study, wf, trial)
                    found.setdefault(key, root / f"study_{study}" / wf / f"trial_{trial}")
    return [(s, wf, t, found[(s, wf, t)]) for (s, wf, t) in sorted(found)]


def cmd_status(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from algoperf.cli import UsageError

    root = Path(args.experiment)
    if not root.is_dir():
        raise UsageError(f"{root} is not a directory. Give an experiment directory, e.g. experiments/adamw.")
    rows = experiment_trials(root)
    if not rows:
        raise UsageError(f"{root} holds no trials (no study_<k>/<workload>_<framework>/trial_<i>/ folders).")
    table = Table(title=f"experiment {root}")
    for col in ("study", "workload", "trial", "state", "steps", "time to target", "last validation"):
        table.add_column(col)
    counts: dict[str, int] = {}
    for study, wf, trial, d in rows:
        state = trial_state(d)
        counts[state] = counts.get(state, 0) + 1
        steps = ttt = val = ""
        summary_path = d / logs.SUMMARY_FILE
        if summary_path.exists():
            try:
                s = logs.read_json(summary_path)
                steps = str(s.get("global_step", ""))
                ttt = "-" if s.get("time_to_target_s") is None else f"{s['time_to_target_s']:.2f} s"
                metric = s.get("target_metric", "")
                v = s.get("last_eval", {}).get(f"validation/{metric}")
                val = "" if v is None else f"{metric} {v:.4f}"
            except (ValueError, OSError):
                pass
        table.add_row(str(study), wf, str(trial), state, steps, ttt, val)
    Console(width=None if sys.stdout.isatty() else 140).print(table)
    print(", ".join(f"{n} {k}" for k, n in sorted(counts.items())))
    return 0


def register(sub: Any) -> None:
    from algoperf.cli import add_trial_arguments

    tune = sub.add_parser("tune", help="run the studies x trials of one workload under a ruleset")
    add_trial_arguments(tune)
    tune.add_argument("--studies", type=int, help="number of studies (default: from --rules)")
    tune.add_argument("--trials", type=int, help="trials per study (default: from --rules; 1 for self)")
    tune.add_argument("--study", type=int, help="run only this study (from 0)")
    tune.add_argument("--trial", type=int, help="run only this trial (from 1)")
    tune.set_defaults(func=cmd_tune)

    status = sub.add_parser("status", help="show the state of every trial of an experiment")
    status.add_argument("experiment", help="an experiment directory (experiments/<name>)")
    status.set_defaults(func=cmd_status)
