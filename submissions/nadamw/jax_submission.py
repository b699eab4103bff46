"""NAdamW, AlgoPerf's baseline, in JAX: `jax_optimizer.nadamw` with linear warmup and cosine decay
over step_hint, the same hyperparameters and schedule as the PyTorch baseline."""

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
from submissions.nadamw.jax_optimizer import nadamw

__all__ = ["get_batch_size", "init_optimizer_state", "update_params", "data_selection"]


def optimizer(hyperparameters: Any, schedule: optax.Schedule) -> optax.GradientTransformation:
    return nadamw(
        learning_rate=schedule,
        b1=1.0 - hparam(hyperparameters, "one_minus_beta1", 0.1),
        b2=hparam(hyperparameters, "beta2", 0.999),
        eps=1e-8,
        weight_decay=hparam(hyperparameters, "weight_decay", 0.05),
    )


def init_optimizer_state(
    workload: spec.Workload, model_params: spec.ParameterContainer,
    model_state: spec.ModelAuxiliaryState, hyperparameters: spec.Hyperparameters,
    rng: spec.RandomState,
) -> spec.OptimizerState:
    schedule = schedule_of(workload, hyperparameters, hparam(hyperparameters, "learning_rate", 2e-3))
    return init_state(optimizer(hyperparameters, schedule), model_params)
