"""The `algoperf` command: run, tune, status, workloads, score, report.

Every sub-command validates its input first and fails with one paragraph naming the file or
value, what was expected and the fix (exit code 2), never with a traceback. Nothing here asks
a question: the command line says everything.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from algoperf import tuning

# Sub-command modules: each has register(subparsers); a missing one is skipped (optional parts).
COMMAND_MODULES = (
    "algoperf.experiment", "algoperf.datasets", "scoring.cli", "algoperf.check", "algoperf.doctor",
    "algoperf.docker", "algoperf.sweep",
)

EXIT_OK, EXIT_TRIAL_ERROR, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 3


class UsageError(Exception):
    """A problem with the user's input: printed as one paragraph, exit code 2."""


# ---- shared argument groups ------------------------------------------------------------------
def add_trial_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-w", "--workload", default="mnist1d", help="workload or variant name (default: mnist1d)")
    p.add_argument("-s", "--submission", default="adamw", help="a submission name or a path (default: adamw)")
    p.add_argument("--framework", choices=("pytorch", "jax"), help="default: from the submission file")
    p.add_argument("--tuning-search-space", help="search space JSON (default: the submission's own)")
    p.add_argument("--hparams", help="hyperparameters: a JSON file or inline JSON (overrides sampling)")
    p.add_argument("--ruleset", choices=("external", "self"), default="external")
    p.add_argument("--rules", choices=sorted(tuning.RULE_SETS), default="v0.6", help="rule-set version")
    p.add_argument("--seed", type=int, default=0, help="experiment seed; each trial folds in its place")
    p.add_argument("--data", choices=("real", "synthetic"), default="real")
    p.add_argument("--data-dir", help="where the dataset's files are (or are downloaded to)")
    p.add_argument("--max-steps", type=int, help="end the trial after this many steps (with a final eval)")
    p.add_argument("--max-runtime", type=float, help="runtime budget in seconds (default: the workload's)")
    p.add_argument("--stop-at", choices=("both", "validation", "never"), default="both",
                   help="stop when both targets / the validation target are reached, or never")
    p.add_argument("--checkpoint-every", type=int, metavar="STEPS", help="checkpoint every STEPS steps")
    p.add_argument("--eval-every", type=int, metavar="STEPS",
                   help="(ours) evaluate every STEPS steps instead of every eval period of wall time; "
                        "makes eval rows reproducible; not for scored runs")
    p.add_argument("--batch-size", type=int, help="override the submission's batch size (smoke tests)")
    p.add_argument("--experiment-dir", default="./experiments")
    p.add_argument("--name", help="experiment name (default: <submission>-<date-time>)")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    p.add_argument("--overwrite", action="store_true", help="delete an existing trial and start over")
    p.add_argument("--quiet", action="store_true", help="no progress line")


def register(sub: Any) -> None:
    run = sub.add_parser("run", help="run one trial of a submission on a workload")
    add_trial_arguments(run)
    run.add_argument("--devices", type=int, default=1,
                     help="data-parallel processes on this machine (torchrun; gloo on CPU, NCCL on GPUs)")
    run.add_argument("--study", type=int, default=0, help="study index (from 0)")
    run.add_argument("--trial", type=int, default=None,
                     help="trial index (from 1): picks the search-space point (default: the "
                          "submission's tuned point for the workload if it ships one, else 1)")
    run.set_defaults(func=cmd_run)

    wl = sub.add_parser("workloads", help="list the workloads and variants with their facts")
    wl.add_argument("--framework", choices=("pytorch", "jax"), default="pytorch")
    wl.add_argument("--count-params", action="store_true", help="build each model and count its parameters")
    wl.add_argument("--json", action="store_true", help="print a JSON list")
    wl.add_argument("names", nargs="*", help="only these workloads")
    wl.set_defaults(func=cmd_workloads)


# ---- resolving a trial from arguments --------------------------------------------------------
def parse_hparams(text: str) -> dict[str, Any]:
    inline = text.lstrip().startswith(("{", "["))
    path = Path(text)
    try:
        is_file = not inline and path.is_file()
    except OSError:  # e.g. a name longer than the file system allows: not a file
        is_file = False
    if not inline and not is_file:
        raise UsageError(f"--hparams {text!r} is neither inline JSON nor an existing file.")
    source = f"file {path}" if is_file else "--hparams"
    try:
        raw = path.read_text() if is_file else text
        value = json.loads(raw)
    except json.JSONDecodeError as e:
        raise UsageError(
            f"{source} is not valid JSON ({e.msg}, column {e.colno}). Give a JSON object such as "
            "'{\"learning_rate\": 0.001}' or the path of a JSON file."
        ) from None
    if not isinstance(value, dict):
        raise UsageError(f"{source} must hold a JSON object of hyperparameters, got {type(value).__name__}.")
    return value


def resolve_hyperparameters(
    args: argparse.Namespace, source: Any, workload: str, study: int, trial: int, use_tuned: bool = False
) -> dict[str, Any] | None:
    if args.ruleset == "self":
        return None
    space_path = args.tuning_search_space or source.search_space
    space = None
    if space_path is not None:
        try:
            space = tuning.load_search_space(space_path)
        except tuning.SearchSpaceError as e:
            raise UsageError(f"{e} See RULES.md (Tuning) for the two accepted forms.") from None
    if args.hparams:
        values = parse_hparams(args.hparams)
        if isinstance(space, dict):
            missing = sorted(set(space) - set(values))
            if missing:
                raise UsageError(
                    f"--hparams lacks {', '.join(missing)}, which the search space {space_path} defines. "
                    "Give every hyperparameter of the search space, or drop --hparams to sample them."
                )
        return values
    if use_tuned:
        tuned = tuned_hyperparameters(source, workload)
        if tuned is not None:
            return tuned
    if space is None:
        raise UsageError(
            f"Submission {source.path} has no tuning_search_space.json and no --hparams was given. "
            "Under external tuning a trial needs hyperparameters: pass --tuning-search-space FILE, "
            "--hparams JSON, or use --ruleset self."
        )
    try:
        return tuning.sample(space, trial, args.seed, workload, study)
    except tuning.SearchSpaceError as e:
        raise UsageError(f"{space_path}: {e}") from None


def tuned_hyperparameters(source: Any, workload: str) -> dict[str, Any] | None:
    """The point a submission ships as tuned for a workload (`tuned_hyperparameters.json`).

    `algoperf run` without --trial or --hparams uses it, so that a plain run shows what the
    submission does at its best; `algoperf tune` always samples the search space.
    """
    path = Path(source.path).parent / "tuned_hyperparameters.json"
    if not path.exists():
        return None
    try:
        table = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise UsageError(f"{path} is not valid JSON ({e.msg}, line {e.lineno}).") from None
    return table.get(workload)


def trial_dir_for(experiment_dir: str, name: str, study: int, workload: str, framework: str, trial: int) -> Path:
    return Path(experiment_dir) / name / f"study_{study}" / f"{workload}_{framework}" / f"trial_{trial}"


def prepare_trial_dir(path: Path, resume: bool, overwrite: bool) -> None:
    if path.exists() and any(path.iterdir()):
        if overwrite:
            shutil.rmtree(path)
        elif not resume:
            raise UsageError(
                f"{path} already holds a run. Pass --resume to continue it, --overwrite to delete it "
                "and start over, or --name to start a new experiment."
            )
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write_test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise UsageError(
            f"Cannot write to the experiment directory {path} ({e.strerror}). Choose a writable "
            "--experiment-dir."
        ) from None


def build_trial_config(
    args: argparse.Namespace, study: int, trial: int, name: str, use_tuned: bool = False
) -> Any:
    from algoperf import runner
    from algoperf import submission as submission_lib
    from workloads import registry

    try:
        info = registry.get(args.workload)
    except registry.UnknownWorkloadError as e:
        raise UsageError(str(e)) from None
    try:
        source = submission_lib.resolve(args.submission, args.framework)
        submission_lib.load(source)
    except submission_lib.SubmissionError as e:
        raise UsageError(str(e)) from None
    if source.framework not in info.implementations:
        raise UsageError(
            f"Workload {info.name!r} has no {source.framework} implementation "
            f"(it has: {', '.join(info.implementations) or 'none'})."
        )
    hparams = resolve_hyperparameters(args, source, info.name, study, trial, use_tuned)
    trial_dir = trial_dir_for(args.experiment_dir, name, study, info.name, source.framework, trial)
    flags = {k: v for k, v in vars(args).items() if k not in ("func", "argv")}
    return runner.TrialConfig(
        workload=info.name,
        submission=str(source.path),
        trial_dir=trial_dir,
        framework=source.framework,
        hyperparameters=hparams,
        seed=runner.trial_seed(args.seed, info.name, study, trial),
        data=args.data,
        data_dir=args.data_dir,
        max_steps=args.max_steps,
        max_runtime=args.max_runtime,
        stop_at=args.stop_at,
        checkpoint_every=args.checkpoint_every,
        eval_every=args.eval_every,
        resume=args.resume,
        batch_size=args.batch_size,
        ruleset=args.ruleset,
        rules=args.rules,
        study=study,
        trial=trial,
        flags=flags,
    )


# ---- display ---------------------------------------------------------------------------------
class ProgressLine:
    """A one-line live display on stderr (rewritten in place on a terminal, a line per eval otherwise)."""

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet
        self.tty = sys.stderr.isatty()
        self._last_step = 0
        self._last_time = time.perf_counter()
        self._rate = 0.0
        self._printed_eval = None

    def __call__(self, p: dict[str, Any]) -> None:
        if self.quiet:
            return
        now = time.perf_counter()
        if self._last_step == 0:
            # The first report follows set-up and the first eval: a rate would mean nothing yet.
            self._last_step, self._last_time = p["global_step"], now
        elif now > self._last_time and p["global_step"] > self._last_step:
            self._rate = (p["global_step"] - self._last_step) / (now - self._last_time)
            self._last_step, self._last_time = p["global_step"], now
        val = "-" if p["validation"] is None else f"{p['validation']:.4f}"
        line = (
            f"step {p['global_step']:>7}  {self._rate:7.1f} steps/s  "
            f"validation {p['metric']} {val} (target {p['target']:g})  "
            f"submission time {p['submission_time']:7.1f}s / {p['budget']:g}s"
        )
        if self.tty:
            sys.stderr.write("\r" + line + "\033[K")
            sys.stderr.flush()
        elif p["validation"] is not None and p["validation"] != self._printed_eval:
            self._printed_eval = p["validation"]
            print(line, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.tty and not self.quiet:
            sys.stderr.write("\n")


def _fmt_s(value: float | None) -> str:
    return "not reached" if value is None else f"{value:.2f} s"


def print_summary(result: Any) -> None:
    phases = result.phases
    wall = sum(phases.values())
    lines = [
        "",
        f"Trial finished: {result.status}   ({result.global_step} steps)",
        f"  time to validation target : {_fmt_s(result.time_to_target_s)}"
        f"   ({result.target_metric} target {result.validation_target:g})",
        f"  time to test target       : {_fmt_s(result.test_time_to_target_s)}",
    ]
    if result.last_eval:
        val = result.last_eval.get(f"validation/{result.target_metric}")
        test = result.last_eval.get(f"test/{result.target_metric}")
        lines.append(f"  last eval                 : validation {val:.4f}, test {test:.4f}"
                     if val is not None and test is not None else "")
    lines.append(f"  budget                    : {result.budget_s:g} s of submission time")
    lines.append(f"  wall time {wall:.2f} s =" + " + ".join(
        f" {name} {phases[name]:.2f}" for name in phases if phases[name] > 0.0005))
    lines.append(f"    (first step, in submission: {result.first_step_s:.3f} s"
                 + (f"; lost to preemptions: {result.lost_s:.2f} s)" if result.lost_s else ")"))
    if result.error:
        lines.append(f"  error: {result.error}")
    lines.append(f"  logs: {result.trial_dir}")
    exp = Path(result.trial_dir).parents[2]
    lines.append(f"  report: algoperf report {exp} --out {exp}/report")
    print("\n".join(line for line in lines if line))


def exit_code(status: str) -> int:
    return {"error": EXIT_TRIAL_ERROR, "interrupted": EXIT_INTERRUPTED}.get(status, EXIT_OK)


# ---- commands --------------------------------------------------------------------------------
READY_ENV = "ALGOPERF_TRIAL_DIR_READY"


def default_name(submission: str) -> str:
    path = Path(submission)
    stem = path.stem if path.suffix == ".py" else path.name
    return f"{stem}-{time.strftime('%Y-%m-%d-%H-%M-%S')}"


def cmd_run(args: argparse.Namespace) -> int:
    from algoperf import runner

    name = args.name or default_name(args.submission)
    config = build_trial_config(args, args.study, args.trial or 1, name, use_tuned=args.trial is None)
    if os.environ.get(READY_ENV) != "1":
        prepare_trial_dir(config.trial_dir, args.resume, args.overwrite)
    if args.devices > 1 and "LOCAL_RANK" not in os.environ:
        return launch_data_parallel(args, name)
    rank_zero = os.environ.get("RANK", "0") == "0"
    progress = ProgressLine(args.quiet or not rank_zero)
    if rank_zero:
        print(f"algoperf run: {config.workload} x {Path(args.submission).name} ({config.framework}, "
              f"{args.ruleset} tuning, data {args.data}) -> {config.trial_dir}", file=sys.stderr)
    result = runner.train_once(config, progress)
    progress.close()
    if rank_zero:
        print_summary(result)
    return exit_code(result.status)


def launch_data_parallel(args: argparse.Namespace, name: str) -> int:
    """Re-runs this command under torchrun with one process per device (127.0.0.1 rendezvous)."""
    import socket
    import subprocess

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    argv = [a for a in args.argv if a not in ("--overwrite",)]
    if "--devices" in argv:
        i = argv.index("--devices")
        del argv[i : i + 2]
    argv = [a for a in argv if not a.startswith("--devices=")]
    if args.name is None:
        argv += ["--name", name]
    command = [
        sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={args.devices}",
        "--master_addr=127.0.0.1", f"--master_port={port}", "-m", "algoperf.cli", *argv,
    ]
    env = {**os.environ, READY_ENV: "1"}
    return subprocess.run(command, env=env).returncode


def cmd_workloads(args: argparse.Namespace) -> int:
    from workloads import registry

    infos = registry.all_workloads()
    names = args.names or sorted(infos)
    for n in names:
        if n not in infos:
            registry.get(n)  # raises with a suggestion
    rows = []
    for n in names:
        facts = infos[n].facts()
        if args.count_params:
            facts["n_params"] = count_params(n, args.framework)
        rows.append(facts)
    if args.json:
        print(json.dumps(rows, indent=2))
        return EXIT_OK
    from rich.console import Console
    from rich.table import Table

    table = Table(title="algoperf workloads")
    for col in ("name", "base", "metric", "val target", "test target", "budget s", "step_hint",
                "eval period s", "eval bs", "ref params" + (f" / {args.framework}" if args.count_params else "")):
        table.add_column(col)
    for r in rows:
        ref = r["n_params"] if not args.count_params else None
        ref_text = f"{r['n_params'].get(args.framework, '-'):,}" if isinstance(r["n_params"], dict) and r["n_params"].get(args.framework) else "-"
        if args.count_params:
            info = infos[r["name"]]
            want = info.n_params.get(args.framework)
            got = r["n_params"]
            mark = "" if want is None else (" ok" if got == want else f" (ref {want:,})")
            ref_text = f"{got:,}{mark}"
        del ref
        arrow = "↑" if r["higher_is_better"] else "↓"
        table.add_row(r["name"], r["base"] or "", f"{r['target_metric_name']} {arrow}",
                      f"{r['validation_target']:g}", f"{r['test_target']:g}",
                      f"{r['max_allowed_runtime_sec']:,g}", f"{r['step_hint']:,}",
                      f"{r['eval_period_time_sec']:g}", f"{r['eval_batch_size']:,}", ref_text)
    Console(width=None if sys.stdout.isatty() else 140).print(table)
    return EXIT_OK


def count_params(name: str, framework: str) -> int | None:
    """Builds a workload's model on the CPU and counts its unique trainable parameters."""
    from workloads import registry

    info = registry.get(name)
    if framework not in info.implementations:
        return None
    from algoperf.random_utils import prng_key

    workload = registry.load(name, framework, data="synthetic")
    model, _ = workload.init_model_fn(prng_key(0))
    if framework == "pytorch":
        return sum(p.numel() for p in model.parameters())
    import numpy as np

    return int(sum(np.size(x) for x in _leaves(model)))


def _leaves(tree: Any) -> list[Any]:
    if isinstance(tree, dict):
        return [leaf for v in tree.values() for leaf in _leaves(v)]
    return [tree]


# ---- entry point -----------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="algoperf",
        description="Benchmark neural-network training algorithms by time-to-target (AlgoPerf rules).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    register(sub)
    for module_name in COMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            if e.name and module_name.startswith(e.name):
                continue
            raise
        if hasattr(module, "register"):
            module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(argv) if argv is not None else sys.argv[1:]
    args = parser.parse_args(argv)
    if args.command is None:
        argv = ["run", *argv]
        args = parser.parse_args(argv)
    args.argv = argv
    from absl import logging as absl_logging

    absl_logging.set_verbosity(absl_logging.WARNING)
    try:
        return int(args.func(args))
    except UsageError as e:
        print(f"algoperf {args.command}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"algoperf {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as e:  # a known kind of failure with a message meant for the user
        from algoperf.datasets import DatasetUnavailableError
        from workloads.registry import UnknownWorkloadError

        if isinstance(e, (DatasetUnavailableError, UnknownWorkloadError)):
            print(f"algoperf {args.command}: error: {e}", file=sys.stderr)
            return EXIT_USAGE
        raise


if __name__ == "__main__":
    sys.exit(main())
