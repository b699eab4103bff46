"""One trial: untimed set-up, the timed training loop, untimed evals, stop conditions.

The phases of a trial are methods of `Trial`: `setup` (untimed), `run` (the loop), `evaluate`,
`checkpoint`, `finish`. The clock (algoperf.clock) is charged at every boundary so that the
phases add up to the wall time (RULES.md, The clock).
"""

from __future__ import annotations

import dataclasses
import math
import signal
import time
import traceback
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from algoperf import checkpoint as ckpt
from algoperf import logs, metadata, spec, tuning
from algoperf import submission as submission_lib
from algoperf.clock import RunClock
from algoperf.random_utils import prng_key, split, step_keys, to_seed
from workloads import registry

STATUSES = ("reached", "budget", "max_steps", "diverged", "error", "completed", "interrupted")
STOP_AT = ("both", "validation", "never")
CHECKPOINT_DIR = "checkpoints"


@dataclass
class TrialConfig:
    """Everything that defines one trial; flows in from the CLI or from `algoperf tune`."""

    workload: str
    submission: str
    trial_dir: Path
    framework: str | None = None
    hyperparameters: dict[str, Any] | None = None
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
    ruleset: str = "external"
    rules: str = "v0.6"
    study: int = 0
    trial: int = 1
    flags: dict[str, Any] = field(default_factory=dict)
    record_step_times: bool = False  # keep each step's submission time (benchmarks)


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
    preemption_count: int = 0

    def summary(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["trial_dir"] = str(self.trial_dir)
        out["wall_time_s"] = sum(self.phases.values())
        return out


Progress = Callable[[dict[str, Any]], None]


class _Interrupted(Exception):
    pass


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
        self.global_step = 0
        self.preemption_count = 0
        self.eval_results: list[tuple[int, dict[str, float]]] = []
        self.time_to_target: float | None = None
        self.test_time_to_target: float | None = None
        self.goals = {"validation": False, "test": False}
        self._stop_signal: int | None = None
        # The clock starts with the trial, so set-up is on it; the device sync is set in setup().
        self.clock = RunClock()

    # ---- set-up (untimed) --------------------------------------------------------------------
    def setup(self) -> None:
        from algoperf import backends

        cfg = self.config
        self.backend = backends.get(self.framework)
        self.backend.init_distributed()
        self.clock.set_sync(self.backend.sync)
        self.module = submission_lib.load(self.source)
        # Under data parallelism every rank runs the trial; only rank 0 writes its files.
        self.log = logs.TrialLog(cfg.trial_dir, enabled=self.backend.is_rank_zero())
        self.backend.seed_everything(cfg.seed)
        self.workload = registry.load(cfg.workload, self.framework, data=cfg.data, data_dir=cfg.data_dir)
        self.workload.metrics_logger = self.metrics_logger = logs.MetricsLogger(self.log)
        self.hyperparameters = (
            tuning.as_hyperparameters(cfg.hyperparameters) if cfg.hyperparameters is not None else None
        )
        self.batch_size = cfg.batch_size or submission_lib.batch_size(
            self.module, self.info.name, self.info.base_name
        )
        budget = cfg.max_runtime if cfg.max_runtime is not None else self.info.max_allowed_runtime_sec
        self.budget = budget * tuning.budget_multiplier(cfg.ruleset, cfg.rules)
        self.eval_period = self.info.eval_period_time_sec

        root = prng_key(cfg.seed)
        data_rng, opt_rng, model_rng, self.rng = split(root, 4)
        self.input_queue = self.workload.build_input_queue(
            data_rng, "train", cfg.data_dir, self.batch_size
        )
        dropout = getattr(self.hyperparameters, "dropout_rate", None)
        aux_dropout = getattr(self.hyperparameters, "aux_dropout_rate", None)
        self.model, self.model_state = self.workload.init_model_fn(model_rng, dropout, aux_dropout)
        self.optimizer_state = self.module.init_optimizer_state(
            workload=self.workload,
            model_params=self.model,
            model_state=self.model_state,
            hyperparameters=self.hyperparameters,
            rng=opt_rng,
        )
        self._prepare_for_eval = getattr(self.module, "prepare_for_eval", None)
        self._pass_train_state = submission_lib.takes_train_state(self.module)
        self.train_state: dict[str, Any] = {
            "validation_goal_reached": False,
            "test_goal_reached": False,
            "is_time_remaining": True,
            "last_eval_time": 0.0,
            "training_complete": False,
            "accumulated_submission_time": 0.0,
            "last_step_end_time": 0.0,
        }
        if cfg.resume:
            self._restore()
        self._write_run_files()
        self.log.event(
            "trial_start", global_step=self.global_step, preemption_count=self.preemption_count,
            workload=self.info.name, submission=self.source.name, framework=self.framework,
            batch_size=self.batch_size, budget_s=self.budget, seed=cfg.seed,
        )

    def _write_run_files(self) -> None:
        cfg, p = self.config, self.preemption_count
        self.log.write(logs.HPARAMS_FILE, {**(cfg.hyperparameters or {}), "seed": cfg.seed})
        self.log.write(f"flags_{p}.json", {
            **cfg.flags, "workload": cfg.workload, "submission": str(self.source.path),
            "framework": self.framework, "seed": cfg.seed, "data": cfg.data,
            "data_dir": cfg.data_dir, "max_steps": cfg.max_steps, "stop_at": cfg.stop_at,
            "ruleset": cfg.ruleset, "rules": cfg.rules, "batch_size": self.batch_size,
            "study": cfg.study, "trial": cfg.trial, "resume": cfg.resume,
            "checkpoint_every": cfg.checkpoint_every, "eval_every": cfg.eval_every,
        })
        self.log.write(f"meta_data_{p}.json", {
            **metadata.run_metadata(self.framework),
            "workload": self.info.facts(),
            "submission": {"name": self.source.name, "path": str(self.source.path),
                           "sha256": ckpt.sha256(self.source.path)},
            "seed": cfg.seed, "study": cfg.study, "trial": cfg.trial,
            "ruleset": cfg.ruleset, "rules": cfg.rules, "budget_s": self.budget,
            "preemption_count": p,
        })

    # ---- the timed loop ----------------------------------------------------------------------
    def run(self) -> TrialResult:
        self._install_signal_handlers()
        try:
            self.setup()
        except BaseException:
            # Set-up failures (bad data dir, a model that does not build) are the user's to fix:
            # record them if the log exists, then let the caller report them.
            self._restore_signal_handlers()
            if hasattr(self, "log"):
                self.log.event("error", message=traceback.format_exc())
            raise
        try:
            self.clock.charge("setup")
            self._loop()
        except _Interrupted:
            self.status = "interrupted"
        except Exception as e:
            self.status = "error"
            self.error = f"{type(e).__name__}: {e}"
            self.log.event("error", message=self.error, traceback=traceback.format_exc())
        finally:
            self._restore_signal_handlers()
        return self.finish()

    def _loop(self) -> None:
        cfg, module, workload = self.config, self.module, self.workload
        clock = self.clock
        hp = self.hyperparameters
        last_eval_end = clock.now()
        extra = {"train_state": types.MappingProxyType(self.train_state)} if self._pass_train_state else {}
        self.step_times: list[float] | None = [] if cfg.record_step_times else None
        step_times = self.step_times
        while True:
            select_rng, update_rng = step_keys(self.rng, self.global_step, 2)
            completed = False
            try:
                batch = module.data_selection(
                    workload=workload, input_queue=self.input_queue, optimizer_state=self.optimizer_state,
                    current_param_container=self.model, model_state=self.model_state,
                    hyperparameters=hp, global_step=self.global_step, rng=select_rng,
                )
                self.optimizer_state, self.model, self.model_state = module.update_params(
                    workload=workload, current_param_container=self.model,
                    current_params_types=workload.model_params_types, model_state=self.model_state,
                    hyperparameters=hp, batch=batch, loss_type=workload.loss_type,
                    optimizer_state=self.optimizer_state, eval_results=self.eval_results,
                    global_step=self.global_step, rng=update_rng, **extra,
                )
                self.global_step += 1
            except spec.TrainingCompleteError:
                completed = True
            elapsed = clock.charge("submission")
            if self.global_step == 1 and not completed:
                clock.first_step = elapsed
            if step_times is not None:
                step_times.append(elapsed)
            submission_time = clock.submission_time
            self.train_state["accumulated_submission_time"] = submission_time
            self.train_state["last_step_end_time"] = clock.now()

            due = (
                self.global_step % cfg.eval_every == 0
                if cfg.eval_every
                else clock.now() - last_eval_end >= self.eval_period
            )
            (budget_spent, due, stop_signal, diverged), _ = self.backend.agree([
                submission_time >= self.budget, due, self._stop_signal is not None,
                self.metrics_logger.diverged_at is not None,
            ])
            if completed:
                self.evaluate()
                self.status = self.status or "completed"
                return
            if budget_spent:
                # RULES.md: a run whose budget is spent gets no further eval.
                self.train_state["is_time_remaining"] = False
                self.status = "budget"
                return
            if cfg.max_steps is not None and self.global_step >= cfg.max_steps:
                self.evaluate()
                self.status = self.status or "max_steps"
                return
            if diverged:
                self.evaluate()
                self.status = "diverged"
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
            if self.progress is not None:
                self._report_progress()

    # ---- evals (untimed, but prepare_for_eval is timed) --------------------------------------
    def evaluate(self) -> bool:
        """Runs one eval and logs its row; returns True when the trial must stop."""
        clock, workload = self.clock, self.workload
        prep_rng, eval_rng = step_keys(self.rng, -1 - self.global_step, 2)
        if self._prepare_for_eval is not None:
            self.optimizer_state, self.model, self.model_state = self._prepare_for_eval(
                workload=workload, current_param_container=self.model,
                current_params_types=workload.model_params_types, model_state=self.model_state,
                hyperparameters=self.hyperparameters, loss_type=workload.loss_type,
                optimizer_state=self.optimizer_state, eval_results=self.eval_results,
                global_step=self.global_step, rng=prep_rng,
            )
            clock.charge("submission")
        results = workload.eval_model(
            workload.eval_batch_size, self.model, self.model_state, eval_rng,
            self.config.data_dir, None, self.global_step,
        )
        finite = all(math.isfinite(v) for k, v in results.items() if not k.endswith("num_examples"))
        finite = finite and self.backend.params_finite(self.model)
        clock.charge("eval")

        submission_time = clock.submission_time
        metric = self.info.target_metric_name
        if finite and not self.goals["validation"] and workload.has_reached_validation_target(results):
            self.goals["validation"] = True
            self.time_to_target = submission_time
        if finite and not self.goals["test"] and f"test/{metric}" in results and workload.has_reached_test_target(results):
            self.goals["test"] = True
            self.test_time_to_target = submission_time
        self.train_state["validation_goal_reached"] = self.goals["validation"]
        self.train_state["test_goal_reached"] = self.goals["test"]
        self.train_state["last_eval_time"] = clock.now()
        self.eval_results.append((self.global_step, results))
        row = {
            **results,
            "score": submission_time,
            "accumulated_submission_time": submission_time,
            "accumulated_eval_time": clock.phases["eval"],
            "accumulated_logging_time": clock.phases["logging"] + clock.phases["checkpoint"],
            "global_step": self.global_step,
            "preemption_count": self.preemption_count,
            "total_duration": clock.total + clock.lost,
        }
        self.log.append_eval_row(row)
        self.log.event("eval", **row)
        if self.progress is not None:
            self._report_progress(force=True)
        clock.charge("logging")

        if not finite:
            self.status = "diverged"
            return True
        stop_at = self.config.stop_at
        reached = self.goals["validation"] and (stop_at == "validation" or self.goals["test"])
        if stop_at != "never" and reached:
            self.train_state["training_complete"] = True
            self.status = "reached"
            return True
        return False

    # ---- checkpoints (untimed) ---------------------------------------------------------------
    def checkpoint(self) -> None:
        self.clock.charge("submission")
        self.log.flush_measurements()
        if self.backend.is_rank_zero():
            state = {
                "global_step": self.global_step,
                "preemption_count": self.preemption_count,
                "model": ckpt.capture(self.backend.unwrap(self.model), self.backend.to_numpy),
                "model_state": ckpt.capture(self.model_state, self.backend.to_numpy),
                "optimizer_state": ckpt.capture(self.optimizer_state, self.backend.to_numpy),
                "rng": self.backend.rng_state(),
                "input_queue": self.input_queue.state_dict() if hasattr(self.input_queue, "state_dict") else None,
                "clock": self.clock.state_dict(),
                "eval_results": self.eval_results,
                "eval_rows": self.log.eval_row_count(),
                "goals": dict(self.goals),
                "time_to_target": self.time_to_target,
                "test_time_to_target": self.test_time_to_target,
                "train_state": dict(self.train_state),
                "wall_time_at_save": self._wall_now(),
            }
            ckpt.save(self.config.trial_dir / CHECKPOINT_DIR, self.global_step, state)
        self.backend.barrier()
        self.clock.charge("checkpoint")
        self.log.event("checkpoint", global_step=self.global_step)

    def _wall_now(self) -> float:
        return time.time()

    def _restore(self) -> None:
        state = ckpt.load_latest(self.config.trial_dir / CHECKPOINT_DIR)
        previous = self._previous_preemptions()
        self.preemption_count = previous + 1
        if state is None:
            # Nothing was saved: the trial starts over, and its earlier rows are dropped.
            dropped = self.log.truncate_eval_rows(0)
            self.log.event("resume", from_step=0, dropped_eval_rows=dropped)
            return
        self.global_step = state["global_step"]
        ckpt.restore(self.backend.unwrap(self.model), state["model"], self.backend.from_numpy)
        self.model_state = ckpt.restore(self.model_state, state["model_state"], self.backend.from_numpy)
        self.optimizer_state = ckpt.restore(self.optimizer_state, state["optimizer_state"],
                                            self.backend.from_numpy)
        self.backend.set_rng_state(state["rng"])
        if state["input_queue"] is not None:
            self.input_queue.load_state_dict(state["input_queue"])
        self.clock.load_state_dict(state["clock"])
        self.eval_results = [tuple(r) for r in state["eval_results"]]
        self.goals = state["goals"]
        self.time_to_target = state["time_to_target"]
        self.test_time_to_target = state["test_time_to_target"]
        self.train_state.update(state["train_state"])
        dropped = self.log.truncate_eval_rows(state["eval_rows"])
        self.log.load_measurements()
        lost = self._lost_since(state)
        self.clock.lost += lost
        self.log.event("resume", from_step=self.global_step, dropped_eval_rows=dropped, lost_s=lost,
                       preemption_count=self.preemption_count)

    def _previous_preemptions(self) -> int:
        counts = [int(p.stem.split("_")[-1]) for p in self.config.trial_dir.glob("flags_*.json")]
        return max(counts, default=-1)

    def _lost_since(self, state: dict[str, Any]) -> float:
        """Wall time between the checkpoint and the last sign of life of the killed process."""
        events = self.config.trial_dir / logs.EVENTS_FILE
        last = state["wall_time_at_save"]
        try:
            last = max(last, events.stat().st_mtime)
        except OSError:
            pass
        return max(0.0, last - state["wall_time_at_save"])

    # ---- signals -----------------------------------------------------------------------------
    def _install_signal_handlers(self) -> None:
        self._old_handlers = {}
        try:
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._old_handlers[sig] = signal.signal(sig, self._on_signal)
        except ValueError:  # not the main thread: leave signals alone
            self._old_handlers = {}

    def _restore_signal_handlers(self) -> None:
        for sig, handler in self._old_handlers.items():
            signal.signal(sig, handler)

    def _on_signal(self, signum: int, frame: Any) -> None:
        self._stop_signal = signum

    # ---- end ---------------------------------------------------------------------------------
    def _report_progress(self, force: bool = False) -> None:
        now = time.perf_counter()
        if not force and now - getattr(self, "_last_progress", 0.0) < 0.5:
            return
        self._last_progress = now
        last = self.eval_results[-1][1] if self.eval_results else {}
        assert self.progress is not None
        self.progress({
            "global_step": self.global_step,
            "submission_time": self.clock.submission_time,
            "budget": self.budget,
            "metric": self.info.target_metric_name,
            "validation": last.get(f"validation/{self.info.target_metric_name}"),
            "target": self.info.validation_target,
            "wall": self.clock.total,
        })

    def finish(self) -> TrialResult:
        clock = self.clock
        clock.charge("other")
        result = TrialResult(
            status=self.status or "error",
            trial_dir=self.config.trial_dir,
            global_step=self.global_step,
            time_to_target_s=self.time_to_target,
            test_time_to_target_s=self.test_time_to_target,
            phases=dict(clock.phases),
            first_step_s=clock.first_step,
            lost_s=clock.lost,
            budget_s=self.budget,
            last_eval=self.eval_results[-1][1] if self.eval_results else {},
            target_metric=self.info.target_metric_name,
            validation_target=self.info.validation_target,
            error=self.error,
            preemption_count=self.preemption_count,
        )
        if self.backend.is_rank_zero():
            self.log.write(logs.SUMMARY_FILE, result.summary())
        self.log.event("trial_end", status=result.status, global_step=self.global_step)
        self.log.close()
        return result


def train_once(config: TrialConfig, progress: Progress | None = None) -> TrialResult:
    """Runs one trial to its end and returns its result (also written to summary.json)."""
    return Trial(config, progress).run()


def trial_seed(seed: int, workload: str, study: int, trial: int) -> int:
    """(ours) The seed of one trial, folded from the experiment seed and its place in the plan."""
    from algoperf.random_utils import derive_seed

    return derive_seed(seed, "trial", workload, study, trial)


__all__ = ["TrialConfig", "TrialResult", "train_once", "trial_seed", "to_seed"]
