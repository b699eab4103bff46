"""The PyTorch training step the simple baselines (AdamW, NAdamW, SGD) share.

A submission's `update_params` is: forward in train mode, the workload's loss (with label
smoothing and mask), mean over valid examples (all-reduced under DDP), backward, optional
gradient clipping, one optimizer and schedule step. Kept here once so each baseline file holds
only what makes it different: its optimizer.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist

from algoperf import spec
from algoperf.pytorch_utils import pytorch_setup
from submissions.baseline_settings import BATCH_SIZES, get_batch_size, hparam, optional_hparam
from submissions.schedules import warmup_cosine

__all__ = ["BATCH_SIZES", "get_batch_size", "hparam", "optional_hparam", "make_scheduler", "training_step", "data_selection"]

USE_PYTORCH_DDP, RANK, DEVICE, N_GPUS = pytorch_setup()


def make_scheduler(optimizer: torch.optim.Optimizer, workload: spec.Workload, hyperparameters: Any) -> Any:
    step_hint = int(workload.step_hint * optional_hparam(hyperparameters, "step_hint_factor", 1.0))
    warmup = int(hparam(hyperparameters, "warmup_factor", 0.05) * step_hint)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: warmup_cosine(s, step_hint, warmup))


def training_step(
    workload: spec.Workload,
    model: torch.nn.Module,
    model_state: Any,
    hyperparameters: Any,
    batch: dict[str, Any],
    optimizer_state: dict[str, Any],
    global_step: int,
    rng: Any,
    defaults: dict[str, Any] | None = None,
) -> spec.UpdateReturn:
    """One step; `defaults` overrides the self-tuning defaults of dropout_rate and label_smoothing."""
    defaults = defaults or {}
    model.train()
    optimizer = optimizer_state["optimizer"]
    optimizer.zero_grad(set_to_none=True)
    logits, new_model_state = workload.model_fn(
        params=model,
        augmented_and_preprocessed_input_batch=batch,
        model_state=model_state,
        mode=spec.ForwardPassMode.TRAIN,
        rng=rng,
        update_batch_norm=True,
        dropout_rate=hparam(hyperparameters, "dropout_rate", defaults.get("dropout_rate")),
    )
    loss_dict = workload.loss_fn(
        label_batch=batch["targets"],
        logits_batch=logits,
        mask_batch=batch.get("weights"),
        label_smoothing=hparam(hyperparameters, "label_smoothing", defaults.get("label_smoothing", 0.0)),
    )
    summed, n_valid = loss_dict["summed"], loss_dict["n_valid_examples"]
    if USE_PYTORCH_DDP and dist.is_initialized():
        # DDP averages gradients over ranks; scaling by the world size makes that average the
        # gradient of the global mean loss (each rank's sum over the global valid count).
        n_valid = torch.as_tensor(n_valid, dtype=summed.dtype).detach().clone()
        dist.all_reduce(n_valid)
        loss = summed * dist.get_world_size() / n_valid
    else:
        loss = summed / n_valid
    loss.backward()
    clip = optional_hparam(hyperparameters, "grad_clip", None)
    if clip is not None:
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=clip)
    optimizer.step()
    optimizer_state["scheduler"].step()
    if global_step % 100 == 0 and workload.metrics_logger is not None:
        # Logging a loss costs a device sync; every 100 steps keeps it off the critical path.
        workload.metrics_logger.append_scalar_metrics(
            {"loss": loss.item(), "learning_rate": optimizer.param_groups[0]["lr"]}, global_step
        )
    return optimizer_state, model, new_model_state


def data_selection(
    workload: spec.Workload,
    input_queue: Any,
    optimizer_state: Any,
    current_param_container: Any,
    model_state: Any,
    hyperparameters: Any,
    global_step: int,
    rng: Any,
) -> dict[str, Any]:
    return next(input_queue)
