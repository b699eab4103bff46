"""The JAX and PyTorch versions of a baseline, from the same weights on the same batches, in float64.

Run as a script (`python tests/baseline_parity.py NAME...`, what tests/test_jax_baselines_parity.py
does, in its own process: float64 JAX from the start and one CPU device, so the rest of the suite
stays float32 and the parity run compiles for one device only), it prints one JSON line: per
baseline the largest relative difference of each parameter, and the hyperparameter names each
framework read. Both frameworks run the submission's own `init_optimizer_state` and `update_params` on the
MNIST-1D CNN (synthetic data), the flax model holding the PyTorch model's initial weights
(`workloads/mnist1d/convert.py`), for a number of steps; the caller compares the parameters.
Hyperparameters are the baseline's tuned mnist1d point with a few overrides that exercise the
algorithm within 20 steps (root and inverse recomputations, factor updates) and keep it
deterministic (the exact Fisher instead of a Monte-Carlo sample).
"""

from __future__ import annotations

import functools
import importlib
import json
import os
import sys
import traceback
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import torch

from algoperf import jax_sharding_utils, tuning
from algoperf.random_utils import prng_key
from workloads import registry
from workloads.convert import converter

import parity
from conftest import REPO

BATCH = 32
# What a 20-step comparison needs beyond the tuned point.
# Roots and inverses are kept in float64 too (the baselines' default is float32 whatever the
# parameters' dtype).
OVERRIDES: dict[str, dict[str, Any]] = {
    "shampoo": {"precondition_frequency": 5,  # roots at steps 1, 6, 11, 16 (tuned: every 100)
                "preconditioner_dtype": "float64"},
    "kfac": {"fisher_type": "type2", "factor_frequency": 3, "inverse_frequency": 4,
             "preconditioner_dtype": "float64"},
}
# Baselines whose JAX side takes an option that the PyTorch side fixes elsewhere.
JAX_OPTIONS: dict[str, dict[str, Any]] = {"shampoo": {"inverse_root_dtype": jnp.float64}}
TORCH_OPTIONS: dict[str, dict[str, Any]] = {"shampoo": {"inverse_root_dtype": torch.float64}}


class Recorder:
    """Hyperparameters that remember every name read."""

    def __init__(self, values: dict[str, Any]) -> None:
        self._inner = tuning.as_hyperparameters(values)
        self.read: set[str] = set()

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        self.read.add(name)
        return getattr(self._inner, name)


def hyperparameters(name: str) -> dict[str, Any]:
    base = name.removesuffix("_self_tuning")
    tuned = json.loads((REPO / "submissions" / base / "tuned_hyperparameters.json").read_text())["mnist1d"]
    return {**tuned, **OVERRIDES.get(base, {})}


def batches(workload: Any, steps: int) -> list[dict[str, np.ndarray]]:
    stream = workload.train_batches(BATCH, 0)
    return [{k: (v.astype(np.float64) if v.dtype == np.float32 else v) for k, v in next(stream).items()}
            for _ in range(steps)]


def run_torch(name: str, steps: int) -> tuple[dict[str, np.ndarray], set[str]]:
    """The torch model's parameters after `steps` steps, and the hyperparameter names read."""
    module = importlib.import_module(f"submissions.{name}.pytorch_submission")
    torch.manual_seed(0)
    workload = registry.load("mnist1d", "pytorch", data="synthetic")
    model, state = workload.init_model_fn(prng_key(0))
    model.double()
    hp = Recorder(hyperparameters(name))
    opt_state = module.init_optimizer_state(workload, model, state, hp, 0)
    for group in opt_state["optimizer"].param_groups:
        group.update(TORCH_OPTIONS.get(name, {}))
    for step, batch in enumerate(batches(workload, steps)):
        opt_state, model, state = module.update_params(
            workload=workload, current_param_container=model, current_params_types=None,
            model_state=state, hyperparameters=hp, batch=parity.to_torch_batch(batch),
            loss_type=workload.loss_type, optimizer_state=opt_state, eval_results=[],
            global_step=step, rng=0)
    return parity.torch_state(model), hp.read


@functools.cache
def initial_weights() -> dict[str, np.ndarray]:
    torch.manual_seed(0)
    workload = registry.load("mnist1d", "pytorch", data="synthetic")
    model, _ = workload.init_model_fn(prng_key(0))
    return {k: v.astype(np.float64) for k, v in parity.torch_state(model).items()}


@functools.cache
def jax_workload() -> Any:
    """One flax workload for every baseline (its model is built once; the parameters come from
    the torch weights)."""
    workload = registry.load("mnist1d", "jax", data="synthetic")
    workload.init_model_fn(prng_key(0))
    return workload


def run_jax(name: str, steps: int) -> tuple[dict[str, np.ndarray], set[str]]:
    """The flax parameters (as a torch state_dict) after `steps` steps, and the names read."""
    module = importlib.import_module(f"submissions.{name}.jax_submission")
    workload = jax_workload()
    convert = converter(registry.load("mnist1d", "pytorch", data="synthetic"))
    variables = convert.to_flax(initial_weights())
    params = jax_sharding_utils.replicate(jax.tree.map(jnp.asarray, variables["params"]))
    hp = Recorder(hyperparameters(name))
    opt_state = module.init_optimizer_state(workload, params, None, hp, prng_key(0))
    if name in JAX_OPTIONS:  # rebuild the optimizer with the option the torch side also gets
        from submissions.jax_training import init_state, schedule_of

        schedule = schedule_of(workload, hp, hp.learning_rate)
        opt_state = init_state(module.optimizer(hp, schedule, **JAX_OPTIONS[name]), params)
    state = None
    for step, batch in enumerate(batches(workload, steps)):
        device_batch = jax_sharding_utils.shard_along_batch_dim({k: jnp.asarray(v) for k, v in batch.items()})
        opt_state, params, state = module.update_params(
            workload=workload, current_param_container=params, current_params_types=None,
            model_state=state, hyperparameters=hp, batch=device_batch, loss_type=workload.loss_type,
            optimizer_state=opt_state, eval_results=[], global_step=step, rng=prng_key(step))
    return parity.jax_params_as_torch(params, state, convert), hp.read


def compare(name: str, steps: int = 20) -> dict[str, Any]:
    """{'relative': {parameter: max relative difference}, 'read': {framework: names}} or {'error'}."""
    try:
        expected, torch_read = run_torch(name, steps)
        got, jax_read = run_jax(name, steps)
    except Exception:  # reported per baseline; the others still run
        return {"error": traceback.format_exc()}
    return {"relative": {k: parity.max_relative_difference(got[k], v) for k, v in expected.items()},
            "read": {"pytorch": sorted(torch_read), "jax": sorted(jax_read)}}


if __name__ == "__main__":
    if not jax.config.jax_enable_x64 or os.environ.get("XLA_FLAGS", "").find("device_count=1") < 0:
        sys.exit("run with JAX_ENABLE_X64=1 XLA_FLAGS=--xla_force_host_platform_device_count=1")
    torch.set_num_threads(1)
    print(json.dumps({name: compare(name) for name in sys.argv[1:]}))
