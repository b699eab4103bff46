"""The `algoperf` command: run, tune, status, workloads (and score, report, datasets, check,
doctor, docker, sweep from their own modules).

This module only parses flags and prints: the flags become a typed `RunRequest`
(algoperf.trial_config), the work is done by library code. Every sub-command validates its input
first and fails with one paragraph naming the file or value, what was expected and the fix (exit
code 2), never with a traceback. Nothing here asks a question: the command line says everything.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import os
import socket
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from algoperf import rulesets
from algoperf.trial_config import ConfigError, RunRequest

# Sub-command modules: each has register(subparsers); a missing one is skipped (optional parts).
COMMAND_MODULES = (
    "algoperf.datasets", "scoring.cli", "algoperf.check", "algoperf.doctor",
    "algoperf.docker", "algoperf.sweep",
)

EXIT_OK, EXIT_TRIAL_ERROR, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 3
UsageError = ConfigError  # the name other command modules raise
READY_ENV = "ALGOPERF_TRIAL_DIR_READY"


# ---- flags -----------------------------------------------------------------------------------
def add_trial_arguments(p: argparse.ArgumentParser) -> None:
    """The flags that define a trial, shared by `run` and `tune`."""
    p.add_argument("-w", "--workload", default="mnist1d", help="workload or variant name (default: mnist1d)")
    p.add_argument("-s", "--submission", default="adamw", help="a submission name or a path (default: adamw)")
    p.add_argument("--framework", choices=("pytorch", "jax"), help="default: from the submission file")
    p.add_argument("--tuning-search-space", help="search space JSON (default: the submission's own)")
    p.add_argument("--hparams", help="hyperparameters: a JSON file or inline JSON (overrides sampling)")
    p.add_argument("--ruleset", choices=rulesets.TUNING_RULESETS, default="external")
    p.add_argument("--rules", choices=sorted(rulesets.PRESETS), default=rulesets.DEFAULT,
                   help="rule-set version")
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
    p.add_argument("--threads", type=int,
                   help="intra-op threads per process (default: the cores this process may use)")
    p.add_argument("--experiment-dir", default="./experiments")
    p.add_argument("--name", help="experiment name (default: <submission>-<date-time>)")
    p.add_argument("--quiet", action="store_true", help="no progress line")
    scale = p.add_argument_group("data parallelism (one node or several)")
    scale.add_argument("--devices", type=int, default=1,
                       help="devices per node: PyTorch processes (torchrun; gloo on CPU, NCCL on "
                            "GPUs), or JAX devices of one process (CPU: XLA host devices)")
    scale.add_argument("--nnodes", type=int, default=1, help="number of nodes")
    scale.add_argument("--node-rank", type=int, default=0, help="this node's rank (from 0)")
    scale.add_argument("--master-addr", default="127.0.0.1", help="address of node 0")
    scale.add_argument("--master-port", type=int, help="port on node 0 (default: a free port, one node only)")
    scale.add_argument("--rdzv-endpoint", help="host:port of a c10d rendezvous (instead of master addr/port)")


def register(sub: Any) -> None:
    run = sub.add_parser("run", help="run one trial of a submission on a workload")
    add_trial_arguments(run)
    run.add_argument("--study", type=int, default=0, help="study index (from 0)")
    run.add_argument("--trial", type=int, default=None,
                     help="trial index (from 1): picks the search-space point (default: the "
                          "submission's tuned point for the workload if it ships one, else 1)")
    run.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    run.add_argument("--overwrite", action="store_true", help="delete an existing trial and start over")
    run.set_defaults(func=cmd_run)

    tune = sub.add_parser("tune", help="run the studies x trials of one workload under a ruleset "
                                       "(finished trials skipped, interrupted ones resumed)")
    add_trial_arguments(tune)
    tune.add_argument("--studies", type=int, help="number of studies (default: from --rules)")
    tune.add_argument("--trials", type=int, help="trials per study (default: from --rules; 1 for self)")
    tune.add_argument("--study", type=int, help="run only this study (from 0)")
    tune.add_argument("--trial", type=int, help="run only this trial (from 1)")
    tune.set_defaults(func=cmd_tune)

    status = sub.add_parser("status", help="show the state of every trial of an experiment")
    status.add_argument("experiment", help="an experiment directory (experiments/<name>)")
    status.set_defaults(func=cmd_status)

    wl = sub.add_parser("workloads", help="list the workloads and variants with their facts")
    wl.add_argument("--framework", choices=("pytorch", "jax"), default="pytorch")
    wl.add_argument("--count-params", action="store_true", help="build each model and count its parameters")
    wl.add_argument("--json", action="store_true", help="print a JSON list")
    wl.add_argument("names", nargs="*", help="only these workloads")
    wl.set_defaults(func=cmd_workloads)


def _positive(args: argparse.Namespace, *names: str) -> None:
    for name in names:
        value = getattr(args, name, None)
        if value is not None and value <= 0:
            raise ConfigError(f"--{name.replace('_', '-')} must be positive, got {value}.")


# ---- run -------------------------------------------------------------------------------------
def cmd_run(args: argparse.Namespace) -> int:
    from algoperf import display, experiment, runner, trial_config

    request = RunRequest.from_mapping(args)
    _positive(args, "devices", "nnodes")
    name = args.name or trial_config.default_name(args.submission)
    config = trial_config.build(request, args.study, args.trial or 1, name, use_tuned=args.trial is None)
    launched_here = os.environ.get(READY_ENV) != "1"
    created = trial_config.prepare_trial_dir(config.trial_dir, args.resume, args.overwrite) \
        if launched_here and args.node_rank == 0 else False
    rank_zero = os.environ.get("RANK", "0") == "0"
    try:
        # The process that prepared the folder holds the trial's lock while the trial runs
        # (in it, or in the processes it launches).
        with experiment.holding(config.trial_dir) if created is not False and launched_here \
                and args.node_rank == 0 else _nothing() as mine:
            if mine is False:
                raise ConfigError(f"{config.trial_dir} is being run by another process (its lock "
                                  f"{experiment.LOCK_FILE} is live). Wait for it, or use another --name.")
            if _needs_launcher(args, config.framework):
                return launch_processes(args, request, name, args.study, args.trial)
            if config.framework == "jax":
                _set_jax_devices(args.devices)
                config.distributed = _jax_processes(args)
                rank_zero = args.node_rank == 0
            progress = display.ProgressLine(args.quiet or not rank_zero)
            if rank_zero:
                print(f"algoperf run: {config.workload} x {Path(args.submission).name} "
                      f"({config.framework}, {args.ruleset} tuning, data {args.data}) -> "
                      f"{config.trial_dir}", file=sys.stderr)
            result = runner.train_once(config, progress)
            progress.close()
    finally:
        trial_config.remove_if_unused(config.trial_dir, created)
    if rank_zero:
        display.print_summary(result)
    return exit_code(result.status)


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: Any) -> None:
        return None


def _needs_launcher(args: argparse.Namespace, framework: str | None) -> bool:
    """Whether this command must start torchrun (PyTorch: one process per device, several nodes)."""
    if "LOCAL_RANK" in os.environ:
        return False
    return framework == "pytorch" and (args.devices > 1 or args.nnodes > 1)


def _jax_processes(args: argparse.Namespace) -> Any:
    """JAX on several nodes: one process per node, joined through jax.distributed."""
    from algoperf.backends import Distributed

    if args.nnodes <= 1:
        return None
    if args.master_port is None and not args.rdzv_endpoint:
        raise ConfigError("--nnodes > 1 needs --master-port (the same on every node) or --rdzv-endpoint.")
    coordinator = args.rdzv_endpoint or f"{args.master_addr}:{args.master_port}"
    return Distributed(num_processes=args.nnodes, process_id=args.node_rank, coordinator=coordinator)


def _set_jax_devices(devices: int) -> None:
    """On the CPU, `--devices N` makes XLA show N host devices (set before jax starts)."""
    if devices > 1 and "jax" not in sys.modules and "xla_force_host_platform_device_count" not in \
            os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                                   f" --xla_force_host_platform_device_count={devices}").strip()


def request_argv(request: RunRequest, name: str, study: int, trial: int | None) -> list[str]:
    """`algoperf run` flags that reproduce `request` for one trial (for launched processes)."""
    argv = ["run", "--name", name, "--study", str(study), "--quiet"]
    if trial is not None:
        argv += ["--trial", str(trial)]
    defaults = RunRequest()
    for field in dataclasses.fields(RunRequest):
        value = getattr(request, field.name)
        if field.name in ("name", "overwrite") or value == getattr(defaults, field.name) or value is None:
            continue
        flag = "--" + field.name.replace("_", "-")
        argv += [flag] if isinstance(value, bool) else [flag, str(value)]
    return argv


def launch_processes(args: argparse.Namespace, request: RunRequest, name: str, study: int,
                     trial: int | None) -> int:
    """Re-runs one trial under torchrun: `--devices` processes on this node, `--nnodes` nodes."""
    port = args.master_port
    if port is None:
        if args.nnodes > 1 and not args.rdzv_endpoint:
            raise ConfigError("--nnodes > 1 needs --master-port (the same on every node) or --rdzv-endpoint.")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
    command = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={args.devices}",
               f"--nnodes={args.nnodes}"]
    if args.rdzv_endpoint:
        command += ["--rdzv_backend=c10d", f"--rdzv_endpoint={args.rdzv_endpoint}"]
    else:
        command += [f"--node_rank={args.node_rank}", f"--master_addr={args.master_addr}",
                    f"--master_port={port}"]
    command += ["-m", "algoperf.cli", *request_argv(request, name, study, trial)]
    env = {**os.environ, READY_ENV: "1"}
    return subprocess.run(command, env=env).returncode


# ---- tune and status -------------------------------------------------------------------------
def cmd_tune(args: argparse.Namespace) -> int:
    from algoperf import display, experiment, runner, submission, trial_config

    request = RunRequest.from_mapping(args)
    _positive(args, "studies", "trials", "devices", "nnodes")
    try:
        source = submission.resolve(args.submission, args.framework)
    except submission.SubmissionError as e:
        raise ConfigError(str(e)) from None
    name = args.name or (source.name if args.ruleset == "external" else f"{source.name}_self")
    root = Path(args.experiment_dir) / name
    plan = experiment.plan_of(request, args.studies, args.trials)
    studies = [args.study] if args.study is not None else list(range(plan["studies"]))
    trials = [args.trial] if args.trial is not None else list(range(1, plan["trials"] + 1))
    trial_config.build(request, studies[0], trials[0], name)  # every input checked before training
    experiment.record_plan(root, plan)

    def run_trial(config: Any) -> Any:
        if _needs_launcher(args, config.framework):
            trial_request = dataclasses.replace(request, resume=config.resume)
            code = launch_processes(args, trial_request, name, config.study, config.trial)
            return _result_from_folder(config, code)
        if config.framework == "jax":
            _set_jax_devices(args.devices)
            config.distributed = _jax_processes(args)
        progress = display.ProgressLine(args.quiet)
        result = runner.train_once(config, progress)
        progress.close()
        return result

    counts = experiment.tune(request, name, studies, trials, run_trial,
                             lambda line: print(line, file=sys.stderr))
    print(f"tune {name}: " + ", ".join(f"{n} {k}" for k, n in sorted(counts.items())))
    print(f"  status: algoperf status {root}")
    if counts.get("interrupted"):
        return EXIT_INTERRUPTED
    return EXIT_TRIAL_ERROR if counts.get("error") else EXIT_OK


def _result_from_folder(config: Any, returncode: int) -> Any:
    """The result of a trial run in other processes, read from its summary.json."""
    from algoperf import logs

    summary_path = config.trial_dir / logs.SUMMARY_FILE
    summary = logs.read_json(summary_path) if summary_path.exists() else {}
    return argparse.Namespace(
        status=summary.get("status", "error" if returncode else "interrupted"),
        global_step=summary.get("global_step", 0),
        time_to_target_s=summary.get("time_to_target_s"),
    )


def cmd_status(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from algoperf import experiment

    root = Path(args.experiment)
    if not root.is_dir():
        raise ConfigError(f"{root} is not a directory. Give an experiment directory, e.g. experiments/adamw.")
    rows = experiment.status_rows(root)
    if not rows:
        raise ConfigError(f"{root} holds no trials (no study_<k>/<workload>_<framework>/trial_<i>/ folders).")
    table = Table(title=f"experiment {root}")
    for col in rows[0]:
        table.add_column(col)
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["state"]] = counts.get(row["state"], 0) + 1
        table.add_row(*row.values())
    Console(width=None if sys.stdout.isatty() else 140).print(table)
    print(", ".join(f"{n} {k}" for k, n in sorted(counts.items())))
    return 0


def exit_code(status: str) -> int:
    return {"error": EXIT_TRIAL_ERROR, "interrupted": EXIT_INTERRUPTED}.get(status, EXIT_OK)


# ---- workloads -------------------------------------------------------------------------------
def cmd_workloads(args: argparse.Namespace) -> int:
    from workloads import registry

    infos = registry.all_workloads()
    names = args.names or sorted(infos)
    for n in names:
        if n not in infos:
            registry.get(n)  # raises with a suggestion
    if args.count_params:
        from algoperf import backends

        if not backends.available(args.framework):
            raise ConfigError(
                f"--count-params --framework {args.framework} builds the models, but "
                f"{args.framework} is not installed here. Install it with "
                f"`pip install -e '.[{args.framework}]'` (`make install` installs both)."
            )
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
        if args.count_params:
            want, got = infos[r["name"]].n_params.get(args.framework), r["n_params"]
            mark = "" if want is None or got is None else (" ok" if got == want else f" (ref {want:,})")
            ref_text = "-" if got is None else f"{got:,}{mark}"
        else:
            ref = r["n_params"].get(args.framework) if isinstance(r["n_params"], dict) else None
            ref_text = f"{ref:,}" if ref else "-"
        arrow = "↑" if r["higher_is_better"] else "↓"
        table.add_row(r["name"], r["base"] or "", f"{r['target_metric_name']} {arrow}",
                      f"{r['validation_target']:g}", f"{r['test_target']:g}",
                      f"{r['max_allowed_runtime_sec']:,g}", f"{r['step_hint']:,}",
                      f"{r['eval_period_time_sec']:g}", f"{r['eval_batch_size']:,}", ref_text)
    Console(width=None if sys.stdout.isatty() else 140).print(table)
    return EXIT_OK


def count_params(name: str, framework: str) -> int | None:
    """Builds a workload's model on the CPU and counts its unique trainable parameters."""
    from algoperf import backends
    from algoperf.random_utils import prng_key
    from workloads import registry

    info = registry.get(name)
    if framework not in info.implementations:
        return None
    workload = registry.load(name, framework, data="synthetic")
    counter = getattr(workload, "count_params", None)
    if counter is not None:  # e.g. a model too large to build here, counted from its shapes
        return int(counter())
    model, _ = workload.init_model_fn(prng_key(0))
    return int(backends.get(framework).count_params(model))


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
    except ConfigError as e:
        print(f"algoperf {args.command}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"algoperf {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as e:  # a known kind of failure with a message meant for the user
        from algoperf.backends import FrameworkUnavailableError
        from algoperf.datasets import DatasetUnavailableError
        from algoperf.submission import SubmissionError
        from workloads.registry import UnknownWorkloadError

        if isinstance(e, (DatasetUnavailableError, UnknownWorkloadError, SubmissionError,
                          FrameworkUnavailableError, FileNotFoundError)):
            print(f"algoperf {args.command}: error: {e}", file=sys.stderr)
            return EXIT_USAGE
        raise


if __name__ == "__main__":
    # Under `python -m algoperf.cli` this file runs as __main__; the other command modules raise
    # algoperf.cli's ConfigError, so the entry point is taken from the imported module.
    from algoperf.cli import main as imported_main

    sys.exit(imported_main())
