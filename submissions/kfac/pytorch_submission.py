"""K-FAC (Martens & Grosse 2015) on Linear and Conv2d layers, Adam elsewhere, warmup + cosine.

Hyperparameters (defaults under self-tuning in brackets): learning_rate [1e-3], one_minus_beta1
(momentum = 1 - it) [0.1], damping [1e-3], factor_decay [0.95], inverse_frequency [50],
factor_frequency (steps between factor updates) [10], fisher_type ['mc'], approximation
['expand'], weight_decay [0.01], warmup_factor [0.05], label_smoothing [0],
dropout_rate [workload default], grad_clip [none], preconditioner_dtype ['float32';
'bfloat16' applies the inverses at half the cost where there are bf16 matrix units].
"""

from __future__ import annotations

from typing import Any

import torch

from algoperf import spec
from submissions.kfac.optimizer import KFAC
from submissions.torch_training import (
    data_selection,
    get_batch_size,
    hparam,
    make_scheduler,
    optional_hparam,
)

__all__ = ["get_batch_size", "init_optimizer_state", "update_params", "data_selection"]

# The Fisher's loss for each loss type; others (CTC, MAE) use the empirical Fisher.
FISHER_LOSS = {
    spec.LossType.SOFTMAX_CROSS_ENTROPY: "softmax_cross_entropy",
    spec.LossType.SIGMOID_CROSS_ENTROPY: "sigmoid_cross_entropy",
    spec.LossType.MEAN_SQUARED_ERROR: "mse",
}


def init_optimizer_state(
    workload: spec.Workload,
    model_params: spec.ParameterContainer,
    model_state: spec.ModelAuxiliaryState,
    hyperparameters: spec.Hyperparameters,
    rng: spec.RandomState,
) -> spec.OptimizerState:
    fisher = hparam(hyperparameters, "fisher_type", "mc")
    if workload.loss_type not in FISHER_LOSS:
        fisher = "empirical"
    optimizer = KFAC(
        model_params,
        lr=hparam(hyperparameters, "learning_rate", 1e-3),
        damping=hparam(hyperparameters, "damping", 1e-3),
        momentum=1.0 - hparam(hyperparameters, "one_minus_beta1", 0.1),
        weight_decay=hparam(hyperparameters, "weight_decay", 0.01),
        factor_decay=hparam(hyperparameters, "factor_decay", 0.95),
        inverse_frequency=int(hparam(hyperparameters, "inverse_frequency", 50)),
        fisher_type=fisher,
        approximation=hparam(hyperparameters, "approximation", "expand"),
        preconditioner_dtype=getattr(torch, optional_hparam(hyperparameters, "preconditioner_dtype", "float32")),
    )
    return {"optimizer": optimizer, "scheduler": make_scheduler(optimizer, workload, hyperparameters),
            "factor_frequency": int(hparam(hyperparameters, "factor_frequency", 10))}


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
    model = current_param_container
    model.train()
    kfac: KFAC = optimizer_state["optimizer"]
    kfac.zero_grad(set_to_none=True)
    update_factors = global_step % optimizer_state["factor_frequency"] == 0
    with kfac.capture(update_factors):
        logits, new_model_state = workload.model_fn(
            params=model, augmented_and_preprocessed_input_batch=batch, model_state=model_state,
            mode=spec.ForwardPassMode.TRAIN, rng=rng, update_batch_norm=True,
            dropout_rate=hparam(hyperparameters, "dropout_rate", None),
        )
        loss_dict = workload.loss_fn(
            label_batch=batch["targets"], logits_batch=logits, mask_batch=batch.get("weights"),
            label_smoothing=hparam(hyperparameters, "label_smoothing", 0.0),
        )
        loss = loss_dict["summed"] / loss_dict["n_valid_examples"]
        if update_factors and kfac.fisher_type != "empirical":
            kfac.fisher_backward(logits, FISHER_LOSS[workload.loss_type])
        loss.backward()
    clip = optional_hparam(hyperparameters, "grad_clip", None)
    if clip is not None:
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=clip)
    kfac.step()
    optimizer_state["scheduler"].step()
    if global_step % 100 == 0 and workload.metrics_logger is not None:
        workload.metrics_logger.append_scalar_metrics({"loss": loss.item()}, global_step)
    return optimizer_state, model, new_model_state
