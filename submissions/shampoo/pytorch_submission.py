"""Shampoo with Adam grafting (AlgoPerf's external-tuning winner's recipe), warmup + cosine.

Hyperparameters (defaults under self-tuning in brackets): learning_rate [2e-3], one_minus_beta1
[0.1], beta2 [0.995], epsilon [1e-8], weight_decay [0.05], warmup_factor [0.05],
precondition_frequency [100], max_preconditioner_dim [1024], start_preconditioning_step [1],
grafting ['adam'], nesterov [true], label_smoothing [0], dropout_rate [workload default],
grad_clip [none], preconditioner_dtype ['float32'; 'bfloat16' applies the roots at half the
cost where there are bf16 matrix units].
"""

from __future__ import annotations

from typing import Any

import torch

from algoperf import spec
from submissions.shampoo.optimizer import Shampoo
from submissions.torch_training import (
    data_selection,
    get_batch_size,
    hparam,
    make_scheduler,
    optional_hparam,
    training_step,
)

__all__ = ["get_batch_size", "init_optimizer_state", "update_params", "data_selection"]


def init_optimizer_state(
    workload: spec.Workload,
    model_params: spec.ParameterContainer,
    model_state: spec.ModelAuxiliaryState,
    hyperparameters: spec.Hyperparameters,
    rng: spec.RandomState,
) -> spec.OptimizerState:
    optimizer = Shampoo(
        model_params.parameters(),
        lr=hparam(hyperparameters, "learning_rate", 2e-3),
        betas=(1.0 - hparam(hyperparameters, "one_minus_beta1", 0.1), hparam(hyperparameters, "beta2", 0.995)),
        epsilon=hparam(hyperparameters, "epsilon", 1e-8),
        weight_decay=hparam(hyperparameters, "weight_decay", 0.05),
        precondition_frequency=int(hparam(hyperparameters, "precondition_frequency", 100)),
        start_preconditioning_step=int(hparam(hyperparameters, "start_preconditioning_step", 1)),
        max_preconditioner_dim=int(hparam(hyperparameters, "max_preconditioner_dim", 1024)),
        grafting=hparam(hyperparameters, "grafting", "adam"),
        grafting_beta2=hparam(hyperparameters, "beta2", 0.995),
        grafting_epsilon=hparam(hyperparameters, "epsilon", 1e-8),
        nesterov=bool(hparam(hyperparameters, "nesterov", True)),
        preconditioner_dtype=getattr(torch, optional_hparam(hyperparameters, "preconditioner_dtype", "float32")),
    )
    return {"optimizer": optimizer, "scheduler": make_scheduler(optimizer, workload, hyperparameters)}


def update_params(
    workload: spec.Workload,
    current_param_container: spec.ParameterContainer,
    current_params_types: spec.ParameterTypeTree,
    model_state: spec.ModelAuxiliaryState,
    hyperparameters: spec.Hyperparameters,
    batch: dict[str, spec.Tensor],
    loss_type: spec.LossType,
    optimizer_state: spec.OptimizerState,
    eval_results: list[tuple[int, float]],
    global_step: int,
    rng: spec.RandomState,
    train_state: dict[str, Any] | None = None,
) -> spec.UpdateReturn:
    return training_step(
        workload, current_param_container, model_state, hyperparameters, batch,
        optimizer_state, global_step, rng,
    )
