"""From what a user asks for (`RunRequest`) to one trial's typed `TrialConfig`: the workload and
submission resolved, the hyperparameters sampled or read, the trial folder named and prepared.

Library code takes these dataclasses, never an `argparse.Namespace`; `cli.py` fills a
`RunRequest` from its flags and prints. Every problem with the request raises `ConfigError`,
one paragraph naming the file or value, what was expected and the fix.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from algoperf import submission as submission_lib
from algoperf import tuning
from algoperf.backends import Distributed

STOP_AT = ("both", "validation", "never")


class ConfigError(Exception):
    """A problem with the user's input: printed as one paragraph, exit code 2."""


@dataclass
class RunRequest:
    """One `algoperf run` / `algoperf tune` request, as the user gave it."""

    workload: str = "mnist1d"
    submission: str = "adamw"
    framework: str | None = None
    tuning_search_space: str | None = None
    hparams: str | None = None  # inline JSON or a JSON file
    ruleset: str = "external"
    rules: str = "v0.6"
    seed: int = 0
    data: str = "real"
    data_dir: str | None = None
    max_steps: int | None = None
    max_runtime: float | None = None
    stop_at: str = "both"
    checkpoint_every: int | None = None
    eval_every: int | None = None
    batch_size: int | None = None
    threads: int | None = None
    experiment_dir: str = "./experiments"
    name: str | None = None
    resume: bool = False
    overwrite: bool = False

    @classmethod
    def from_mapping(cls, values: Any) -> RunRequest:
        """The request from any object or dict carrying (some of) these names (e.g. CLI flags)."""
        get = values.get if isinstance(values, dict) else (lambda k, d=None: getattr(values, k, d))
        defaults = cls()
        return cls(**{f.name: get(f.name, getattr(defaults, f.name)) for f in dataclasses.fields(cls)})

    def validate(self) -> None:
        for name in ("max_steps", "max_runtime", "checkpoint_every", "eval_every", "batch_size", "threads"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                flag = "--" + name.replace("_", "-")
                raise ConfigError(f"{flag} must be positive, got {value}. Leave it out for the default.")
        if self.stop_at not in STOP_AT:
            raise ConfigError(f"--stop-at must be one of {', '.join(STOP_AT)}, got {self.stop_at!r}.")


@dataclass
class TrialConfig:
    """Everything that defines one trial; flows in from the CLI or from `algoperf tune`."""

    workload: str
    submission: str
    trial_dir: Path
    framework: str | None = None
    hyperparameters: dict[str, Any] | None = None
    search_space: str | None = None  # where the hyperparameters came from (for error messages)
    seed: int = 0
    data: str = "real"
    data_dir: str | None = None
    max_steps: int | None = None
    max_runtime: float | None = None  # overrides the workload budget (x the ruleset's multiplier)
    stop_at: str = "both"
    checkpoint_every: int | None = None
    eval_every: int | None = None  # (ours) a step-based eval schedule, for reproducible rows
    resume: bool = False
    batch_size: int | None = None
    threads: int | None = None  # intra-op threads (default: the cores this process may use)
    ruleset: str = "external"
    rules: str = "v0.6"
    study: int = 0
    trial: int = 1
    flags: dict[str, Any] = field(default_factory=dict)
    record_step_times: bool = False  # keep each step's submission time (benchmarks)
    distributed: Distributed | None = None  # JAX processes on several nodes (torch: torchrun's env)


def trial_seed(seed: int, workload: str, study: int, trial: int) -> int:
    """(ours) The seed of one trial, folded from the experiment seed and its place in the plan."""
    from algoperf.random_utils import derive_seed

    return derive_seed(seed, "trial", workload, study, trial)


def parse_hparams(text: str) -> dict[str, Any]:
    inline = text.lstrip().startswith(("{", "["))
    path = Path(text)
    try:
        is_file = not inline and path.is_file()
    except OSError:  # e.g. a name longer than the file system allows: not a file
        is_file = False
    if not inline and not is_file:
        raise ConfigError(f"--hparams {text!r} is neither inline JSON nor an existing file.")
    source = f"file {path}" if is_file else "--hparams"
    try:
        value = json.loads(path.read_text() if is_file else text)
    except json.JSONDecodeError as e:
        raise ConfigError(
            f"{source} is not valid JSON ({e.msg}, column {e.colno}). Give a JSON object such as "
            "'{\"learning_rate\": 0.001}' or the path of a JSON file."
        ) from None
    if not isinstance(value, dict):
        raise ConfigError(f"{source} must hold a JSON object of hyperparameters, got {type(value).__name__}.")
    return value


def tuned_hyperparameters(source: submission_lib.SubmissionSource, workload: str) -> dict[str, Any] | None:
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
        raise ConfigError(f"{path} is not valid JSON ({e.msg}, line {e.lineno}).") from None
    return table.get(workload)


def resolve_hyperparameters(
    request: RunRequest, source: submission_lib.SubmissionSource, workload: str, study: int,
    trial: int, use_tuned: bool = False,
) -> tuple[dict[str, Any] | None, str | None]:
    """(hyperparameters, where they came from); (None, None) under self-tuning."""
    if request.ruleset == "self":
        return None, None
    space_path = request.tuning_search_space or (str(source.search_space) if source.search_space else None)
    space = None
    if space_path is not None:
        try:
            space = tuning.load_search_space(space_path)
        except tuning.SearchSpaceError as e:
            raise ConfigError(f"{e} See RULES.md (Tuning) for the two accepted forms.") from None
    if request.hparams:
        values = parse_hparams(request.hparams)
        if isinstance(space, dict):
            missing = sorted(set(space) - set(values))
            if missing:
                raise ConfigError(
                    f"--hparams lacks {', '.join(missing)}, which the search space {space_path} "
                    "defines. Give every hyperparameter of the search space, or drop --hparams to "
                    "sample them."
                )
        return values, "--hparams"
    if use_tuned:
        tuned = tuned_hyperparameters(source, workload)
        if tuned is not None:
            return tuned, str(Path(source.path).parent / "tuned_hyperparameters.json")
    if space is None:
        raise ConfigError(
            f"Submission {source.path} has no tuning_search_space.json and no --hparams was given. "
            "Under external tuning a trial needs hyperparameters: pass --tuning-search-space FILE, "
            "--hparams JSON, or use --ruleset self."
        )
    try:
        return tuning.sample(space, trial, request.seed, workload, study), space_path
    except tuning.SearchSpaceError as e:
        raise ConfigError(f"{space_path}: {e}") from None


def trial_dir_for(experiment_dir: str, name: str, study: int, workload: str, framework: str, trial: int) -> Path:
    return Path(experiment_dir) / name / f"study_{study}" / f"{workload}_{framework}" / f"trial_{trial}"


def default_name(submission: str) -> str:
    path = Path(submission)
    stem = path.stem if path.suffix == ".py" else path.name
    return f"{stem}-{time.strftime('%Y-%m-%d-%H-%M-%S')}"


def build(request: RunRequest, study: int, trial: int, name: str, use_tuned: bool = False) -> TrialConfig:
    """The config of trial `trial` of study `study`, with every input checked first."""
    from workloads import registry

    request.validate()
    try:
        info = registry.get(request.workload)
    except registry.UnknownWorkloadError as e:
        raise ConfigError(str(e)) from None
    try:
        source = submission_lib.resolve(request.submission, request.framework)
        submission_lib.check_file(source)
    except submission_lib.SubmissionError as e:
        raise ConfigError(str(e)) from None
    if source.framework not in info.implementations:
        raise ConfigError(
            f"Workload {info.name!r} has no {source.framework} implementation "
            f"(it has: {', '.join(info.implementations) or 'none'})."
        )
    hparams, where = resolve_hyperparameters(request, source, info.name, study, trial, use_tuned)
    flags = {k: v for k, v in dataclasses.asdict(request).items()}
    return TrialConfig(
        workload=info.name,
        submission=str(source.path),
        trial_dir=trial_dir_for(request.experiment_dir, name, study, info.name, source.framework, trial),
        framework=source.framework,
        hyperparameters=hparams,
        search_space=where,
        seed=trial_seed(request.seed, info.name, study, trial),
        data=request.data,
        data_dir=request.data_dir,
        max_steps=request.max_steps,
        max_runtime=request.max_runtime,
        stop_at=request.stop_at,
        checkpoint_every=request.checkpoint_every,
        eval_every=request.eval_every,
        resume=request.resume,
        batch_size=request.batch_size,
        threads=request.threads,
        ruleset=request.ruleset,
        rules=request.rules,
        study=study,
        trial=trial,
        flags=flags,
    )


def prepare_trial_dir(path: Path, resume: bool, overwrite: bool) -> bool:
    """Makes the trial folder writable and empty (unless resuming); True if it was created now."""
    existed = path.exists()
    if existed and any(path.iterdir()):
        if overwrite:
            shutil.rmtree(path)
            existed = False
        elif not resume:
            raise ConfigError(
                f"{path} already holds a run. Pass --resume to continue it, --overwrite to delete it "
                "and start over, or --name to start a new experiment."
            )
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write_test.{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise ConfigError(
            f"Cannot write to the experiment directory {path} ({e.strerror}). Choose a writable "
            "--experiment-dir."
        ) from None
    return not existed


def remove_if_unused(path: Path, created: bool) -> None:
    """Removes a trial folder made by this invocation that no trial got to use, and parents it
    made that are now empty, so a failed set-up never blocks the next run."""
    if not created or not path.exists():
        return
    from algoperf import logs

    if (path / logs.EVAL_FILE).exists() or (path / logs.SUMMARY_FILE).exists():
        return
    shutil.rmtree(path, ignore_errors=True)
    for parent in list(path.parents)[:3]:  # <workload>_<fw>/, study_<k>/, <name>/
        try:
            parent.rmdir()
        except OSError:
            break
