"""Criteo DLRM-small and its variants in JAX equal their PyTorch twins, with a 4,096-row table
(the `vocab_size` model option: the same code; the full 4,194,304-row model is only traced, for
its parameter count). Every model: conversion table (the twin's 4 table chunks are the
reference's one `embedding_table`), outputs and loss on the same weights (float32), one AdamW
step (float64, see twins.py). The base: a step sharded over 8 CPU devices, the table split by
rows, equals the single-device step."""

from __future__ import annotations

import numpy as np
import pytest
import twins as tw
from jax.sharding import PartitionSpec

from algoperf.random_utils import prng_key
from workloads import registry
from workloads.criteo1tb.convert import PARITY_OPTIONS

NAME = "criteo1tb"
ALL = ("criteo1tb", "criteo1tb_layernorm", "criteo1tb_resnet", "criteo1tb_embed_init")
COUNTS = {"criteo1tb": 539_267_457, "criteo1tb_layernorm": 539_275_137,
          "criteo1tb_resnet": 538_121_473, "criteo1tb_embed_init": 539_267_457}


def batch(n: int = 8) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    dense = rng.exponential(2.0, (n, 13))
    ids = rng.integers(0, 40_000_000, (n, 26))  # raw hashed ids: reduced mod the vocabulary
    return {"inputs": np.concatenate([dense, ids], 1).astype(np.float32),
            "targets": (rng.random(n) < 0.3).astype(np.float32), "weights": np.ones(n, np.float32)}


@pytest.fixture(scope="module", params=ALL)
def pair(request) -> tw.Twins:
    return tw.Twins(request.param, PARITY_OPTIONS, batch())


@pytest.mark.parametrize("name", ALL)
def test_full_size_jax_model_has_the_reference_parameter_count(name: str) -> None:
    assert tw.full_size_param_count(name, batch()) == registry.get(name).n_params["jax"] == COUNTS[name]


def test_conversion_table_covers_every_parameter(pair: tw.Twins) -> None:
    tw.check_conversion_table(pair)


def test_same_weights_give_the_same_outputs_and_loss(pair: tw.Twins) -> None:
    outputs, loss = tw.output_and_loss_differences(pair, batch())
    assert outputs <= 1e-4 and loss <= 1e-4


def test_one_adamw_step_gives_the_same_parameters(pair: tw.Twins) -> None:
    diffs = tw.step_differences(tw.jax_float64_step(pair, batch()), tw.torch_float64_step(pair, batch()))
    assert max(diffs.values()) <= 1e-4, sorted(diffs.items(), key=lambda kv: kv[1])[-3:]


def test_a_step_sharded_over_8_devices_equals_the_single_device_step() -> None:
    module = registry.load(NAME, "jax", data="synthetic", **PARITY_OPTIONS).build_model()
    sharded, single = tw.sharded_and_single_steps(NAME, PARITY_OPTIONS, module, batch())
    diffs = tw.tree_differences(sharded, single)
    assert max(diffs.values()) <= 1e-9, sorted(diffs.items(), key=lambda kv: kv[1])[-3:]


def test_the_table_is_one_parameter_split_by_rows_over_the_devices() -> None:
    workload = registry.load(NAME, "jax", data="synthetic", **PARITY_OPTIONS)
    params, _ = workload.init_model_fn(prng_key(0))
    table = params["embedding_table"]
    assert table.shape == (4096, 128)
    assert table.sharding.spec == PartitionSpec("batch")
    assert {s.data.shape for s in table.addressable_shards} == {(4096 // 8, 128)}


@pytest.mark.heavy
@pytest.mark.parametrize("name", ALL)
def test_initial_weights_are_drawn_from_the_twin_distributions(name: str) -> None:
    twins = tw.Twins(name, PARITY_OPTIONS, batch())
    assert tw.distribution_mismatches(twins, *twins.init_draw()) == []
