"""SGD with heavy-ball or Nesterov momentum in JAX, linear warmup and cosine decay over step_hint:
the PyTorch baseline's `torch.optim.SGD` as an optax chain.

`torch.optim.SGD` adds the weight decay to the gradient before the momentum (coupled L2), keeps
buf = momentum * buf + g (no dampening) and steps along g + momentum * buf when Nesterov;
`optax.add_decayed_weights` followed by `optax.trace` is that same recursion.
"""

from __future__ import annotations

from typing import Any

import optax

from algoperf import spec
from submissions.jax_training import (
    data_selection,
    get_batch_size,
    hparam,
    init_state,
    schedule_of,
    update_params,
)

__all__ = ["get_batch_size", "init_optimizer_state", "update_params", "data_selection"]


def optimizer(hyperparameters: Any, schedule: optax.Schedule) -> optax.GradientTransformation:
    return optax.chain(
        optax.add_decayed_weights(hparam(hyperparameters, "weight_decay", 5e-4)),
        optax.trace(decay=1.0 - hparam(hyperparameters, "one_minus_beta1", 0.1),
                    nesterov=bool(hparam(hyperparameters, "nesterov", True))),
        optax.scale_by_learning_rate(schedule),
    )


def init_optimizer_state(
    workload: spec.Workload, model_params: spec.ParameterContainer,
    model_state: spec.ModelAuxiliaryState, hyperparameters: spec.Hyperparameters,
    rng: spec.RandomState,
) -> spec.OptimizerState:
    schedule = schedule_of(workload, hyperparameters, hparam(hyperparameters, "learning_rate", 0.1))
    return init_state(optimizer(hyperparameters, schedule), model_params)
