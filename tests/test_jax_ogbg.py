"""OGBG in JAX equals its PyTorch twin: same outputs, loss and AdamW step on the same weights, for
the base model and every variant; graph batches shard across devices by graphs, and a step sharded
over 8 CPU devices equals the single-device step."""

from __future__ import annotations

import functools

import jax
import numpy as np
import parity_twins
import pytest
import torch

from algoperf import spec
from workloads import registry
from workloads.convert import check_complete, flatten
from workloads.ogbg.workload import GraphStream, collate

import parity

VARIANTS = ("ogbg", "ogbg_gelu", "ogbg_silu", "ogbg_model_size")


@functools.cache
def _twins(name: str) -> tuple:
    return parity_twins.twins(name)


def _batch(tw) -> dict:
    """Three molecules packed for a batch of 4 graphs (a padding graph and an empty one)."""
    return collate(tw.split_graphs("validation"), np.arange(3), 4)


@pytest.mark.parametrize("name", VARIANTS)
def test_conversion_table_covers_every_parameter_and_the_reference_count(name: str) -> None:
    _, jw, model, convert = _twins(name)
    params = parity_twins.jax_shapes(jw)["params"]
    check_complete(convert.rules(), model.state_dict(), ["params/" + p for p in flatten(params)])
    assert sum(x.size for x in jax.tree.leaves(params)) == registry.get(name).n_params["jax"]


# GELU and SiLU are the base model with another activation (a flag): their outputs are compared in
# `make test-heavy`; every variant's parameter tree and count above in `make test`.
@pytest.mark.parametrize("name", [n if n in ("ogbg", "ogbg_model_size") else
                                  pytest.param(n, marks=pytest.mark.heavy) for n in VARIANTS])
def test_same_weights_give_the_same_outputs_and_loss(name: str) -> None:
    tw, jw, model, convert = _twins(name)
    params, state = parity.load_into_jax(model, convert)
    batch = _batch(tw)
    tb = tw.device_batch(batch)
    t_logits, _ = tw.model_fn(model, tb, None, spec.ForwardPassMode.EVAL, None, False)
    j_logits = parity_twins.eval_outputs(jw, params, state, batch)
    assert parity.max_relative_difference(j_logits, t_logits.numpy()) <= 1e-4
    t_loss = tw.loss_fn(tb["targets"], t_logits, tb["weights"], label_smoothing=0.1)
    j_loss = jw.loss_fn(batch["targets"], j_logits, batch["weights"], label_smoothing=0.1)
    np.testing.assert_allclose(float(j_loss["summed"]), float(t_loss["summed"]), rtol=1e-4)
    assert float(j_loss["n_valid_examples"]) == float(t_loss["n_valid_examples"])


def _stacked_train_batch(jw) -> dict:
    """One training batch of 16 graphs as the stream stacks it: a packed batch per device."""
    return next(GraphStream(jw.split_graphs("train"), 16, seed=0, num_shards=jw.num_shards()))


def _as_one_batch(stacked: dict) -> dict:
    """The device batches of a stacked batch as one batch of all their graphs (node indices
    offset), the layout the PyTorch model takes in one process."""
    inputs = stacked["inputs"]
    devices, nodes_per_device = inputs["nodes"].shape[:2]
    offsets = (np.arange(devices) * nodes_per_device)[:, None]
    flat = {k: v.reshape(-1, *v.shape[2:]) for k, v in inputs.items()}
    for k in ("senders", "receivers"):
        flat[k] = (inputs[k] + offsets).reshape(-1)
    return {"inputs": flat, "targets": stacked["targets"].reshape(-1, 128),
            "weights": stacked["weights"].reshape(-1, 128)}


@functools.cache
def _steps(name: str) -> tuple:
    """(torch state, jax state) after one float64 AdamW step from the same weights on one stacked
    training batch (the torch model gets it as one batch of all 16 graphs), and the batch."""
    tw, jw, model, convert = _twins(name)
    batch = _stacked_train_batch(jw)
    expected = parity_twins.torch_float64_step(tw, model, tw.device_batch(_as_one_batch(batch)))
    return expected, parity_twins.jax_float64_step(jw, model, convert, batch), batch


@pytest.mark.parametrize("name", [
    "ogbg", *(pytest.param(n, marks=pytest.mark.heavy) for n in VARIANTS[1:])])
def test_one_adamw_step_gives_the_same_parameters(name: str) -> None:
    expected, got, _ = _steps(name)
    worst = parity_twins.relative_differences(got, expected)
    assert max(worst.values()) <= 1e-4, {k: v for k, v in worst.items() if v > 1e-4}


def test_graph_batches_are_sharded_by_device_batch() -> None:
    _, jw, *_ = _twins("ogbg")
    batch = _stacked_train_batch(jw)
    nodes = jw.device_batch(batch)["inputs"]["nodes"]
    assert len(nodes.sharding.device_set) == jax.device_count() == 8
    for shard in nodes.addressable_shards:  # each device holds exactly its own packed graphs
        (d,) = range(shard.index[0].start, shard.index[0].stop)
        np.testing.assert_array_equal(np.asarray(shard.data)[0], batch["inputs"]["nodes"][d])


def test_a_step_sharded_over_8_devices_equals_the_single_device_step() -> None:
    _, jw, model, convert = _twins("ogbg")
    _, single, batch = _steps("ogbg")
    sharded = parity_twins.jax_float64_step(jw, model, convert, batch, placed_batch=jw.device_batch)
    worst = parity_twins.relative_differences(sharded, single)
    assert max(worst.values()) <= 1e-8, {k: v for k, v in worst.items() if v > 1e-8}


@pytest.mark.heavy
def test_eval_of_jax_and_torch_agree_on_the_same_weights() -> None:
    tw, jw, model, convert = _twins("ogbg")
    parity.assert_evals_agree(tw, jw, model, convert, 16)


def test_loss_with_label_smoothing_against_numpy() -> None:
    _, jw, *_ = _twins("ogbg")
    rng = np.random.default_rng(0)
    logits = (rng.standard_normal((3, 128)) * 3).astype(np.float32)
    labels = (rng.random((3, 128)) > 0.5).astype(np.float32)
    mask = (rng.random((3, 128)) > 0.3).astype(np.float32)
    out = jw.loss_fn(labels, jax.numpy.asarray(logits), mask, label_smoothing=0.2)
    smoothed = 0.8 * labels + 0.2 / 128  # the reference smooths towards 1 / num_tasks
    p = 1 / (1 + np.exp(-logits.astype(np.float64)))
    bce = -(smoothed * np.log(p) + (1 - smoothed) * np.log(1 - p)) * mask
    np.testing.assert_allclose(np.asarray(out["per_example"]), bce, rtol=1e-5, atol=1e-6)
    assert float(out["n_valid_examples"]) == mask.sum()
    torch_out = registry.load("ogbg", data="synthetic").loss_fn(
        torch.from_numpy(labels), torch.from_numpy(logits), torch.from_numpy(mask), 0.2)
    np.testing.assert_allclose(float(out["summed"]), float(torch_out["summed"]), rtol=1e-6)
