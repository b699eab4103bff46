"""The JAX training step the simple baselines share (AdamW, NAdamW, SGD, ... as optax chains).

A step is: forward in train mode, the workload's loss (label smoothing, mask), mean over valid
examples, gradients, optional clipping by global norm, one optax update. It is `jax.jit`-ed
once per (workload, optimizer, static settings); parameters and optimizer state stay replicated
over the mesh, the batch arrives split along the batch axis, so XLA inserts the gradient
all-reduce (DESIGN.md, Scale). Kept here once so each baseline file holds only its optimizer.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import optax

from algoperf import spec
from submissions.baseline_settings import BATCH_SIZES, get_batch_size, hparam, optional_hparam

__all__ = ["BATCH_SIZES", "get_batch_size", "warmup_cosine", "init_state", "train_step",
           "training_step", "update_params", "data_selection", "hparam", "optional_hparam"]


def warmup_cosine(learning_rate: float, step_hint: int, warmup_steps: int) -> optax.Schedule:
    """Linear warmup from 0 then cosine decay to 0 at step_hint: the same factor per step as
    `submissions.schedules.warmup_cosine` (count 0 is the first update)."""

    def schedule(count: Any) -> Any:
        # The default float type: float32, or float64 under `jax_enable_x64` (parity tests).
        count = jnp.asarray(count, float)
        warm = (count + 1.0) / max(warmup_steps, 1)
        progress = jnp.clip((count - warmup_steps) / max(1, step_hint - warmup_steps), 0.0, 1.0)
        cosine = 0.5 * (1.0 + jnp.cos(jnp.pi * progress))
        return learning_rate * jnp.where((warmup_steps > 0) & (count < warmup_steps), warm, cosine)

    return schedule


def schedule_of(workload: spec.Workload, hyperparameters: Any, learning_rate: float) -> optax.Schedule:
    step_hint = int(workload.step_hint * optional_hparam(hyperparameters, "step_hint_factor", 1.0))
    warmup = int(hparam(hyperparameters, "warmup_factor", 0.05) * step_hint)
    return warmup_cosine(learning_rate, step_hint, warmup)


def init_state(tx: optax.GradientTransformation, params: Any) -> tuple[Any, optax.GradientTransformation]:
    """(optax state, tx), the state replicated like the parameters, so the first jitted step
    sees the same input shardings as every later one (no second compilation)."""
    from algoperf import jax_sharding_utils

    return jax_sharding_utils.replicate(tx.init(params)), tx


def train_step(
    workload: spec.Workload, tx: optax.GradientTransformation, dropout_rate: float | None,
    label_smoothing: float, grad_clip: float | None, params: Any, model_state: Any,
    opt_state: Any, batch: dict[str, Any], rng: Any,
) -> tuple[Any, Any, Any, Any]:
    """(params, model_state, opt_state, loss) after one step (traced under jit)."""

    def loss_fn(p: Any) -> tuple[Any, Any]:
        logits, new_state = workload.model_fn(
            p, batch, model_state, spec.ForwardPassMode.TRAIN, rng, update_batch_norm=True,
            dropout_rate=dropout_rate,
        )
        loss = workload.loss_fn(batch["targets"], logits, batch.get("weights"), label_smoothing)
        return loss["summed"] / loss["n_valid_examples"], new_state

    (loss, new_state), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    if grad_clip is not None:
        norm = optax.global_norm(grads)
        grads = jax.tree.map(lambda g: g * jnp.minimum(1.0, grad_clip / (norm + 1e-6)), grads)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), new_state, opt_state, loss


@functools.cache
def _jitted(workload: spec.Workload, tx: optax.GradientTransformation, dropout_rate: float | None,
            label_smoothing: float, grad_clip: float | None) -> Any:
    from algoperf import jax_sharding_utils

    step = functools.partial(train_step, workload, tx, dropout_rate, label_smoothing, grad_clip)
    # Outputs pinned replicated: the next step then sees inputs of the same shardings, and
    # nothing is compiled twice.
    return jax.jit(step, donate_argnums=(0, 1, 2),
                   out_shardings=jax_sharding_utils.get_replicate_sharding())


def training_step(
    workload: spec.Workload, tx: optax.GradientTransformation, params: Any, model_state: Any,
    opt_state: Any, hyperparameters: Any, batch: dict[str, Any], global_step: int, rng: Any,
    defaults: dict[str, Any] | None = None,
) -> tuple[Any, Any, Any]:
    """(params, model_state, opt_state) after one jitted step; `defaults` overrides the
    self-tuning defaults of dropout_rate and label_smoothing (as `torch_training.training_step`)."""
    defaults = defaults or {}
    step = _jitted(
        workload, tx, hparam(hyperparameters, "dropout_rate", defaults.get("dropout_rate")),
        hparam(hyperparameters, "label_smoothing", defaults.get("label_smoothing", 0.0)),
        optional_hparam(hyperparameters, "grad_clip", None),
    )
    params, model_state, opt_state, loss = step(params, model_state, opt_state, batch, rng)
    if global_step % 100 == 0 and workload.metrics_logger is not None:
        # Reading the loss waits for the step; every 100 steps keeps it off the critical path.
        workload.metrics_logger.append_scalar_metrics({"loss": float(loss)}, global_step)
    return params, model_state, opt_state


def update_params(
    workload: spec.Workload, current_param_container: Any, current_params_types: Any,
    model_state: Any, hyperparameters: Any, batch: dict[str, Any], loss_type: spec.LossType,
    optimizer_state: Any, eval_results: list[tuple[int, Any]], global_step: int, rng: Any,
    train_state: Any = None,
) -> spec.UpdateReturn:
    """The shared `update_params`: optimizer_state is (optax state, the optax transformation)."""
    opt_state, tx = optimizer_state
    params, model_state, opt_state = training_step(
        workload, tx, current_param_container, model_state, opt_state, hyperparameters, batch,
        global_step, rng,
    )
    return (opt_state, tx), params, model_state


def data_selection(
    workload: spec.Workload, input_queue: Any, optimizer_state: Any, current_param_container: Any,
    model_state: Any, hyperparameters: Any, global_step: int, rng: Any,
) -> dict[str, Any]:
    return next(input_queue)
