"""NAdamW as AlgoPerf's baselines define it, as optax transformations.

Adam with Nesterov momentum (Dozat 2016, "Incorporating Nesterov Momentum into Adam", Alg. 2
without its momentum-decay schedule) and decoupled weight decay (Loshchilov & Hutter 2019).
Per step t (from 1), with gradient g:

    m <- b1 m + (1 - b1) g;   v <- b2 v + (1 - b2) g^2
    d = (b1 m + (1 - b1) g) / (1 - b1^t) / (sqrt(v / (1 - b2^t)) + eps)
    p <- p - lr (d + wd p)

Both bias corrections divide by the *same* (1 - b1^t). `optax.nadamw` corrects the momentum
term by (1 - b1^(t+1)) and the gradient term by (1 - b1^t), so it is a different optimizer from
AlgoPerf's (and from `submissions/nadamw/optimizer.py`); hence `scale_by_nadam` here.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax


class ScaleByNadamState(NamedTuple):
    count: jax.Array  # steps taken
    mu: optax.Updates  # EMA of the gradients
    nu: optax.Updates  # EMA of the squared gradients


def scale_by_nadam(b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8) -> optax.GradientTransformation:
    """The Nesterov-Adam direction d of the module docstring (no learning rate, no decay)."""

    def init(params: optax.Params) -> ScaleByNadamState:
        return ScaleByNadamState(jnp.zeros([], jnp.int32), optax.tree.zeros_like(params),
                                 optax.tree.zeros_like(params))

    def update(updates: optax.Updates, state: ScaleByNadamState,
               params: optax.Params | None = None) -> tuple[optax.Updates, ScaleByNadamState]:
        count = optax.safe_increment(state.count)
        mu = jax.tree.map(lambda m, g: b1 * m + (1.0 - b1) * g, state.mu, updates)
        nu = jax.tree.map(lambda v, g: b2 * v + (1.0 - b2) * g * g, state.nu, updates)
        correction1 = 1.0 - b1**count
        correction2 = 1.0 - b2**count

        def direction(m: Any, v: Any, g: Any) -> Any:
            nesterov = b1 * m + (1.0 - b1) * g
            return nesterov / correction1 / (jnp.sqrt(v / correction2) + eps)

        return jax.tree.map(direction, mu, nu, updates), ScaleByNadamState(count, mu, nu)

    return optax.GradientTransformation(init, update)


def nadamw(learning_rate: optax.ScalarOrSchedule, b1: float = 0.9, b2: float = 0.999,
           eps: float = 1e-8, weight_decay: float = 0.0) -> optax.GradientTransformation:
    """AlgoPerf's NAdamW: the Nesterov-Adam direction, decoupled weight decay, the learning rate."""
    return optax.chain(
        scale_by_nadam(b1, b2, eps),
        optax.add_decayed_weights(weight_decay),
        optax.scale_by_learning_rate(learning_rate),
    )
