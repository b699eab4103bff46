"""Schedule-Free AdamW (Defazio et al. 2024, "The Road Less Scheduled", Alg. 1 with Adam) as optax
transformations.

Three sequences share one parameter tree. The parameters hold y, where gradients are taken; the
state keeps z; the evaluation point x is implicit, x = (y - (1 - beta1) z) / beta1. Per step t
(from 1), with lr_t = lr * min(1, t / warmup_steps):

    d   =  g / (sqrt(v / (1 - beta2^t)) + eps) + wd * y,   v <- beta2 v + (1 - beta2) g^2
    c   =  w_t / sum_{i<=t} w_i,                          w_t = t^r * (max_{i<=t} lr_i)^weight_lr_power
    z   <- z - lr_t d
    x   <- (1 - c) x + c z
    y   =  (1 - beta1) z + beta1 x

Here the direction d is `adam_direction` (Adam without momentum, decoupled decay) and the
averaging is `schedule_free`. `optax.contrib.schedule_free_adamw` is this optimizer only
without r and warmup: it averages with w_t = (max lr)^power, i.e. r = 0, where the PyTorch baseline
(and AlgoPerf's self-tuning winner) uses r = 0.75, and its base optimizer's warmup starts from
count 0, so its first step has learning rate 0 where ours has lr / warmup_steps. Hence the wrapper
here (tests/test_jax_baselines.py shows it equal to optax's at r = 0 without warmup, and
different with either).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax


class ScheduleFreeState(NamedTuple):
    count: jax.Array  # steps taken (t - 1 during step t)
    z: optax.Params  # the base optimizer's iterate
    lr_max: jax.Array  # max over past learning rates
    weight_sum: jax.Array  # sum of the averaging weights w_i
    base: optax.OptState  # the direction's state


def warmup_constant(learning_rate: float, warmup_steps: int) -> optax.Schedule:
    """lr * min(1, (count + 1) / warmup_steps): Schedule-Free's only schedule (count 0 = step 1)."""

    def schedule(count: Any) -> Any:
        count = jnp.asarray(count, float)
        if warmup_steps <= 0:
            return jnp.full_like(count, learning_rate)
        return learning_rate * jnp.minimum(1.0, (count + 1.0) / warmup_steps)

    return schedule


def adam_direction(b2: float, eps: float, weight_decay: float) -> optax.GradientTransformation:
    """d = g / (sqrt(v_hat) + eps) + wd * y: Adam with beta1 = 0 (the averaging is the momentum)
    and decoupled weight decay taken at y."""
    return optax.chain(
        optax.scale_by_rms(decay=b2, eps=eps, eps_in_sqrt=False, bias_correction=True),
        optax.add_decayed_weights(weight_decay),
    )


def schedule_free(base: optax.GradientTransformation, learning_rate: optax.Schedule, b1: float,
                  r: float = 0.0, weight_lr_power: float = 2.0) -> optax.GradientTransformation:
    """Schedule-Free averaging around the direction of `base` (Defazio et al. 2024, Alg. 1).

    Returns y_{t+1} - y_t as the update. Without storing x: x_{t+1} = (1 - c) x_t + c z_{t+1}
    and y = (1 - beta1) z + beta1 x give y_{t+1} = lerp(y_t, z_t, c) + lr (beta1 (1 - c) - 1) d,
    the form the PyTorch baseline uses.
    """

    def init(params: optax.Params) -> ScheduleFreeState:
        dtype = jnp.result_type(*jax.tree.leaves(params))
        return ScheduleFreeState(
            count=jnp.zeros([], jnp.int32),
            z=jax.tree.map(jnp.copy, params),
            lr_max=jnp.full([], -1.0, dtype),
            weight_sum=jnp.zeros([], dtype),
            base=base.init(params),
        )

    def update(grads: optax.Updates, state: ScheduleFreeState,
               params: optax.Params | None = None) -> tuple[optax.Updates, ScheduleFreeState]:
        if params is None:
            raise ValueError("schedule_free needs the parameters (y): call update(grads, state, params)")
        lr = jnp.asarray(learning_rate(state.count), state.lr_max.dtype)
        lr_max = jnp.maximum(state.lr_max, lr)
        t = (state.count + 1).astype(lr.dtype)
        weight = t**r * lr_max**weight_lr_power
        weight_sum = state.weight_sum + weight
        c = jnp.where(weight_sum != 0.0, weight / jnp.where(weight_sum != 0.0, weight_sum, 1.0), 0.0)
        d, base_state = base.update(grads, state.base, params)
        new_y = jax.tree.map(lambda y, z, di: y + c * (z - y) + lr * (b1 * (1.0 - c) - 1.0) * di,
                             params, state.z, d)
        z = jax.tree.map(lambda z, di: z - lr * di, state.z, d)
        updates = jax.tree.map(lambda new, y: new - y, new_y, params)
        return updates, ScheduleFreeState(optax.safe_increment(state.count), z, lr_max, weight_sum,
                                          base_state)

    return optax.GradientTransformation(init, update)


def schedule_free_adamw(learning_rate: float, warmup_steps: int = 0, b1: float = 0.9,
                        b2: float = 0.999, eps: float = 1e-8, weight_decay: float = 0.0,
                        r: float = 0.0, weight_lr_power: float = 2.0) -> optax.GradientTransformation:
    """The Schedule-Free AdamW of the module docstring."""
    return schedule_free(adam_direction(b2, eps, weight_decay),
                         warmup_constant(learning_rate, warmup_steps), b1, r, weight_lr_power)


def eval_params(state: ScheduleFreeState, params: optax.Params, b1: float) -> optax.Params:
    """x = y + (1 - 1/beta1)(z - y): the averaged point, where the model is evaluated."""
    return jax.tree.map(lambda y, z: y + (1.0 - 1.0 / b1) * (z - y), params, state.z)
