"""MNIST-1D and MNIST in JAX equal their PyTorch twins: same outputs, losses and AdamW step on the
same weights; a step sharded over 8 CPU devices equals the single-device step."""

from __future__ import annotations

import jax
import numpy as np
import pytest
import torch

from algoperf import spec
from algoperf.random_utils import prng_key
from workloads import registry
from workloads.convert import check_complete, converter, flatten

import parity

WORKLOADS = ("mnist1d", "mnist")


def _pair(name: str) -> tuple:
    torch.manual_seed(0)
    tw = registry.load(name, "pytorch", data="synthetic")
    jw = registry.load(name, "jax", data="synthetic")
    model, _ = tw.init_model_fn(prng_key(0))
    params, state = jw.init_model_fn(prng_key(0))
    return tw, jw, model, params, state, converter(tw)


def _batch(workload, n: int = 32) -> dict[str, np.ndarray]:
    arrays = workload.split_arrays("validation")
    return {**{k: v[:n] for k, v in arrays.items()}, "weights": np.ones(n, np.float32)}


@pytest.mark.parametrize("name", WORKLOADS)
def test_conversion_table_covers_every_parameter(name: str) -> None:
    _, _, model, params, _, convert = _pair(name)
    check_complete(convert.rules(), model.state_dict(), ["params/" + p for p in flatten(params)])


@pytest.mark.parametrize("name", WORKLOADS)
def test_jax_model_has_the_reference_parameter_count(name: str) -> None:
    _, jw, _, params, _, _ = _pair(name)
    assert sum(np.size(x) for x in jax.tree.leaves(params)) == registry.get(name).n_params["jax"]


@pytest.mark.parametrize("name", WORKLOADS)
def test_same_weights_give_the_same_outputs_and_loss(name: str) -> None:
    tw, jw, model, _, _, convert = _pair(name)
    params, state = parity.load_into_jax(model, convert)
    batch = _batch(tw)
    tb = parity.to_torch_batch(batch)
    t_logits, _ = tw.model_fn(model, tb, None, spec.ForwardPassMode.EVAL, None, False)
    j_logits, _ = jw.model_fn(params, batch, state, spec.ForwardPassMode.EVAL, None, False)
    assert parity.max_relative_difference(j_logits, t_logits.detach().numpy()) <= 1e-5
    t_loss = tw.loss_fn(tb["targets"], t_logits, tb["weights"])
    j_loss = jw.loss_fn(batch["targets"], j_logits, batch["weights"])
    np.testing.assert_allclose(float(j_loss["summed"]), float(t_loss["summed"]), rtol=1e-5)
    assert float(j_loss["n_valid_examples"]) == float(t_loss["n_valid_examples"])


@pytest.mark.parametrize("name", WORKLOADS)
def test_one_adamw_step_gives_the_same_parameters(name: str) -> None:
    tw, jw, model, _, _, convert = _pair(name)
    params, state = parity.load_into_jax(model, convert)
    batch = _batch(tw)
    new_params, new_state = parity.jax_adamw_step(jw, params, state, batch)
    expected = parity.torch_adamw_step(tw, model, batch)
    got = parity.jax_params_as_torch(new_params, new_state, convert)
    for key, value in expected.items():
        assert parity.max_relative_difference(got[key], value) <= 1e-4, key


def test_a_step_sharded_over_8_devices_equals_the_single_device_step() -> None:
    assert jax.device_count() == 8
    _, jw, _, params, state, _ = _pair("mnist1d")
    batch = _batch(jw, 64)
    sharded = parity.jax_adamw_step(jw, params, state, jw.device_batch(batch))
    single = parity.jax_adamw_step(jw, parity.on_one_device(params), state, parity.on_one_device(batch))
    assert len(jax.tree.leaves(sharded[0])[0].sharding.device_set) == 8
    assert len(jax.tree.leaves(single[0])[0].sharding.device_set) == 1
    for a, b in zip(jax.tree.leaves(sharded[0]), jax.tree.leaves(single[0])):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-7)


def test_eval_of_jax_and_torch_agree_on_the_same_weights() -> None:
    tw, jw, model, _, _, convert = _pair("mnist1d")
    parity.assert_evals_agree(tw, jw, model, convert, 256, rtol=1e-5)
