"""Parity helpers for workloads whose batches are not a flat dict of arrays (speech, WMT, OGBG).

`parity.py` converts a flat numpy batch itself; these models take nested or tupled inputs, so the
caller hands each framework the batch as that framework's workload lays it out
(`device_batch` on the PyTorch side; on the JAX side the numpy arrays in the JAX workload's
layout, placed on one device). The AdamW settings are `parity.py`'s but for `EPS`.
"""

from __future__ import annotations

import inspect
from typing import Any

import jax
import numpy as np
import optax
import parity
import torch

from algoperf import spec
from algoperf.random_utils import prng_key
from workloads import registry
from workloads.convert import converter

# Adam's first step is g / (|g| + eps). These models have weights whose true gradient is a sum
# that cancels to ~0 (a dead ReLU unit's layer-norm bias, a padding frame's share): float32 leaves
# ~1e-9 of noise there, different in each framework, while the rest of the gradient agrees to
# ~4e-7 relative (measured on OGBG). With eps = 1e-6 that noise moves such a zero-initialised bias
# by up to 5e-4 of its step; eps = 1e-4 keeps it below 1e-4 and leaves the step sign-like for every
# gradient above 1e-3 of the largest.
EPS = 1e-4


def twins(name: str, **options: Any) -> tuple[Any, Any, torch.nn.Module, Any]:
    """(torch workload, jax workload, torch model, converter) of a workload built with extra
    model options; the torch model from seed 0, the flax module ready for `model_fn`."""
    torch.manual_seed(0)
    tw = registry.load(name, "pytorch", data="synthetic", **options)
    jw = registry.load(name, "jax", data="synthetic", **options)
    model, _ = tw.init_model_fn(prng_key(0))
    _set_up_without_init(jw)
    return tw, jw, model, converter(tw)


def _set_up_without_init(jw: Any) -> None:
    """What `init_model_fn` sets up for `model_fn`, without compiling the flax init: a parity test
    takes every weight from the torch model (`jax_shapes` checks the flax tree)."""
    jw._model = jw.build_model()
    jw._takes_dropout = "dropout_rate" in inspect.signature(jw._model.__call__).parameters


def jax_shapes(jw: Any) -> dict[str, Any]:
    """The flax model's variables as shapes (`jax.eval_shape`: nothing computed or allocated)."""
    model = jw.build_model()
    key = jax.random.PRNGKey(0)
    return jax.eval_shape(lambda k: model.init({"params": k, "dropout": k}, *jw.init_inputs(),
                                                train=False), key)


def eval_outputs(jw: Any, params: Any, model_state: Any, batch: dict[str, Any]) -> Any:
    """The flax model's eval-mode output on a batch, jitted (one compile instead of one per op)."""
    return jax.jit(lambda p, s, b: jw.model_fn(p, b, s, spec.ForwardPassMode.EVAL, None, False)[0])(
        params, model_state, batch)


def torch_adamw_step(workload: Any, model: torch.nn.Module, batch: dict[str, Any]) -> dict[str, np.ndarray]:
    """The torch model's state after one AdamW step on a torch-layout batch (dropout off)."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=parity.LR, betas=(parity.B1, parity.B2),
                                  eps=EPS, weight_decay=parity.WD)
    logits, _ = workload.model_fn(model, batch, None, spec.ForwardPassMode.TRAIN, None,
                                  update_batch_norm=True, dropout_rate=0.0)
    loss = workload.loss_fn(batch["targets"], logits, batch.get("weights"))
    (loss["summed"] / loss["n_valid_examples"]).backward()
    optimizer.step()
    return parity.torch_state(model)


def jax_adamw_step(workload: Any, params: Any, model_state: Any, batch: dict[str, Any]) -> tuple[Any, Any]:
    """(params, model_state) after one optax AdamW step (dropout off, jitted), with `EPS`."""
    tx = optax.adamw(parity.LR, b1=parity.B1, b2=parity.B2, eps=EPS, weight_decay=parity.WD)

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


def relative_differences(got: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> dict[str, float]:
    """max |got - expected| / max |expected| of every array, by name."""
    assert set(got) == set(expected), sorted(set(got) ^ set(expected))
    return {k: parity.max_relative_difference(got[k], expected[k]) for k in expected}
