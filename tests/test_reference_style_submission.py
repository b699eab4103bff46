"""An AlgoPerf-style PyTorch submission runs unchanged: reference imports, pytorch_setup,
absl logging, workload.param_shapes/metrics_logger, SequentialLR schedules, namedtuple hparams."""

from __future__ import annotations

from conftest import read_eval_rows, read_summary, run_cli, trial_path

REFERENCE_STYLE = '''
"""Written the way AlgoPerf's PyTorch baselines are written."""
import math

from absl import logging
import torch
import torch.distributed.nn as dist_nn
from torch.optim.lr_scheduler import CosineAnnealingLR, LinearLR, SequentialLR

from algoperf import spec
from algoperf.pytorch_utils import pytorch_setup

USE_PYTORCH_DDP = pytorch_setup()[0]


def init_optimizer_state(workload, model_params, model_state, hyperparameters, rng):
    del model_state, rng
    assert len(workload.param_shapes) == len(list(model_params.parameters()))
    optimizer_state = {
        "optimizer": torch.optim.AdamW(
            model_params.parameters(), lr=hyperparameters.learning_rate,
            betas=(1.0 - hyperparameters.one_minus_beta1, hyperparameters.beta2),
            eps=1e-8, weight_decay=hyperparameters.weight_decay),
    }
    warmup_steps = int(hyperparameters.warmup_factor * workload.step_hint)
    warmup = LinearLR(optimizer_state["optimizer"], start_factor=1e-10, end_factor=1.0, total_iters=warmup_steps)
    cosine = CosineAnnealingLR(optimizer_state["optimizer"], T_max=max(workload.step_hint - warmup_steps, 1))
    optimizer_state["scheduler"] = SequentialLR(
        optimizer_state["optimizer"], schedulers=[warmup, cosine], milestones=[warmup_steps])
    return optimizer_state


def update_params(workload, current_param_container, current_params_types, model_state,
                  hyperparameters, batch, loss_type, optimizer_state, eval_results, global_step,
                  rng, train_state=None):
    del current_params_types, loss_type, train_state, eval_results
    current_model = current_param_container
    current_model.train()
    optimizer_state["optimizer"].zero_grad()
    logits_batch, new_model_state = workload.model_fn(
        params=current_model, augmented_and_preprocessed_input_batch=batch,
        model_state=model_state, mode=spec.ForwardPassMode.TRAIN, rng=rng,
        update_batch_norm=True, dropout_rate=hyperparameters.dropout_rate)
    label_smoothing = (hyperparameters.label_smoothing if hasattr(hyperparameters, "label_smoothing") else 0.0)
    loss_dict = workload.loss_fn(label_batch=batch["targets"], logits_batch=logits_batch,
                                 mask_batch=batch.get("weights"), label_smoothing=label_smoothing)
    summed_loss, n_valid_examples = loss_dict["summed"], loss_dict["n_valid_examples"]
    if USE_PYTORCH_DDP:
        summed_loss = dist_nn.all_reduce(summed_loss)
        n_valid_examples = dist_nn.all_reduce(n_valid_examples)
    loss = summed_loss / n_valid_examples
    loss.backward()
    optimizer_state["optimizer"].step()
    optimizer_state["scheduler"].step()
    if global_step <= 10 or global_step % 500 == 0:
        with torch.no_grad():
            grad_norm = torch.norm(torch.stack([torch.norm(p.grad.detach(), 2)
                                                for p in current_model.parameters() if p.grad is not None]), 2)
        if workload.metrics_logger is not None:
            workload.metrics_logger.append_scalar_metrics(
                {"loss": loss.item(), "grad_norm": grad_norm.item()}, global_step)
        logging.info("%d) loss = %0.3f, grad_norm = %0.3f", global_step, loss.item(), grad_norm.item())
    return (optimizer_state, current_param_container, new_model_state)


def prepare_for_eval(workload, current_param_container, current_params_types, model_state,
                     hyperparameters, loss_type, optimizer_state, eval_results, global_step, rng):
    return (optimizer_state, current_param_container, model_state)


def get_batch_size(workload_name):
    if workload_name == "mnist1d":
        return 64
    raise ValueError(f"Unsupported workload name: {workload_name}.")


def data_selection(workload, input_queue, optimizer_state, current_param_container, model_state,
                   hyperparameters, global_step, rng):
    return next(input_queue)
'''


def test_reference_style_submission_runs_unchanged(tmp_path):
    sub = tmp_path / "ref" / "submission.py"
    sub.parent.mkdir()
    sub.write_text(REFERENCE_STYLE)
    hparams = ('{"learning_rate": 0.003, "one_minus_beta1": 0.1, "beta2": 0.999, "weight_decay": 0.01, '
               '"warmup_factor": 0.05, "dropout_rate": 0.0, "label_smoothing": 0.1}')
    out = run_cli("run", "-s", str(sub), "--hparams", hparams, "--data", "synthetic", "--max-steps", "12",
                  "--experiment-dir", str(tmp_path / "exp"), "--name", "ref", "--quiet")
    assert out.returncode == 0, out.stderr
    trial = trial_path(tmp_path / "exp", "ref")
    assert read_summary(trial)["status"] == "max_steps"
    assert read_eval_rows(trial)[-1]["global_step"] == "12"
    measurements = (trial / "measurements.csv").read_text()
    assert "grad_norm" in measurements.splitlines()[0]
