"""CIFAR-10's ResNet-18 in JAX equals its PyTorch twin: conversion table, parameter count,
outputs and loss on the same weights (float32), one AdamW step (float64, see twins.py), and a
step sharded over 8 CPU devices equal to the single-device step (one block per stage; the full
depth and the initial distributions are heavy)."""

from __future__ import annotations

import numpy as np
import pytest
import twins as tw

from workloads import registry

NAME = "cifar"


def batch(n: int = 8) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"inputs": rng.standard_normal((n, 3, 32, 32), dtype=np.float32),
            "targets": rng.integers(0, 10, n), "weights": np.ones(n, np.float32)}


@pytest.fixture(scope="module")
def pair() -> tw.Twins:
    return tw.Twins(NAME, {}, batch())


@pytest.fixture(scope="module")
def jax_step(pair: tw.Twins) -> dict[str, np.ndarray]:
    return tw.jax_float64_step(pair, batch())


def test_conversion_table_covers_every_parameter_and_statistic(pair: tw.Twins) -> None:
    tw.check_conversion_table(pair)


def test_jax_model_has_the_reference_parameter_count() -> None:
    assert tw.full_size_param_count(NAME, batch()) == registry.get(NAME).n_params["jax"] == 11_173_962


@pytest.mark.heavy
def test_initial_weights_are_drawn_from_the_twin_distributions(pair: tw.Twins) -> None:
    assert tw.distribution_mismatches(pair, *pair.init_draw()) == []


def test_same_weights_give_the_same_outputs_and_loss(pair: tw.Twins) -> None:
    outputs, loss = tw.output_and_loss_differences(pair, batch())
    assert outputs <= 1e-4 and loss <= 1e-4


def test_one_adamw_step_gives_the_same_parameters_and_statistics(pair: tw.Twins, jax_step) -> None:
    diffs = tw.step_differences(jax_step, tw.torch_float64_step(pair, batch()))
    assert max(diffs.values()) <= 1e-4, sorted(diffs.items(), key=lambda kv: kv[1])[-3:]


def test_a_step_sharded_over_8_devices_equals_the_single_device_step() -> None:
    # ResNet-18's layers with one block per stage (twins.sharded_and_single_steps: same
    # code, a cheaper compile, 8 replicas that fit in memory); the full depth is a heavy test.
    module = registry.load(NAME, "jax", data="synthetic").build_model().clone(stage_sizes=(1, 1, 1, 1))
    sharded, single = tw.sharded_and_single_steps(NAME, {}, module, batch())
    diffs = tw.tree_differences(sharded, single)
    assert max(diffs.values()) <= 1e-9, sorted(diffs.items(), key=lambda kv: kv[1])[-3:]


@pytest.mark.heavy
def test_a_full_depth_step_sharded_over_8_devices_equals_the_single_device_step(pair: tw.Twins, jax_step) -> None:
    diffs = tw.step_differences(tw.jax_float64_step(pair, batch(), sharded=True), jax_step)
    assert max(diffs.values()) <= 1e-9, sorted(diffs.items(), key=lambda kv: kv[1])[-3:]
