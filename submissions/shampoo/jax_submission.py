"""Shampoo with Adam grafting in JAX (AlgoPerf's external-tuning winner's recipe), warmup + cosine:
`jax_optimizer.shampoo`, the same hyperparameters and defaults as `pytorch_submission.py`.

Hyperparameters (defaults under self-tuning in brackets): learning_rate [2e-3], one_minus_beta1
[0.1], beta2 [0.995], epsilon [1e-8], weight_decay [0.05], warmup_factor [0.05],
precondition_frequency [100], max_preconditioner_dim [1024], start_preconditioning_step [1],
grafting ['adam'], nesterov [true], label_smoothing [0], dropout_rate [workload default],
grad_clip [none], preconditioner_dtype ['float32'; or 'bfloat16'].
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import optax

from algoperf import spec
from submissions.jax_training import (
    data_selection,
    get_batch_size,
    hparam,
    init_state,
    optional_hparam,
    schedule_of,
    update_params,
)
from submissions.shampoo.jax_optimizer import shampoo

__all__ = ["get_batch_size", "init_optimizer_state", "update_params", "data_selection"]


def optimizer(hyperparameters: Any, schedule: optax.Schedule,
              inverse_root_dtype: Any = jnp.float32) -> optax.GradientTransformation:
    """`inverse_root_dtype` is float32 as on the PyTorch side (the parity test asks for float64)."""
    beta2 = hparam(hyperparameters, "beta2", 0.995)
    epsilon = hparam(hyperparameters, "epsilon", 1e-8)
    return shampoo(
        learning_rate=schedule,
        weight_decay=hparam(hyperparameters, "weight_decay", 0.05),
        beta1=1.0 - hparam(hyperparameters, "one_minus_beta1", 0.1),
        beta2=beta2,
        epsilon=epsilon,
        precondition_frequency=int(hparam(hyperparameters, "precondition_frequency", 100)),
        start_preconditioning_step=int(hparam(hyperparameters, "start_preconditioning_step", 1)),
        max_preconditioner_dim=int(hparam(hyperparameters, "max_preconditioner_dim", 1024)),
        grafting=hparam(hyperparameters, "grafting", "adam"),
        grafting_beta2=beta2,
        grafting_epsilon=epsilon,
        nesterov=bool(hparam(hyperparameters, "nesterov", True)),
        inverse_root_dtype=inverse_root_dtype,
        preconditioner_dtype=getattr(jnp, optional_hparam(hyperparameters, "preconditioner_dtype", "float32")),
    )


def init_optimizer_state(
    workload: spec.Workload, model_params: spec.ParameterContainer,
    model_state: spec.ModelAuxiliaryState, hyperparameters: spec.Hyperparameters,
    rng: spec.RandomState,
) -> spec.OptimizerState:
    schedule = schedule_of(workload, hyperparameters, hparam(hyperparameters, "learning_rate", 2e-3))
    return init_state(optimizer(hyperparameters, schedule), model_params)
