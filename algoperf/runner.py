"""One trial: untimed set-up, the timed training loop, untimed evals, stop conditions.

`Trial.setup` builds everything off the clock; `Trial.run` loops over `_step` (timed), decides
what follows each step, and ends in `finish`. `evaluate` (untimed, but `prepare_for_eval` is on
the clock) and `checkpoint` (untimed) are charged to their own phases, so the phases add up to
the wall time (RULES.md, The clock). The state kept in checkpoints is in `trial_checkpoint`, the
eval bookkeeping in `evaluation`; the framework is reached only through `self.backend`.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import sys
import time
import traceback
import types
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from algoperf import logs, metadata, spec, tuning
from algoperf import submission as submission_lib
from algoperf import trial_checkpoint as saved
from algoperf.clock import RunClock
from algoperf.evaluation import EvalHistory, Targets, eval_row, finite_metrics
from algoperf.random_utils import prng_key, split, step_keys, to_seed
from algoperf.trial_config import STOP_AT, ConfigError, TrialConfig, trial_seed
from workloads import registry

STATUSES = ("reached", "budget", "max_steps", "diverged", "error", "completed", "interrupted")
ERROR_LOG = "error.log"


@dataclass
class TrialResult:
    status: str
    trial_dir: Path
    global_step: int
    time_to_target_s: float | None
    test_time_to_target_s: float | None
    phases: dict[str, float]
    first_step_s: float
    lost_s: float
    budget_s: float
    last_eval: dict[str, float]
    target_metric: str
    validation_target: float
    error: str | None = None
    error_location: str | None = None  # file:line in the submission, when the error came from it
    preemption_count: int = 0

    def summary(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["trial_dir"] = str(self.trial_dir)
        out["wall_time_s"] = sum(self.phases.values())
        return out


Progress = Callable[[dict[str, Any]], None]
# Failures of set-up that are the user's input to fix (printed as one line, exit code 2), as
# opposed to failures of the submission's or a model's code (the trial ends as `error`).
USAGE_ERRORS: tuple[type[BaseException], ...] = (ConfigError, submission_lib.SubmissionError,
                                                  registry.UnknownWorkloadError)


class _Interrupted(Exception):
    pass


def default_threads() -> int:
    """The cores this process may use, shared among the data-parallel processes of this node."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return max(1, cores // max(1, local))


class Trial:
    def __init__(self, config: TrialConfig, progress: Progress | None = None) -> None:
        if config.stop_at not in STOP_AT:
            raise ValueError(f"stop_at must be one of {STOP_AT}, got {config.stop_at!r}")
        self.config = config
        self.progress = progress
        self.info = registry.get(config.workload)
        self.source = submission_lib.resolve(config.submission, config.framework)
        self.framework = self.source.framework
        self.status: str | None = None
        self.error: str | None = None
        self.error_location: str | None = None
        self.global_step = 0
        self.preemption_count = 0
        self.history = EvalHistory()
        self.targets = Targets()
        self.budget = 0.0
        self.step_times: list[float] | None = None
        self._stop_signal: int | None = None
        self._last_progress = 0.0
        # The clock starts with the trial, so set-up is on it; the device sync is set in setup().
        self.clock = RunClock()

    @property
    def eval_results(self) -> list[tuple[int, dict[str, float]]]:
        return self.history.results

    @property
    def unwrapped_model(self) -> Any:
        unwrap = getattr(self.backend, "unwrap", None)
        return unwrap(self.model) if unwrap else self.model

    # ---- set-up (untimed) --------------------------------------------------------------------
    def setup(self) -> None:
        from algoperf import backends

        cfg = self.config
        self.backend = backends.get(self.framework)
        self.backend.init_distributed(cfg.distributed)
        self.threads = self.backend.set_threads(cfg.threads or default_threads())
        self.clock.set_sync(self.backend.sync)
        # Under data parallelism every rank runs the trial; only rank 0 writes its files.
        self.log = logs.TrialLog(cfg.trial_dir, enabled=self.backend.is_rank_zero())
        if cfg.resume:
            self.preemption_count = self._previous_preemptions() + 1
        self.module = submission_lib.load(self.source)
        self.backend.seed_everything(cfg.seed)
        options = {"batch_layout": "pmap"} if self.framework == "jax" and cfg.rules == "v0.5" else {}
        self.workload = registry.load(cfg.workload, self.framework, data=cfg.data,
                                      data_dir=cfg.data_dir, **options)
        self.workload.metrics_logger = self.metrics_logger = logs.MetricsLogger(self.log)
        self.hyperparameters = (
            tuning.as_hyperparameters(cfg.hyperparameters, cfg.search_space)
            if cfg.hyperparameters is not None else None
        )
        self.batch_size = cfg.batch_size or submission_lib.batch_size(self.module, self.info, self._notice)
        budget = cfg.max_runtime if cfg.max_runtime is not None else self.info.max_allowed_runtime_sec
        self.budget = budget * tuning.budget_multiplier(cfg.ruleset, cfg.rules)
        self._build_state()
        if cfg.resume:
            self._restore()
        self._write_run_files()
        self.log.event(
            "trial_start", global_step=self.global_step, preemption_count=self.preemption_count,
            workload=self.info.name, submission=self.source.name, framework=self.framework,
            batch_size=self.batch_size, budget_s=self.budget, seed=cfg.seed, threads=self.threads,
        )

    def _build_state(self) -> None:
        """Input pipeline, model and optimizer state from the trial's keys (untimed)."""
        data_rng, opt_rng, model_rng, self.rng = split(prng_key(self.config.seed), 4)
        self.input_queue = self.workload.build_input_queue(
            data_rng, "train", self.config.data_dir, self.batch_size
        )
        hp = self.hyperparameters
        # v0.5/v0.6-era submissions choose dropout through their hyperparameters, which the
        # harness hands to init_model_fn (the current reference passes it to model_fn instead).
        dropout, aux = getattr(hp, "dropout_rate", None), getattr(hp, "aux_dropout_rate", None)
        self.model, self.model_state = self.workload.init_model_fn(model_rng, dropout, aux)
        self.optimizer_state = self.module.init_optimizer_state(
            workload=self.workload, model_params=self.model, model_state=self.model_state,
            hyperparameters=hp, rng=opt_rng,
        )
        self._prepare_for_eval = getattr(self.module, "prepare_for_eval", None)
        self._pass_train_state = submission_lib.takes_train_state(self.module)
        self.train_state: dict[str, Any] = {
            "validation_goal_reached": False, "test_goal_reached": False, "is_time_remaining": True,
            "last_eval_time": 0.0, "training_complete": False, "accumulated_submission_time": 0.0,
            "last_step_end_time": 0.0,
        }

    def _notice(self, message: str) -> None:
        if self.backend.is_rank_zero():
            print(f"algoperf: {message}", file=sys.stderr)
        self.log.event("notice", message=message)

    def _write_run_files(self) -> None:
        cfg, p = self.config, self.preemption_count
        self.log.write(logs.HPARAMS_FILE, {**(cfg.hyperparameters or {}), "seed": cfg.seed})
        self.log.write(f"flags_{p}.json", {
            **cfg.flags, "workload": cfg.workload, "submission": str(self.source.path),
            "framework": self.framework, "seed": cfg.seed, "data": cfg.data,
            "data_dir": cfg.data_dir, "max_steps": cfg.max_steps, "max_runtime": cfg.max_runtime,
            "stop_at": cfg.stop_at, "ruleset": cfg.ruleset, "rules": cfg.rules,
            # batch_size is the --batch-size override (None: the submission's own choice), which
            # makes a trial unofficial for the scorer; the size in force is effective_batch_size.
            "batch_size": cfg.batch_size, "effective_batch_size": self.batch_size,
            "study": cfg.study, "trial": cfg.trial, "resume": cfg.resume,
            "checkpoint_every": cfg.checkpoint_every, "eval_every": cfg.eval_every,
            "threads": self.threads,
        })
        self.log.write(f"meta_data_{p}.json", {
            **metadata.run_metadata(self.framework),
            "device": self.backend.device_facts(),
            "intra_op_threads": self.threads,
            "workload": self.info.facts(),
            "submission": {"name": self.source.name, "path": str(self.source.path),
                           "sha256": saved.ckpt.sha256(self.source.path)},
            "seed": cfg.seed, "study": cfg.study, "trial": cfg.trial,
            "ruleset": cfg.ruleset, "rules": cfg.rules, "budget_s": self.budget,
            "preemption_count": p,
        })

    # ---- the run -----------------------------------------------------------------------------
    def run(self) -> TrialResult:
        self._install_signal_handlers()
        try:
            ready = self._setup_or_record()
        except BaseException:
            self._restore_signal_handlers()
            raise
        try:
            if not ready:
                return self.finish()
            self.clock.charge("setup")
            self._loop()
        except _Interrupted:
            self.status = "interrupted"
        except Exception as e:
            self._record_error(e)
        finally:
            self._restore_signal_handlers()
        return self.finish()

    def _setup_or_record(self) -> bool:
        """Runs set-up; False if it failed in the submission's or a model's code (recorded as the
        trial's error). A failure that is the user's input to fix is raised to the caller."""
        try:
            self.setup()
            return True
        except BaseException as e:
            if isinstance(e, USAGE_ERRORS) or _is_usage_error(e, self.source.path.parent):
                self._close_quietly()
                raise
            self._record_error(e)
            return False

    def _record_error(self, e: BaseException) -> None:
        """The trial ends as `error`: one line (with file:line in the submission) for the summary
        and the console, the whole traceback in the trial's error.log."""
        self.status = "error"
        cause = e.error if isinstance(e, submission_lib.SubmissionImportError) else e
        self.error_location = submission_lib.location_in(cause, self.source.path.parent)
        self.error = f"{type(cause).__name__}: {cause}".splitlines()[0]
        text = "".join(traceback.format_exception(e))
        log = getattr(self, "log", None)
        if log is not None and log.enabled:
            (self.config.trial_dir / ERROR_LOG).write_text(text)
            log.event("error", message=self.error, location=self.error_location, traceback=text)

    def _close_quietly(self) -> None:
        log = getattr(self, "log", None)
        if log is not None:
            log.close()

    def _loop(self) -> None:
        cfg, clock = self.config, self.clock
        last_eval_end = clock.now()
        self.step_times = [] if cfg.record_step_times else None
        while True:
            completed, outputs = self._step()
            clock.wait_for(outputs)
            spent_locally = clock.submission_time + clock.pending() >= self.budget
            due = (self.global_step % cfg.eval_every == 0 if cfg.eval_every
                   else clock.now() - last_eval_end >= self.eval_period)
            # One collective per step: the decisions every rank must share, and the step's end,
            # which is when the slowest rank ends (the charge below follows the collective).
            (budget_spent, due, stop_signal, diverged), _ = self.backend.agree([
                spent_locally, due, self._stop_signal is not None,
                self.metrics_logger.diverged_at is not None,
            ])
            elapsed = clock.charge("submission")
            if self.global_step == 1 and not completed:
                clock.first_step = elapsed
            if self.step_times is not None:
                self.step_times.append(elapsed)
            self.train_state["accumulated_submission_time"] = clock.submission_time
            self.train_state["last_step_end_time"] = clock.now()
            if budget_spent:
                # RULES.md: a run whose budget is spent gets no further eval, not even the final
                # one after TrainingCompleteError.
                self.train_state["is_time_remaining"] = False
                self.status = "budget"
                return
            if completed:
                self.evaluate()
                self.status = self.status or "completed"
                return
            if diverged:
                self.evaluate()
                self.status = "diverged"
                return
            if cfg.max_steps is not None and self.global_step >= cfg.max_steps:
                self.evaluate()
                self.status = self.status or "max_steps"
                return
            if self.global_step == 1 or due:
                if self.evaluate():
                    return
                last_eval_end = clock.now()
            if cfg.checkpoint_every and self.global_step % cfg.checkpoint_every == 0:
                self.checkpoint()
            if stop_signal:
                self.checkpoint()
                raise _Interrupted()
            self._report_progress()

    @property
    def eval_period(self) -> float:
        return self.info.eval_period_time_sec

    def _step(self) -> tuple[bool, Any]:
        """One timed step: data selection and update. Returns (training complete, outputs)."""
        module, workload, hp = self.module, self.workload, self.hyperparameters
        select_rng, update_rng = step_keys(self.rng, self.global_step, 2)
        extra = {"train_state": types.MappingProxyType(self.train_state)} if self._pass_train_state else {}
        try:
            batch = module.data_selection(
                workload=workload, input_queue=self.input_queue, optimizer_state=self.optimizer_state,
                current_param_container=self.model, model_state=self.model_state,
                hyperparameters=hp, global_step=self.global_step, rng=select_rng,
            )
            outputs = module.update_params(
                workload=workload, current_param_container=self.model,
                current_params_types=workload.model_params_types, model_state=self.model_state,
                hyperparameters=hp, batch=batch, loss_type=workload.loss_type,
                optimizer_state=self.optimizer_state, eval_results=self.history.results,
                global_step=self.global_step, rng=update_rng, **extra,
            )
        except spec.TrainingCompleteError:
            return True, None
        self.optimizer_state, self.model, self.model_state = outputs
        self.global_step += 1
        return False, outputs

    # ---- evals (untimed, but prepare_for_eval is timed) --------------------------------------
    def evaluate(self) -> bool:
        """Runs one eval and logs its row; returns True when the trial must stop."""
        clock, workload = self.clock, self.workload
        prep_rng, eval_rng = step_keys(self.rng, -1 - self.global_step, 2)
        if self._prepare_for_eval is not None:
            outputs = self._prepare_for_eval(
                workload=workload, current_param_container=self.model,
                current_params_types=workload.model_params_types, model_state=self.model_state,
                hyperparameters=self.hyperparameters, loss_type=workload.loss_type,
                optimizer_state=self.optimizer_state, eval_results=self.history.results,
                global_step=self.global_step, rng=prep_rng,
            )
            self.optimizer_state, self.model, self.model_state = outputs
            clock.charge("submission", outputs)
            (over,), _ = self.backend.agree([clock.submission_time >= self.budget])
            if over:  # prepare_for_eval is on the clock: it may spend the budget (RULES.md)
                self.train_state["is_time_remaining"] = False
                self.status = "budget"
                return True
        results = workload.eval_model(
            workload.eval_batch_size, self.model, self.model_state, eval_rng,
            self.config.data_dir, None, self.global_step,
        )
        finite = finite_metrics(results) and self.backend.params_finite(self.model)
        clock.charge("eval")

        if finite:
            self.targets.update(workload, results, clock.submission_time)
        self.train_state.update(
            validation_goal_reached=self.targets.validation, test_goal_reached=self.targets.test,
            last_eval_time=clock.now(),
        )
        self.history.results.append((self.global_step, results))
        row = eval_row(results, clock, self.global_step, self.preemption_count)
        self.log.append_eval_row(row)
        self.log.event("eval", **row)
        self._report_progress(force=True)
        clock.charge("logging")

        if not finite:
            self.status = "diverged"
            return True
        if self.targets.reached(self.config.stop_at):
            self.train_state["training_complete"] = True
            self.status = "reached"
            return True
        return False

    # ---- checkpoints (untimed) ---------------------------------------------------------------
    def checkpoint(self) -> None:
        self.log.flush_measurements()
        self.log.event("checkpoint", global_step=self.global_step)
        if self.backend.is_rank_zero():
            saved.save(self)
        self.backend.barrier()
        self.clock.charge("checkpoint")

    def _restore(self) -> None:
        state = saved.load_latest(self.config.trial_dir)
        if state is None:
            # Nothing was saved: the trial starts over, and its earlier rows are dropped.
            dropped = self.log.truncate_to({})
            self.log.event("resume", from_step=0, dropped_rows=dropped,
                           preemption_count=self.preemption_count)
            return
        saved.restore(self, state)
        dropped = self.log.truncate_to(state["log_rows"])
        lost = saved.lost_since(self.config.trial_dir, state)
        self.clock.lost += lost
        self.log.event("resume", from_step=self.global_step, dropped_rows=dropped, lost_s=lost,
                       preemption_count=self.preemption_count)

    def _previous_preemptions(self) -> int:
        counts = [int(p.stem.split("_")[-1]) for p in self.config.trial_dir.glob("flags_*.json")]
        return max(counts, default=-1)

    # ---- signals -----------------------------------------------------------------------------
    def _install_signal_handlers(self) -> None:
        self._old_handlers: dict[int, Any] = {}
        try:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1):
                self._old_handlers[sig] = signal.signal(sig, self._on_signal)
        except ValueError:  # not the main thread: leave signals alone
            self._old_handlers = {}

    def _restore_signal_handlers(self) -> None:
        for sig, handler in self._old_handlers.items():
            signal.signal(sig, handler)

    def _on_signal(self, signum: int, frame: Any) -> None:
        self._stop_signal = signum

    # ---- progress and the end (untimed) ------------------------------------------------------
    def _report_progress(self, force: bool = False) -> None:
        """The live line, at most twice a second; the time it takes is charged to logging."""
        if self.progress is None:
            return
        now = time.perf_counter()
        if not force and now - self._last_progress < 0.5:
            return
        self._last_progress = now
        self.progress({
            "global_step": self.global_step, "submission_time": self.clock.submission_time,
            "budget": self.budget, "metric": self.info.target_metric_name,
            "validation": self.history.last.get(f"validation/{self.info.target_metric_name}"),
            "target": self.info.validation_target, "wall": self.clock.total,
        })
        if not force:
            self.clock.charge("logging")

    def finish(self) -> TrialResult:
        self.clock.charge("other")
        result = TrialResult(
            status=self.status or "error",
            trial_dir=self.config.trial_dir,
            global_step=self.global_step,
            time_to_target_s=self.targets.time_to_target,
            test_time_to_target_s=self.targets.test_time_to_target,
            phases=dict(self.clock.phases),
            first_step_s=self.clock.first_step,
            lost_s=self.clock.lost,
            budget_s=self.budget,
            last_eval=self.history.last,
            target_metric=self.info.target_metric_name,
            validation_target=self.info.validation_target,
            error=self.error,
            error_location=self.error_location,
            preemption_count=self.preemption_count,
        )
        log = getattr(self, "log", None)
        if log is not None:
            log.write(logs.SUMMARY_FILE, result.summary())
            log.event("trial_end", status=result.status, global_step=self.global_step)
            log.close()
        return result


def _is_usage_error(e: BaseException, submission_folder: Path) -> bool:
    """Missing datasets and framework installs are the user's to fix (one line, exit code 2):
    a dataset error, a missing framework, or a missing file outside the submission's code."""
    from algoperf.backends import FrameworkUnavailableError
    from algoperf.datasets import DatasetUnavailableError

    if isinstance(e, (DatasetUnavailableError, FrameworkUnavailableError)):
        return True
    return isinstance(e, FileNotFoundError) and submission_lib.location_in(e, submission_folder) is None


def train_once(config: TrialConfig, progress: Progress | None = None) -> TrialResult:
    """Runs one trial to its end and returns its result (also written to summary.json)."""
    return Trial(config, progress).run()


__all__ = ["TrialConfig", "TrialResult", "Trial", "train_once", "trial_seed", "to_seed"]
