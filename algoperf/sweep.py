"""`algoperf sweep plan|launch|status`: workloads x submissions x rulesets x studies x trials on a cluster.

A sweep file (YAML or JSON) names the grid; `plan` expands it into one job per trial, `launch`
hands the jobs to an existing scheduler through submitit (Slurm, or its local executor, which
runs the same jobs on this machine), and `status` reads every trial's state from its own logs,
so it cannot drift from what happened (DESIGN.md, Scale).

Each job is `algoperf tune ... --study K --trial I`, which is idempotent: a finished trial is
skipped, an interrupted one resumed from its last checkpoint, a missing one started. So
`launch` can always be run again: it submits the trials that are not finished and not running,
and a sweep whose jobs died (node lost, SIGKILL) completes without any trial run twice.

Layout: `<experiment-dir>/<sweep name>/<ruleset>/<workload>/<submission>/study_<k>/
<workload>_<framework>/trial_<i>/`, so `algoperf score <experiment-dir>/<name>/external`
scores one ruleset's runs (one `tune` experiment per workload: its experiment.json holds one
workload).

Sweep file:

    name: demo                      # default: the file's name without its suffix
    workloads: [mnist1d, {name: mnist, args: [--data, synthetic]}]   # args: this workload's
    submissions: [adamw, nadamw]    # names or paths (relative to the sweep file)
    rulesets: [external]            # external and/or self (self: trial 1 only)
    rules: v0.6
    studies: 2                      # a count (0 .. N-1) or a list of study indices
    trials: 2                       # a count (1 .. N) or a list of trial indices
    seed: 0
    framework: pytorch              # optional: which file of a submission with both
    args: [--max-steps, "100"]      # added to every job
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from algoperf import experiment, rulesets

SWEEP_KEYS = {"name", "workloads", "submissions", "rulesets", "rules", "studies", "trials", "seed",
              "framework", "args"}
# Flags a job's command line gets from the sweep itself; a sweep's `args` may not set them.
OWNED_FLAGS = {"-w", "--workload", "-s", "--submission", "--ruleset", "--rules", "--seed",
               "--experiment-dir", "--name", "--study", "--trial", "--studies", "--trials",
               "--framework", "--resume", "--overwrite"}
EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 3
SUBMITIT_DIR = ".submitit"


class SweepError(ValueError):
    """A problem with a sweep file: names the file, the key, what was expected."""


# ---- the plan ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TrialSpec:
    """One job of a sweep: a trial of one submission on one workload under one ruleset."""

    ruleset: str
    workload: str
    submission: str  # the name or path given to `tune -s`
    submission_name: str
    framework: str
    study: int
    trial: int
    root: Path  # the `tune` experiment dir: <experiment-dir>/<name>/<ruleset>/<workload>
    tune_args: tuple[str, ...] = field(default=())

    @property
    def key(self) -> str:
        return f"{self.ruleset}/{self.workload}/{self.submission_name}/study_{self.study}/trial_{self.trial}"

    @property
    def trial_dir(self) -> Path:
        return (self.root / self.submission_name / f"study_{self.study}"
                / f"{self.workload}_{self.framework}" / f"trial_{self.trial}")


@dataclass(frozen=True)
class Sweep:
    path: Path
    name: str
    root: Path  # <experiment-dir>/<name>
    jobs: tuple[TrialSpec, ...]


def _fail(path: Path, message: str) -> SweepError:
    return SweepError(f"{path}: {message}")


def read_sweep_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise SweepError(f"{path} does not exist. Give a sweep file (YAML or JSON), e.g. sweep.yaml.")
    text = path.read_text()
    try:
        if path.suffix == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except (json.JSONDecodeError, ValueError) as e:
        raise _fail(path, f"not valid {'JSON' if path.suffix == '.json' else 'YAML'} ({e}).") from None
    except Exception as e:  # yaml.YAMLError and its kin
        raise _fail(path, f"not valid YAML ({e}).") from None
    if not isinstance(data, dict):
        raise _fail(path, "expected a mapping with workloads, submissions, studies, trials, ...")
    unknown = sorted(set(data) - SWEEP_KEYS)
    if unknown:
        raise _fail(path, f"unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(SWEEP_KEYS))}.")
    for key in ("workloads", "submissions"):
        if not isinstance(data.get(key), list) or not data[key]:
            raise _fail(path, f"`{key}` must be a non-empty list, e.g. {key}: [mnist1d].")
    return data


def _indices(path: Path, data: dict[str, Any], key: str, start: int, default: int) -> list[int]:
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, list)):
        raise _fail(path, f"`{key}` must be a count or a list of indices, got {value!r}.")
    if isinstance(value, int):
        if value < 1:
            raise _fail(path, f"`{key}` must be at least 1, got {value}.")
        return list(range(start, start + value))
    if not value or not all(isinstance(v, int) and not isinstance(v, bool) and v >= start for v in value):
        raise _fail(path, f"`{key}` as a list must hold indices >= {start}, got {value!r}.")
    return sorted(set(value))


def _args(path: Path, value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = shlex.split(value)
    if not isinstance(value, list):
        raise _fail(path, f"{where} must be a list of command-line arguments, got {value!r}.")
    args = tuple(str(v) for v in value)
    owned = sorted({a.split("=", 1)[0] for a in args} & OWNED_FLAGS)
    if owned:
        raise _fail(path, f"{where} sets {', '.join(owned)}, which the sweep itself sets for each "
                          "job; use the sweep's keys (workloads, submissions, rulesets, ...).")
    return args


def _workloads(path: Path, data: dict[str, Any]) -> list[tuple[str, tuple[str, ...]]]:
    from workloads import registry

    out = []
    for item in data["workloads"]:
        if isinstance(item, dict):
            extra = sorted(set(item) - {"name", "args"})
            if "name" not in item or extra:
                raise _fail(path, f"a workload entry must be a name or {{name, args}}, got {item!r}.")
            name, args = item["name"], _args(path, item.get("args"), f"workload {item['name']!r} args")
        else:
            name, args = item, ()
        try:
            info = registry.get(str(name))
        except registry.UnknownWorkloadError as e:
            raise _fail(path, str(e)) from None
        out.append((info.name, args))
    names = [n for n, _ in out]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise _fail(path, f"workload(s) {', '.join(duplicates)} listed twice: their trials would "
                          "share folders. List each workload once (a variant has its own name).")
    return out


def load_sweep(path: Path, experiment_dir: str | Path, name: str | None = None) -> Sweep:
    """The sweep's jobs, validated (workloads, submissions, rulesets) before anything runs."""
    from algoperf import submission as submission_lib

    path = Path(path)
    data = read_sweep_file(path)
    sweep_name = str(name or data.get("name") or path.stem)
    rules = str(data.get("rules", rulesets.DEFAULT))
    if rules not in rulesets.PRESETS:
        raise _fail(path, f"rules {rules!r} unknown; known: {', '.join(sorted(rulesets.PRESETS))}.")
    preset = rulesets.get(rules)
    chosen = data.get("rulesets", ["external"])
    chosen = [chosen] if isinstance(chosen, str) else chosen
    if not isinstance(chosen, list) or not chosen or set(chosen) - {"external", "self"}:
        raise _fail(path, f"`rulesets` must list external and/or self, got {chosen!r}.")
    framework = data.get("framework")
    if framework not in (None, "pytorch", "jax"):
        raise _fail(path, f"`framework` must be pytorch or jax, got {framework!r}.")
    seed = data.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise _fail(path, f"`seed` must be an integer, got {seed!r}.")
    # Without `studies`/`trials`, a complete submission under the rule-set version (RULES.md).
    studies = {r: _indices(path, data, "studies", 0, preset.studies(r)) for r in chosen}
    trials = {r: _indices(path, data, "trials", 1, preset.trials_per_study(r)) for r in chosen}
    common = _args(path, data.get("args"), "`args`")
    root = Path(experiment_dir).resolve() / sweep_name

    submissions = []
    for entry in data["submissions"]:
        given = str(entry)
        candidate = (path.parent / given) if not Path(given).is_absolute() else Path(given)
        target = str(candidate.resolve()) if ("/" in given or given.endswith(".py")) else given
        try:
            source = submission_lib.resolve(target, framework)
        except submission_lib.SubmissionError as e:
            raise _fail(path, str(e)) from None
        submissions.append((target, source.name, source.framework))
    names = [n for _, n, _ in submissions]
    clashes = sorted({n for n in names if names.count(n) > 1})
    if clashes:
        raise _fail(path, f"several submissions are named {', '.join(clashes)}: their logs would "
                          "share a folder. Rename one.")

    jobs = []
    for ruleset in chosen:
        for workload, workload_args in _workloads(path, data):
            for target, sub_name, fw in submissions:
                for study in studies[ruleset]:
                    for trial in (trials[ruleset] if ruleset == "external" else [1]):
                        args = ("--rules", rules, "--seed", str(seed), "--framework", fw,
                                "--studies", str(max(studies[ruleset]) + 1),
                                "--trials", str(max(trials[ruleset]) if ruleset == "external" else 1),
                                *common, *workload_args)
                        jobs.append(TrialSpec(ruleset, workload, target, sub_name, fw, study, trial,
                                              root / ruleset / workload, args))
    return Sweep(path, sweep_name, root, tuple(jobs))


def tune_argv(job: TrialSpec) -> list[str]:
    """The `algoperf` arguments of one job: the idempotent `tune` of one study and trial."""
    return ["tune", "-w", job.workload, "-s", job.submission, "--ruleset", job.ruleset,
            "--experiment-dir", str(job.root), "--name", job.submission_name,
            "--study", str(job.study), "--trial", str(job.trial), "--quiet", *job.tune_args]


def job_command(job: TrialSpec, image: str | None = None, gpus: int = 0,
                python: str | None = None) -> list[str]:
    """The command a job runs: `algoperf tune ...`, inside `algoperf docker run` given an image."""
    base = [python or sys.executable, "-m", "algoperf.cli"]
    if image is None:
        return [*base, *tune_argv(job)]
    return [*base, "docker", "run", "--image", image, "--gpus", "all" if gpus else "none",
            "--", *tune_argv(job)]


# ---- one job ------------------------------------------------------------------------------------
def _ignore_preemption_warnings() -> None:
    """In the trial's process: a scheduler's USR1/USR2 is for the job's wrapper, not the trial.

    Slurm sends `--signal` to every process of the job; a Python process without a handler dies
    of SIGUSR1/SIGUSR2. The wrapper turns the warning into a SIGTERM, on which the trial
    checkpoints. An ignored disposition survives exec, so the trial's own children inherit it.
    """
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)


class TrialJob:
    """The callable submitit runs for one trial: `algoperf tune` until the trial is finished.

    A failed attempt (the trial's process crashed or was killed, the trial unfinished) is retried
    up to `retries` times; each retry resumes from the last checkpoint. A trial that ends in
    `error` or `diverged` is a result, not a failure: it is not retried. On the scheduler's
    preemption/timeout signal, submitit calls `checkpoint`: the trial gets SIGTERM, checkpoints
    and exits `interrupted`, and the same job is requeued; when it runs again, `tune` resumes.
    """

    def __init__(self, job: TrialSpec, command: list[str], retries: int = 1,
                 stop_timeout_s: float = 120.0) -> None:
        self.job = job
        self.command = command
        self.retries = retries
        self.stop_timeout_s = stop_timeout_s
        self._process: subprocess.Popen | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_process"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._process = None

    def __call__(self) -> dict[str, Any]:
        code, attempts = EXIT_ERROR, 0
        for attempts in range(1, self.retries + 2):
            state = experiment.trial_state(self.job.trial_dir)
            if experiment.is_finished(state):
                return self._result(state, EXIT_OK, attempts - 1)
            print(f"algoperf sweep: {self.job.key}: attempt {attempts} ({state}): "
                  f"{shlex.join(self.command)}", file=sys.stderr, flush=True)
            self._process = subprocess.Popen(self.command, preexec_fn=_ignore_preemption_warnings)
            code = self._wait(self._process)
            self._process = None
            state = experiment.trial_state(self.job.trial_dir)
            if experiment.is_finished(state) or code == EXIT_OK:
                return self._result(state, code, attempts)
            if code == EXIT_INTERRUPTED:
                # Stopped by the scheduler (SIGTERM): checkpointed; the requeue resumes it.
                return self._result(state, code, attempts)
            if code == EXIT_USAGE:
                break  # the command line is wrong: trying again cannot help
            print(f"algoperf sweep: {self.job.key}: attempt {attempts} failed (exit {code}, "
                  f"trial {state})", file=sys.stderr, flush=True)
        raise RuntimeError(f"{self.job.key}: the trial did not finish after {attempts} attempt(s) "
                           f"(last exit code {code}, state {experiment.trial_state(self.job.trial_dir)}); "
                           f"its log: {self.job.trial_dir}")

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """submitit's preemption/timeout hook: stop the trial (it checkpoints), requeue this job."""
        import submitit

        process = self._process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            if self._wait(process, self.stop_timeout_s) is None:
                process.kill()
        return submitit.helpers.DelayedSubmission(TrialJob(self.job, self.command, self.retries,
                                                           self.stop_timeout_s))

    @staticmethod
    def _wait(process: subprocess.Popen, timeout_s: float | None = None) -> int | None:
        """The process's exit code, polled: `checkpoint` runs in a signal handler that may
        interrupt this very wait, and Popen.wait would hold a lock the handler's wait needs."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while (code := process.poll()) is None:
            if deadline is not None and time.monotonic() > deadline:
                return None
            time.sleep(0.1)
        return code

    def _result(self, state: str, code: int, attempts: int) -> dict[str, Any]:
        return {"job": self.job.key, "state": state, "exit_code": code, "attempts": attempts}


# ---- launch ----------------------------------------------------------------------------------
def make_executor(args: argparse.Namespace, root: Path) -> Any:
    """A submitit executor: Slurm, or the local one that runs the same jobs on this machine."""
    os.environ["SUBMITIT_PREEMPT_SIGNAL"] = args.preempt_signal  # read when submitit is imported
    import submitit

    from algoperf.cli import UsageError

    submitit.JobEnvironment.USR_SIG = args.preempt_signal
    try:
        executor = submitit.AutoExecutor(folder=root / SUBMITIT_DIR / "%j", cluster=args.executor)
    except RuntimeError as e:  # no srun/sbatch on this machine
        raise UsageError(f"--executor {args.executor}: {e} Launch from a Slurm login node, or "
                         "use --executor local to run the jobs on this machine.") from None
    parameters: dict[str, Any] = {"timeout_min": args.time_limit, "tasks_per_node": 1, "nodes": 1,
                                  "name": f"algoperf-{root.name}"}
    if args.gpus_per_node:
        parameters["gpus_per_node"] = args.gpus_per_node
    if args.cpus_per_task:
        parameters["cpus_per_task"] = args.cpus_per_task
    if args.mem_gb:
        parameters["mem_gb"] = args.mem_gb
    if args.executor == "slurm":
        # Requeue-able whatever the cluster's default: a preempted trial comes back and resumes.
        parameters["slurm_additional_parameters"] = {"requeue": True}
        # Said in the job script too, for clusters whose sbatch exports no environment.
        parameters["slurm_setup"] = [f"export SUBMITIT_PREEMPT_SIGNAL={args.preempt_signal}"]
        if args.partition:
            parameters["slurm_partition"] = args.partition
        if args.parallel:
            parameters["slurm_array_parallelism"] = args.parallel
    executor.update_parameters(**parameters)
    return executor


def jobs_to_submit(sweep: Sweep) -> tuple[list[TrialSpec], dict[str, int]]:
    """The jobs whose trial is neither finished nor running, and the count of each state skipped."""
    todo, skipped = [], {}
    for job in sweep.jobs:
        state = experiment.trial_state(job.trial_dir)
        if experiment.is_finished(state) or state == "running":
            skipped[state] = skipped.get(state, 0) + 1
        else:
            todo.append(job)
    return todo, skipped


def cmd_launch(args: argparse.Namespace) -> int:
    sweep = _load(args)
    todo, skipped = jobs_to_submit(sweep)
    print(f"sweep {sweep.name}: {len(sweep.jobs)} jobs; "
          + (", ".join(f"{n} {s}" for s, n in sorted(skipped.items())) + " skipped; " if skipped else "")
          + f"{len(todo)} to submit ({args.executor})")
    if not todo:
        print(f"  status: algoperf sweep status {sweep.path} --experiment-dir {args.experiment_dir}")
        return EXIT_OK
    sweep.root.mkdir(parents=True, exist_ok=True)
    executor = make_executor(args, sweep.root)
    callables = [TrialJob(job, job_command(job, args.image, args.gpus_per_node), args.retries)
                 for job in todo]
    wait = args.wait if args.wait is not None else args.executor == "local"
    if args.executor == "local" and args.parallel:
        results = _run_throttled(executor, callables, args.parallel)
    else:
        with executor.batch():
            submitted = [executor.submit(c) for c in callables]
        for job, c in zip(submitted, callables):
            print(f"  submitted {c.job.key}: job {job.job_id}")
        if not wait:
            print(f"  status: algoperf sweep status {sweep.path} --experiment-dir {args.experiment_dir}")
            return EXIT_OK
        results = [_outcome(job, c) for job, c in zip(submitted, callables)]
    failed = [r for r in results if r["state"] == "failed"]
    print(f"sweep {sweep.name}: " + ", ".join(
        f"{n} {s}" for s, n in sorted(_count(r["state"] for r in results).items())))
    for r in failed:
        print(f"  failed: {r['job']}: {r['error']}")
    print(f"  status: algoperf sweep status {sweep.path} --experiment-dir {args.experiment_dir}")
    return EXIT_ERROR if failed else EXIT_OK


def _count(items: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for item in items:
        counts[item] = counts.get(item, 0) + 1
    return counts


def _outcome(job: Any, trial_job: TrialJob) -> dict[str, Any]:
    """What became of a submitted job: its result, or `failed` with the reason."""
    try:
        return job.result()
    except Exception as e:  # the job raised, or died without a result (killed, node lost)
        message = str(e).strip().splitlines()
        return {"job": trial_job.job.key, "state": "failed",
                "error": message[-1] if message else type(e).__name__}


def _run_throttled(executor: Any, callables: list[TrialJob], parallel: int) -> list[dict[str, Any]]:
    """Local jobs, at most `parallel` at a time (the local executor itself has no limit)."""
    pending, running, results = list(callables), [], []
    while pending or running:
        while pending and len(running) < parallel:
            c = pending.pop(0)
            job = executor.submit(c)
            print(f"  submitted {c.job.key}: job {job.job_id}", flush=True)
            running.append((job, c))
        still = []
        for job, c in running:
            if job.done():
                result = _outcome(job, c)
                print(f"  {c.job.key}: {result['state']}", flush=True)
                results.append(result)
            else:
                still.append((job, c))
        running = still
        time.sleep(0.2)
    return results


# ---- plan and status ---------------------------------------------------------------------------
def _load(args: argparse.Namespace) -> Sweep:
    from algoperf.cli import UsageError

    try:
        return load_sweep(Path(args.sweep_file), args.experiment_dir, args.name)
    except SweepError as e:
        raise UsageError(str(e)) from None


def cmd_plan(args: argparse.Namespace) -> int:
    sweep = _load(args)
    for job in sweep.jobs:
        print(f"{job.key}\t{shlex.join(['algoperf', *tune_argv(job)])}")
    print(f"sweep {sweep.name}: {len(sweep.jobs)} jobs -> {sweep.root}", file=sys.stderr)
    return EXIT_OK


def status_rows(sweep: Sweep) -> list[dict[str, Any]]:
    """One row per job, read from the trial's own files (summary.json, lock, folder)."""
    from algoperf import logs

    rows = []
    for job in sweep.jobs:
        row: dict[str, Any] = {"job": job.key, "ruleset": job.ruleset, "workload": job.workload,
                               "submission": job.submission_name, "study": job.study,
                               "trial": job.trial, "state": experiment.trial_state(job.trial_dir),
                               "steps": None, "time_to_target_s": None}
        summary = job.trial_dir / logs.SUMMARY_FILE
        if summary.exists():
            try:
                s = logs.read_json(summary)
                row["steps"], row["time_to_target_s"] = s.get("global_step"), s.get("time_to_target_s")
            except (ValueError, OSError):
                pass
        rows.append(row)
    return rows


def cmd_status(args: argparse.Namespace) -> int:
    sweep = _load(args)
    rows = status_rows(sweep)
    if args.json:
        print(json.dumps(rows, indent=2))
        return EXIT_OK
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"sweep {sweep.name} ({sweep.root})")
    for col in ("ruleset", "workload", "submission", "study", "trial", "state", "steps", "time to target"):
        table.add_column(col)
    for r in rows:
        ttt = "" if r["time_to_target_s"] is None else f"{r['time_to_target_s']:.2f} s"
        table.add_row(r["ruleset"], r["workload"], r["submission"], str(r["study"]), str(r["trial"]),
                      r["state"], "" if r["steps"] is None else str(r["steps"]), ttt)
    Console(width=None if sys.stdout.isatty() else 140).print(table)
    counts = _count(r["state"] for r in rows)
    print(", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    return EXIT_OK


def register(sub: Any) -> None:
    p = sub.add_parser("sweep", help="plan, launch (submitit: Slurm or local) and follow a sweep of trials")
    verbs = p.add_subparsers(dest="sweep_command", metavar="VERB", required=True)

    def common(q: argparse.ArgumentParser) -> None:
        q.add_argument("sweep_file", help="a YAML or JSON sweep file")
        q.add_argument("--experiment-dir", default="./experiments")
        q.add_argument("--name", help="the sweep's folder name (default: the file's `name` or stem)")

    plan = verbs.add_parser("plan", help="print the job list (one trial per job) and its commands")
    common(plan)
    plan.set_defaults(func=cmd_plan)

    launch = verbs.add_parser("launch", help="submit every trial that is neither finished nor running")
    common(launch)
    launch.add_argument("--executor", choices=("slurm", "local"), default="slurm")
    launch.add_argument("--partition", help="Slurm partition")
    launch.add_argument("--gpus-per-node", type=int, default=0, help="GPUs per job (one node each)")
    launch.add_argument("--cpus-per-task", type=int, help="CPUs per job")
    launch.add_argument("--mem-gb", type=float, help="memory per job")
    launch.add_argument("--time-limit", type=int, default=24 * 60, metavar="MINUTES",
                        help="time limit of one job; a trial that needs longer is checkpointed "
                             "and requeued at the limit, up to 3 times (default 1440)")
    launch.add_argument("--image", help="run each trial in this Docker image (algoperf docker run)")
    launch.add_argument("--retries", type=int, default=2,
                        help="times a job retries a trial whose process failed (default 2)")
    launch.add_argument("--parallel", type=int,
                        help="at most this many jobs at once (Slurm: array parallelism)")
    launch.add_argument("--preempt-signal", choices=("USR1", "USR2"), default="USR1",
                        help="the signal Slurm sends before preempting or timing out a job, on "
                             "which the trial checkpoints and the job is requeued (default USR1)")
    wait = launch.add_mutually_exclusive_group()
    wait.add_argument("--wait", dest="wait", action="store_true", default=None,
                      help="wait for the jobs and report (default for --executor local)")
    wait.add_argument("--no-wait", dest="wait", action="store_false",
                      help="return once submitted (default for --executor slurm)")
    launch.set_defaults(func=cmd_launch)

    status = verbs.add_parser("status", help="every job's state, read from the trials' own logs")
    common(status)
    status.add_argument("--json", action="store_true", help="print the rows as JSON")
    status.set_defaults(func=cmd_status)
