"""Schedule-Free AdamW (Defazio et al. 2024), AlgoPerf's self-tuning winner.

Hyperparameters (the published AlgoPerf self-tuning defaults in brackets, used when
hyperparameters is None): learning_rate [0.0025], one_minus_beta1 [0.1], beta2
[0.9955159689799007], weight_decay [0.08121616522670176], warmup_factor [0.02] (of step_hint),
weight_lr_power [2], r [0.75], eps [1e-8], label_smoothing [0.2], dropout_rate [0.1],
grad_clip [none].

`prepare_for_eval` moves the model to the averaged point x and recomputes BatchNorm running
statistics there from the last training batches (the statistics collected at y do not belong to
x); the next `update_params` moves it back to y and restores y's statistics.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import torch

from algoperf import spec
from submissions.schedule_free.optimizer import AdamWScheduleFree
from submissions.torch_training import data_selection, get_batch_size, hparam, training_step

__all__ = ["get_batch_size", "init_optimizer_state", "update_params", "prepare_for_eval", "data_selection"]

DEFAULTS = {
    "learning_rate": 0.0025,
    "one_minus_beta1": 0.1,
    "beta2": 0.9955159689799007,
    "weight_decay": 0.08121616522670176,
    "warmup_factor": 0.02,
    "weight_lr_power": 2.0,
    "r": 0.75,
    "eps": 1e-8,
    "label_smoothing": 0.2,
    "dropout_rate": 0.1,
}
BN_BATCHES = 3  # training batches kept to recompute BatchNorm statistics at x


class _NoSchedule:
    """The runner's step() call on a schedule: Schedule-Free needs none (warmup is built in)."""

    def step(self) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


def init_optimizer_state(
    workload: spec.Workload,
    model_params: spec.ParameterContainer,
    model_state: spec.ModelAuxiliaryState,
    hyperparameters: spec.Hyperparameters,
    rng: spec.RandomState,
) -> spec.OptimizerState:
    optimizer = AdamWScheduleFree(
        model_params.parameters(),
        lr=hparam(hyperparameters, "learning_rate", DEFAULTS["learning_rate"]),
        betas=(
            1.0 - hparam(hyperparameters, "one_minus_beta1", DEFAULTS["one_minus_beta1"]),
            hparam(hyperparameters, "beta2", DEFAULTS["beta2"]),
        ),
        eps=hparam(hyperparameters, "eps", DEFAULTS["eps"]),
        weight_decay=hparam(hyperparameters, "weight_decay", DEFAULTS["weight_decay"]),
        warmup_steps=int(
            hparam(hyperparameters, "warmup_factor", DEFAULTS["warmup_factor"]) * workload.step_hint
        ),
        r=hparam(hyperparameters, "r", DEFAULTS["r"]),
        weight_lr_power=hparam(hyperparameters, "weight_lr_power", DEFAULTS["weight_lr_power"]),
    )
    return {"optimizer": optimizer, "scheduler": _NoSchedule(), "recent_batches": deque(maxlen=BN_BATCHES),
            "bn_at_y": None}


def _batch_norms(model: torch.nn.Module) -> list[torch.nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]


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
    optimizer = optimizer_state["optimizer"]
    if not optimizer.param_groups[0]["train_mode"]:
        optimizer.train_mode()
        saved = optimizer_state["bn_at_y"]
        if saved is not None:
            for bn, buffers in zip(_batch_norms(current_param_container), saved):
                bn.load_state_dict(buffers)
            optimizer_state["bn_at_y"] = None
    optimizer_state["recent_batches"].append(batch)
    return training_step(
        workload, current_param_container, model_state, hyperparameters, batch,
        optimizer_state, global_step, rng, defaults=DEFAULTS,
    )


def prepare_for_eval(
    workload: spec.Workload,
    current_param_container: spec.ParameterContainer,
    current_params_types: spec.ParameterTypeTree,
    model_state: spec.ModelAuxiliaryState,
    hyperparameters: spec.Hyperparameters,
    loss_type: spec.LossType,
    optimizer_state: spec.OptimizerState,
    eval_results: list[tuple[int, float]],
    global_step: int,
    rng: spec.RandomState,
) -> spec.UpdateReturn:
    optimizer = optimizer_state["optimizer"]
    if not optimizer.param_groups[0]["train_mode"]:
        return optimizer_state, current_param_container, model_state
    optimizer.eval_mode()
    norms = _batch_norms(current_param_container)
    if norms and optimizer_state["recent_batches"]:
        optimizer_state["bn_at_y"] = [{k: v.clone() for k, v in bn.state_dict().items()} for bn in norms]
        momenta = [bn.momentum for bn in norms]
        for bn in norms:
            bn.reset_running_stats()
            bn.momentum = None  # a cumulative average over the recomputation batches
        with torch.no_grad():
            for batch in optimizer_state["recent_batches"]:
                workload.model_fn(
                    params=current_param_container, augmented_and_preprocessed_input_batch=batch,
                    model_state=model_state, mode=spec.ForwardPassMode.TRAIN, rng=rng,
                    update_batch_norm=True, dropout_rate=0.0,
                )
        for bn, momentum in zip(norms, momenta):
            bn.momentum = momentum
    return optimizer_state, current_param_container, model_state
