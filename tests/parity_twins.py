"""Parity helpers for workloads whose batches are not a flat dict of arrays (speech, WMT, OGBG).

`parity.py` converts a flat numpy batch itself; these models take nested or tupled inputs, so the
caller hands each framework the batch as that framework's workload lays it out
(`device_batch` on the PyTorch side; on the JAX side the numpy arrays in the JAX workload's
layout, placed on one device).
"""

from __future__ import annotations

import copy
import inspect
from typing import Any

import jax
import numpy as np
import torch

from algoperf import jax_sharding_utils, spec
from algoperf.random_utils import prng_key
from workloads import registry
from workloads.convert import converter

import parity


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


# ---- one AdamW step in float64 ------------------------------------------------------------------
# As tests/twins.py (the vision twins) does, the step checks run in float64: in float32, rounding
# alone moves a gradient of these models by more than the 1e-4 tolerance. Measured on the
# Conformer's first convolution bias: each float32 gradient (PyTorch, JAX jitted alone, JAX jitted
# with the optimizer update) is 3.3e-4 from the float64 one (1.7e-3 of the tensor's largest
# entry: ReLU units whose input is within rounding of 0 switch), and JAX's two float32 programs
# differ from each other by 6e-4 relative, so a float32 comparison cannot tell a wrong gradient
# from rounding. The AdamW settings are parity.py's.
def _float64(tree: Any) -> Any:
    def cast(x: Any) -> Any:
        if isinstance(x, torch.Tensor):
            return x.double() if x.is_floating_point() else x
        if isinstance(x, np.ndarray) and x.dtype == np.float32:
            return x.astype(np.float64)
        return x

    return jax.tree.map(cast, tree)


def torch_float64_step(workload: Any, model: torch.nn.Module, batch: dict[str, Any]) -> dict[str, np.ndarray]:
    """The torch model's state after one AdamW step in float64 (on a copy of the model), on a
    batch in the torch workload's layout (`device_batch`), dropout off."""
    model = copy.deepcopy(model).double()
    batch = _float64(batch)
    optimizer = torch.optim.AdamW(model.parameters(), lr=parity.LR, betas=(parity.B1, parity.B2),
                                  eps=parity.EPS, weight_decay=parity.WD)
    logits, _ = workload.model_fn(model, batch, None, spec.ForwardPassMode.TRAIN, None,
                                  update_batch_norm=True, dropout_rate=0.0)
    loss = workload.loss_fn(batch["targets"], logits, batch.get("weights"))
    (loss["summed"] / loss["n_valid_examples"]).backward()
    optimizer.step()
    return parity.torch_state(model)


def jax_float64_step(workload: Any, model: torch.nn.Module, convert: Any, batch: dict[str, Any],
                     placed_batch: Any = None) -> dict[str, np.ndarray]:
    """The flax model's state (as a torch state_dict) after one AdamW step in float64 from the
    torch model's weights, on a numpy batch in the JAX model's layout (see `jax_float64_update`)."""
    params, state = parity.load_into_jax(copy.deepcopy(model).double(), convert)
    new_params, new_state = jax_float64_update(workload, params, state, batch, placed_batch)
    return parity.jax_params_as_torch(new_params, new_state, convert)


def jax_float64_update(workload: Any, params: Any, model_state: Any, batch: dict[str, Any],
                       placed_batch: Any = None) -> tuple[Any, Any]:
    """(params, model_state) as numpy float64 after one AdamW step in float64: on one device, or,
    with `placed_batch` (a function placing the batch, e.g. the workload's `device_batch`), with
    the parameters replicated over every device."""
    with jax.enable_x64(True):
        params, model_state = _float64(jax.device_get((params, model_state)))
        batch = _float64(batch)
        if placed_batch is None:
            params, model_state, batch = parity.on_one_device((params, model_state, batch))
        else:
            params, model_state = jax_sharding_utils.replicate((params, model_state))
            batch = placed_batch(batch)
        new_params, new_state = parity.jax_adamw_step(workload, params, model_state, batch)
        devices = {d for leaf in jax.tree.leaves(new_params) for d in leaf.sharding.device_set}
        assert len(devices) == (1 if placed_batch is None else jax.device_count())
        return jax.device_get((new_params, new_state))


def relative_differences(got: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> dict[str, float]:
    """max |got - expected| / max |expected| of every array, by name."""
    assert set(got) == set(expected), sorted(set(got) ^ set(expected))
    return {k: parity.max_relative_difference(got[k], expected[k]) for k in expected}
