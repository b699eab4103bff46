"""A submission that does nothing (scripts/bench_overhead.py measures the loop around it)."""

from typing import Any

_BATCH: dict[str, Any] = {}


def get_batch_size(workload_name: str) -> int:
    return 64


def init_optimizer_state(workload, model_params, model_state, hyperparameters, rng):  # type: ignore[no-untyped-def]
    return {}


def update_params(workload, current_param_container, current_params_types, model_state,  # type: ignore[no-untyped-def]
                  hyperparameters, batch, loss_type, optimizer_state, eval_results, global_step, rng,
                  train_state=None):
    return optimizer_state, current_param_container, model_state


def data_selection(workload, input_queue, optimizer_state, current_param_container, model_state,  # type: ignore[no-untyped-def]
                   hyperparameters, global_step, rng):
    return _BATCH
