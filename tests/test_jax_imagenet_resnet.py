"""ImageNet ResNet-50 and its variants in JAX equal their PyTorch twins (inputs 32 x 32: the same
network, smaller maps). The base: conversion table, parameter count, outputs and loss on the same
weights (float32), one AdamW step (float64, see twins.py), a step sharded over 8 CPU devices
equal to the single-device step (one bottleneck per stage). Each variant: its parameter count and
its changed part (the block's activation, the last batch-norm scale). Heavy: every variant's
whole model, the full-depth sharded step, the initial distributions."""

from __future__ import annotations

import jax
import numpy as np
import pytest
import torch
import twins as tw

from workloads import registry
from workloads.imagenet_resnet import jax_workload as jax_resnet
from workloads.imagenet_resnet import torch_workload as torch_resnet
from workloads.imagenet_resnet.convert import rules

NAME = "imagenet_resnet"
VARIANTS = ("imagenet_resnet_silu", "imagenet_resnet_gelu", "imagenet_resnet_large_bn_init")


def batch(n: int = 8) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"inputs": rng.standard_normal((n, 3, 32, 32), dtype=np.float32),
            "targets": rng.integers(0, 1000, n), "weights": np.ones(n, np.float32)}


@pytest.fixture(scope="module")
def pair() -> tw.Twins:
    return tw.Twins(NAME, {}, batch())


@pytest.fixture(scope="module")
def jax_step(pair: tw.Twins) -> dict[str, np.ndarray]:
    return tw.jax_float64_step(pair, batch())


def test_conversion_table_covers_every_parameter_and_statistic(pair: tw.Twins) -> None:
    tw.check_conversion_table(pair)


@pytest.mark.parametrize("name", (NAME, *VARIANTS))
def test_jax_model_has_the_reference_parameter_count(name: str) -> None:
    assert tw.full_size_param_count(name, batch()) == registry.get(name).n_params["jax"] == 25_557_032


def test_same_weights_give_the_same_outputs_and_loss(pair: tw.Twins) -> None:
    outputs, loss = tw.output_and_loss_differences(pair, batch())
    assert outputs <= 1e-4 and loss <= 1e-4


def test_one_adamw_step_gives_the_same_parameters_and_statistics(pair: tw.Twins, jax_step) -> None:
    diffs = tw.step_differences(jax_step, tw.torch_float64_step(pair, batch()))
    assert max(diffs.values()) <= 1e-4, sorted(diffs.items(), key=lambda kv: kv[1])[-3:]


def test_a_step_sharded_over_8_devices_equals_the_single_device_step() -> None:
    # ResNet-50's layers with one bottleneck per stage (twins.sharded_and_single_steps: same
    # code, a cheaper compile, 8 replicas that fit in memory); the full depth is a heavy test.
    module = registry.load(NAME, "jax", data="synthetic").build_model().clone(stage_sizes=(1, 1, 1, 1))
    sharded, single = tw.sharded_and_single_steps(NAME, {}, module, batch())
    diffs = tw.tree_differences(sharded, single)
    assert max(diffs.values()) <= 1e-9, sorted(diffs.items(), key=lambda kv: kv[1])[-3:]


@pytest.mark.parametrize("activation", ["silu", "gelu"])
def test_the_variant_activation_block_equals_its_twin(activation: str) -> None:
    # layer2.0 / BottleneckResNetBlock_3: strided, with a projection shortcut.
    block = torch_resnet.Bottleneck(256, 128, 2, torch_resnet.activation(activation))
    flax_block = jax_resnet.BottleneckResNetBlock(128, act=jax_resnet.activation(activation), strides=2)
    x = np.random.default_rng(0).standard_normal((4, 256, 8, 8))
    diffs = tw.module_differences(
        block, lambda m, t: m(t),
        flax_block, lambda m, v, t: np.transpose(m.apply(v, np.transpose(t, (0, 2, 3, 1)), True), (0, 3, 1, 2)),
        tw.sub_table(rules({}), "layer2.0", "BottleneckResNetBlock_3"), x)
    assert max(diffs.values()) <= 1e-9, diffs


def test_large_bn_init_draws_every_block_with_last_scale_8() -> None:
    model = registry.load("imagenet_resnet_large_bn_init", "jax", data="synthetic").build_model()
    assert model.bn_init_scale == 8.0  # what ResNet hands every block
    block = jax_resnet.BottleneckResNetBlock(64, act=jax_resnet.activation("relu"), strides=2,
                                             bn_init_scale=model.bn_init_scale)
    x = np.zeros((2, 4, 4, 256), np.float32)
    params = jax.jit(block.init, static_argnums=2)(jax.random.PRNGKey(0), x, False)["params"]
    assert np.all(np.asarray(params["BatchNorm_2"]["scale"]) == 8.0)
    for other in ("BatchNorm_0", "BatchNorm_1", "BatchNorm_proj"):
        assert np.all(np.asarray(params[other]["scale"]) == 1.0)
    torch.manual_seed(0)
    twin = registry.load("imagenet_resnet_large_bn_init", "pytorch", data="synthetic").build_model()
    assert all(bool((b.bn3.weight == 8.0).all()) for b in twin.modules() if isinstance(b, torch_resnet.Bottleneck))


# ---- heavy: every variant's whole model, and the initial distributions --------------------------
@pytest.mark.heavy
@pytest.mark.parametrize("name", VARIANTS)
def test_variant_gives_the_same_outputs_loss_and_step(name: str) -> None:
    twins = tw.Twins(name, {}, batch())
    tw.check_conversion_table(twins)
    outputs, loss = tw.output_and_loss_differences(twins, batch())
    assert outputs <= 1e-4 and loss <= 1e-4
    diffs = tw.step_differences(tw.jax_float64_step(twins, batch()), tw.torch_float64_step(twins, batch()))
    assert max(diffs.values()) <= 1e-4, sorted(diffs.items(), key=lambda kv: kv[1])[-3:]


@pytest.mark.heavy
@pytest.mark.parametrize("name", (NAME, *VARIANTS))
def test_initial_weights_are_drawn_from_the_twin_distributions(name: str) -> None:
    twins = tw.Twins(name, {}, batch())
    assert tw.distribution_mismatches(twins, *twins.init_draw()) == []


@pytest.mark.heavy
def test_a_full_depth_step_sharded_over_8_devices_equals_the_single_device_step(pair: tw.Twins, jax_step) -> None:
    diffs = tw.step_differences(tw.jax_float64_step(pair, batch(), sharded=True), jax_step)
    assert max(diffs.values()) <= 1e-9, sorted(diffs.items(), key=lambda kv: kv[1])[-3:]
