"""Shared pieces of the JAX/PyTorch parity tests: the same weights in both models, one AdamW step
in each framework, and a sharded step against a single-device one.

A parity test builds both workloads, copies the PyTorch weights into the flax model through the
workload's conversion table, and checks outputs, losses and one optimizer step (issue: JAX
workloads equal to their PyTorch twins).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import torch

from algoperf import spec
from algoperf.random_utils import prng_key
from workloads.convert import Converter

# AdamW settings of the one-step parity check (both frameworks get the same). Adam's first step
# is g / (|g| + eps) per weight: with eps = 1e-8, a weight whose gradient is ~1e-8 turns float32
# summation noise in g (~1e-10, which differs between frameworks) into a 1% change of its update,
# so the check uses eps = 1e-6, where the step is still Adam's sign-like step for every gradient
# that matters and float32 noise stays below 1e-4 relative.
LR, B1, B2, EPS, WD = 1e-3, 0.9, 0.999, 1e-6, 0.01


def torch_state(model: torch.nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()}


def load_into_jax(model: torch.nn.Module, convert: Converter) -> tuple[Any, Any]:
    """(params, model_state) of the flax model holding the torch model's weights (and buffers)."""
    variables = jax.tree.map(jnp.asarray, convert.to_flax(torch_state(model)))
    params = variables.pop("params")
    return params, (variables or None)


def to_torch_batch(batch: dict[str, np.ndarray]) -> dict[str, Any]:
    return {k: torch.from_numpy(np.ascontiguousarray(v)) if isinstance(v, np.ndarray) else v
            for k, v in batch.items()}


def max_relative_difference(a: Any, b: Any) -> float:
    """max |a - b| / max |b|: the error relative to the output's scale."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))


def torch_adamw_step(workload: Any, model: torch.nn.Module, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The torch model's state after one AdamW step on `batch` (dropout off)."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, betas=(B1, B2), eps=EPS, weight_decay=WD)
    tb = to_torch_batch(batch)
    logits, _ = workload.model_fn(model, tb, None, spec.ForwardPassMode.TRAIN, None,
                                  update_batch_norm=True, dropout_rate=0.0)
    loss = workload.loss_fn(tb["targets"], logits, tb.get("weights"))
    (loss["summed"] / loss["n_valid_examples"]).backward()
    optimizer.step()
    return torch_state(model)


def jax_adamw_step(workload: Any, params: Any, model_state: Any, batch: dict[str, Any]) -> tuple[Any, Any]:
    """(params, model_state) after one optax AdamW step on `batch` (dropout off), jitted."""
    tx = optax.adamw(LR, b1=B1, b2=B2, eps=EPS, weight_decay=WD)

    @jax.jit
    def step(params: Any, model_state: Any, batch: dict[str, Any]) -> tuple[Any, Any]:
        def loss_fn(p: Any) -> tuple[Any, Any]:
            logits, new_state = workload.model_fn(p, batch, model_state, spec.ForwardPassMode.TRAIN,
                                                  jax.random.PRNGKey(0), update_batch_norm=True,
                                                  dropout_rate=0.0)
            loss = workload.loss_fn(batch["targets"], logits, batch.get("weights"))
            return loss["summed"] / loss["n_valid_examples"], new_state

        grads, new_state = jax.grad(loss_fn, has_aux=True)(params)
        updates, _ = tx.update(grads, tx.init(params), params)
        return optax.apply_updates(params, updates), new_state

    return step(params, model_state, batch)


def jax_params_as_torch(params: Any, model_state: Any, convert: Converter) -> dict[str, np.ndarray]:
    variables = {"params": jax.device_get(params), **(jax.device_get(model_state) or {})}
    return convert.to_torch(variables)


def on_one_device(tree: Any) -> Any:
    device = jax.devices()[0]
    return jax.tree.map(lambda x: jax.device_put(np.asarray(x), device), tree)


def assert_evals_agree(torch_workload: Any, jax_workload: Any, model: torch.nn.Module, convert: Converter,
                       batch_size: int, rtol: float = 1e-4) -> None:
    """Both workloads' `eval_model` on the same weights (the PyTorch model's, loaded into JAX)
    give the same metrics, key for key."""
    params, state = load_into_jax(model, convert)
    t = torch_workload.eval_model(batch_size, model, None, prng_key(1), None, None, 0)
    j = jax_workload.eval_model(batch_size, params, state, prng_key(1), None, None, 0)
    assert t.keys() == j.keys()
    for key in t:
        np.testing.assert_allclose(j[key], t[key], rtol=rtol, err_msg=key)
