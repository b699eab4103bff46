"""A trial's complete state in a checkpoint, and a trial brought back to it (exact resume).

Everything that decides what a trial does next is saved: parameters, optimizer and model state
(as pytrees of numpy arrays, through the backend), every RNG, the input pipeline's position, the
clock, the eval history and targets, and how many rows each log file had. On resume, rows
written after the checkpoint (by the run that was killed) are dropped from every log file, so
the resumed trial's logs are those of an uninterrupted run.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from algoperf import checkpoint as ckpt
from algoperf import logs

CHECKPOINT_DIR = "checkpoints"


def capture(trial: Any) -> dict[str, Any]:
    """The state of `trial` (an `algoperf.runner.Trial` between steps) as a saveable pytree."""
    to_numpy = trial.backend.to_numpy
    return {
        "global_step": trial.global_step,
        "preemption_count": trial.preemption_count,
        "model": ckpt.capture(trial.unwrapped_model, to_numpy),
        "model_state": ckpt.capture(trial.model_state, to_numpy),
        "optimizer_state": ckpt.capture(trial.optimizer_state, to_numpy),
        "rng": ckpt.capture(trial.backend.rng_state(), to_numpy),
        "input_queue": ckpt.capture(trial.input_queue, to_numpy) if hasattr(trial.input_queue, "state_dict") else None,
        "clock": trial.clock.state_dict(),
        "eval_results": trial.history.results,
        "targets": trial.targets.state_dict(),
        "train_state": dict(trial.train_state),
        "log_rows": trial.log.row_counts(),
        "wall_time_at_save": time.time(),
    }


def restore(trial: Any, state: dict[str, Any]) -> None:
    """Brings a freshly set-up `trial` to the saved `state`."""
    from_numpy = trial.backend.from_numpy
    trial.global_step = state["global_step"]
    restored_model = ckpt.restore(trial.unwrapped_model, state["model"], from_numpy)
    if restored_model is not trial.unwrapped_model:  # a pytree of parameters (JAX): replace it
        trial.model = restored_model
    trial.model_state = ckpt.restore(trial.model_state, state["model_state"], from_numpy)
    trial.optimizer_state = ckpt.restore(trial.optimizer_state, state["optimizer_state"], from_numpy)
    trial.backend.set_rng_state(ckpt.restore(trial.backend.rng_state(), state["rng"], from_numpy))
    if state["input_queue"] is not None:
        ckpt.restore(trial.input_queue, state["input_queue"], from_numpy)
    trial.clock.load_state_dict(state["clock"])
    trial.history.results = [tuple(r) for r in state["eval_results"]]
    trial.targets.load_state_dict(state["targets"])
    trial.train_state.update(state["train_state"])


def lost_since(trial_dir: Path, state: dict[str, Any]) -> float:
    """Wall time between the checkpoint and the last sign of life of the killed process."""
    last = state["wall_time_at_save"]
    try:
        last = max(last, (trial_dir / logs.EVENTS_FILE).stat().st_mtime)
    except OSError:
        pass
    return max(0.0, last - state["wall_time_at_save"])


def save(trial: Any) -> None:
    ckpt.save(trial.config.trial_dir / CHECKPOINT_DIR, trial.global_step, capture(trial))


def load_latest(trial_dir: Path) -> dict[str, Any] | None:
    return ckpt.load_latest(trial_dir / CHECKPOINT_DIR)
