"""Schedule-Free AdamW (Defazio et al. 2024), AlgoPerf's self-tuning winner, in JAX.

The same hyperparameters, defaults and evaluation protocol as `pytorch_submission.py`:
`prepare_for_eval` hands the runner the averaged point x, with batch-norm statistics recomputed
there from the last training batches (the statistics collected at y do not belong to x); the next
`update_params` goes back to y and y's statistics. JAX arrays are immutable, so y is kept as it
was (not recomputed from x by a lerp, as the PyTorch side does in place): an eval in between
leaves the training trajectory bit for bit unchanged.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from algoperf import spec
from submissions.jax_training import (
    data_selection,
    get_batch_size,
    hparam,
    init_state,
    training_step,
)
from submissions.schedule_free.jax_optimizer import eval_params, schedule_free_adamw

__all__ = ["get_batch_size", "init_optimizer_state", "update_params", "prepare_for_eval", "data_selection"]

DEFAULTS = {
    "learning_rate": 0.0025,
    "one_minus_beta1": 0.1,
    "beta2": 0.9955159689799007,
    "weight_decay": 0.08121616522670176,
    "warmup_factor": 0.02,
    "weight_lr_power": 2.0,
    "r": 0.75,
    "eps": 1e-8,
    "label_smoothing": 0.2,
    "dropout_rate": 0.1,
}
BN_BATCHES = 3  # training batches kept to recompute batch-norm statistics at x
BATCH_STATS = "batch_stats"  # flax's collection of batch-norm running statistics


class ScheduleFreeRun(NamedTuple):
    """The submission's optimizer state."""

    opt_state: Any  # ScheduleFreeState
    tx: optax.GradientTransformation
    at_y: tuple[Any, Any] | None  # (params y, model_state at y) while the model sits at x
    recent_batches: tuple[dict[str, Any], ...]  # kept only for models with batch norm


def _get(hyperparameters: Any, name: str) -> Any:
    return hparam(hyperparameters, name, DEFAULTS[name])


def optimizer(workload: spec.Workload, hyperparameters: Any) -> optax.GradientTransformation:
    return schedule_free_adamw(
        learning_rate=_get(hyperparameters, "learning_rate"),
        warmup_steps=int(_get(hyperparameters, "warmup_factor") * workload.step_hint),
        b1=1.0 - _get(hyperparameters, "one_minus_beta1"),
        b2=_get(hyperparameters, "beta2"),
        eps=_get(hyperparameters, "eps"),
        weight_decay=_get(hyperparameters, "weight_decay"),
        r=_get(hyperparameters, "r"),
        weight_lr_power=_get(hyperparameters, "weight_lr_power"),
    )


def init_optimizer_state(
    workload: spec.Workload, model_params: spec.ParameterContainer,
    model_state: spec.ModelAuxiliaryState, hyperparameters: spec.Hyperparameters,
    rng: spec.RandomState,
) -> spec.OptimizerState:
    opt_state, tx = init_state(optimizer(workload, hyperparameters), model_params)
    return ScheduleFreeRun(opt_state, tx, None, ())


def _has_batch_norm(model_state: Any) -> bool:
    return bool(model_state) and BATCH_STATS in model_state


def update_params(
    workload: spec.Workload, current_param_container: spec.ParameterContainer,
    current_params_types: spec.ParameterTypeTree, model_state: spec.ModelAuxiliaryState,
    hyperparameters: spec.Hyperparameters, batch: dict[str, Any], loss_type: spec.LossType,
    optimizer_state: spec.OptimizerState, eval_results: list[tuple[int, float]],
    global_step: int, rng: spec.RandomState, train_state: dict[str, Any] | None = None,
) -> spec.UpdateReturn:
    run: ScheduleFreeRun = optimizer_state
    params = current_param_container
    if run.at_y is not None:  # back from an eval at x
        params, model_state = run.at_y
    recent = (*run.recent_batches, batch)[-BN_BATCHES:] if _has_batch_norm(model_state) else ()
    params, model_state, opt_state = training_step(
        workload, run.tx, params, model_state, run.opt_state, hyperparameters, batch, global_step,
        rng, defaults=DEFAULTS,
    )
    return ScheduleFreeRun(opt_state, run.tx, None, recent), params, model_state


def prepare_for_eval(
    workload: spec.Workload, current_param_container: spec.ParameterContainer,
    current_params_types: spec.ParameterTypeTree, model_state: spec.ModelAuxiliaryState,
    hyperparameters: spec.Hyperparameters, loss_type: spec.LossType,
    optimizer_state: spec.OptimizerState, eval_results: list[tuple[int, float]],
    global_step: int, rng: spec.RandomState,
) -> spec.UpdateReturn:
    run: ScheduleFreeRun = optimizer_state
    if run.at_y is not None:  # already at x
        return run, current_param_container, model_state
    b1 = 1.0 - _get(hyperparameters, "one_minus_beta1")
    x = _eval_params_jit(run.opt_state, current_param_container, b1)
    state_at_x = model_state
    if _has_batch_norm(model_state) and run.recent_batches:
        state_at_x = _batch_stats_at(workload)(x, model_state, run.recent_batches, rng)
    return run._replace(at_y=(current_param_container, model_state)), x, state_at_x


_eval_params_jit = jax.jit(eval_params, static_argnums=2)


@functools.cache
def _batch_stats_at(workload: spec.Workload) -> Any:
    """A jitted (params, model_state, batches, rng) -> model_state whose batch-norm statistics are
    the plain average over `batches` of the batch statistics at `params` (the PyTorch baseline's
    cumulative average, `momentum=None`).

    flax updates a running statistic as s <- m s + (1 - m) b. Run from s = 0 and from s = 1, a
    batch gives (1 - m) b and m + (1 - m) b, from which b follows whatever the momentum m of each
    layer, without reading the model's code.
    """

    def recompute(params: Any, model_state: Any, batches: tuple[dict[str, Any], ...], rng: Any) -> Any:
        stats = model_state[BATCH_STATS]

        def after_one_batch(batch: dict[str, Any], start: Any) -> Any:
            _, new_state = workload.model_fn(
                params, batch, {**model_state, BATCH_STATS: start}, spec.ForwardPassMode.TRAIN, rng,
                update_batch_norm=True, dropout_rate=0.0,
            )
            return new_state[BATCH_STATS]

        total = jax.tree.map(jnp.zeros_like, stats)
        for batch in batches:
            from_zero = after_one_batch(batch, jax.tree.map(jnp.zeros_like, stats))
            from_one = after_one_batch(batch, jax.tree.map(jnp.ones_like, stats))
            batch_stats = jax.tree.map(lambda a, b: a / (1.0 - (b - a)), from_zero, from_one)
            total = jax.tree.map(jnp.add, total, batch_stats)
        return {**model_state, BATCH_STATS: jax.tree.map(lambda s: s / len(batches), total)}

    return jax.jit(recompute)
