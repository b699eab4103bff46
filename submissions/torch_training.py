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
from submissions.schedules import warmup_cosine

USE_PYTORCH_DDP, RANK, DEVICE, N_GPUS = pytorch_setup()

# Reference batch sizes of the AlgoPerf PyTorch baselines; the development workloads' ours.
BATCH_SIZES = {
    "criteo1tb": 262_144,
    "fastmri": 32,
    "imagenet_resnet": 1024,
    "imagenet_vit": 1024,
    "librispeech_conformer": 256,
    "librispeech_deepspeech": 256,
    "ogbg": 512,
    "wmt": 128,
    "mnist": 16,
    "mnist1d": 128,
    "cifar": 128,
}


def get_batch_size(workload_name: str) -> int:
    if workload_name not in BATCH_SIZES:
        raise ValueError(f"no batch size for workload {workload_name!r}")
    return BATCH_SIZES[workload_name]


def hparam(hyperparameters: Any, name: str, default: Any) -> Any:
    """A hyperparameter the submission needs: `default` under self-tuning (hyperparameters is None).

    Under external tuning the value comes from the search space and nowhere else: a name the
    space does not define raises (`algoperf.tuning.MissingHyperparameterError`, naming the
    search-space file), so a typo in a search space stops the trial instead of tuning nothing.
    """
    return default if hyperparameters is None else getattr(hyperparameters, name)


def optional_hparam(hyperparameters: Any, name: str, default: Any) -> Any:
    """A knob whose absence means "off" (`grad_clip`, as the reference baselines read it with
    `hasattr`): the search space's value if it defines one, else `default`."""
    return default if hyperparameters is None else getattr(hyperparameters, name, default)


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
