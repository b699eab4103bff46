"""NAdamW, AlgoPerf's baseline, with linear warmup and cosine decay over step_hint.

Hyperparameters: learning_rate, one_minus_beta1, beta2, weight_decay, warmup_factor,
label_smoothing, dropout_rate, optional grad_clip.
"""

from __future__ import annotations

from typing import Any

from algoperf import spec
from submissions.nadamw.optimizer import NAdamW
from submissions.torch_training import (
    data_selection,
    get_batch_size,
    hparam,
    make_scheduler,
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
    optimizer = NAdamW(
        model_params.parameters(),
        lr=hparam(hyperparameters, "learning_rate", 2e-3),
        betas=(1.0 - hparam(hyperparameters, "one_minus_beta1", 0.1), hparam(hyperparameters, "beta2", 0.999)),
        eps=1e-8,
        weight_decay=hparam(hyperparameters, "weight_decay", 0.05),
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
