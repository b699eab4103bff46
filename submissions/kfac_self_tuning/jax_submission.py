"""K-FAC in JAX under the self-tuning ruleset: the external recipe's defaults, no hyperparameters."""

from __future__ import annotations

from typing import Any

from algoperf import spec
from submissions.jax_training import data_selection, get_batch_size
from submissions.kfac import jax_submission as base

__all__ = ["get_batch_size", "init_optimizer_state", "update_params", "data_selection"]


def init_optimizer_state(workload: spec.Workload, model_params: spec.ParameterContainer,
                         model_state: spec.ModelAuxiliaryState, hyperparameters: spec.Hyperparameters,
                         rng: spec.RandomState) -> spec.OptimizerState:
    return base.init_optimizer_state(workload, model_params, model_state, None, rng)


def update_params(workload: spec.Workload, current_param_container: spec.ParameterContainer,
                  current_params_types: spec.ParameterTypeTree, model_state: spec.ModelAuxiliaryState,
                  hyperparameters: spec.Hyperparameters, batch: dict[str, Any],
                  loss_type: spec.LossType, optimizer_state: spec.OptimizerState,
                  eval_results: list[tuple[int, float]], global_step: int, rng: spec.RandomState,
                  train_state: dict[str, Any] | None = None) -> spec.UpdateReturn:
    return base.update_params(workload, current_param_container, current_params_types, model_state, None,
                              batch, loss_type, optimizer_state, eval_results, global_step, rng)
