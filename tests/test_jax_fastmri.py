"""fastMRI's U-Net and its variants in JAX equal their PyTorch twins (32 x 32 images: the same
network, smaller maps). The base: conversion table (with the transposed convolutions' flipped
kernels), parameter count, outputs and loss on the same weights (float32), one AdamW step
(float64, see twins.py), a step sharded over 8 CPU devices equal to the single-device step (2 of
the 4 pooling levels). Each variant: its parameter count and its changed part. Heavy: every
variant's whole model, the full-depth sharded step, the same eval metrics from both frameworks
(SSIM by the shared numpy code), the initial distributions."""

from __future__ import annotations

import numpy as np
import pytest
import twins as tw

from algoperf.random_utils import prng_key
from workloads import registry
from workloads.fastmri import jax_workload as jax_unet
from workloads.fastmri import torch_workload as torch_unet
from workloads.fastmri.convert import rules

NAME = "fastmri"
VARIANTS = ("fastmri_model_size", "fastmri_tanh", "fastmri_layernorm")
COUNTS = {"fastmri": 7_756_097, "fastmri_model_size": 7_692_929, "fastmri_tanh": 7_756_097,
          "fastmri_layernorm": 7_761_985}


def batch(n: int = 8) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, 32, 32), dtype=np.float32)
    return {"inputs": x, "targets": (0.5 * x + 0.1 * rng.standard_normal(x.shape)).astype(np.float32),
            "weights": np.ones(n, np.float32)}


@pytest.fixture(scope="module")
def pair() -> tw.Twins:
    return tw.Twins(NAME, {}, batch())


@pytest.fixture(scope="module")
def jax_step(pair: tw.Twins) -> dict[str, np.ndarray]:
    return tw.jax_float64_step(pair, batch())


def test_conversion_table_covers_every_parameter(pair: tw.Twins) -> None:
    tw.check_conversion_table(pair)


@pytest.mark.parametrize("name", (NAME, *VARIANTS))
def test_jax_model_has_the_reference_parameter_count(name: str) -> None:
    assert tw.full_size_param_count(name, batch()) == registry.get(name).n_params["jax"] == COUNTS[name]


def test_same_weights_give_the_same_outputs_and_loss(pair: tw.Twins) -> None:
    outputs, loss = tw.output_and_loss_differences(pair, batch())
    assert outputs <= 1e-4 and loss <= 1e-4


def test_one_adamw_step_gives_the_same_parameters(pair: tw.Twins, jax_step) -> None:
    diffs = tw.step_differences(jax_step, tw.torch_float64_step(pair, batch()))
    assert max(diffs.values()) <= 1e-4, sorted(diffs.items(), key=lambda kv: kv[1])[-3:]


def test_a_step_sharded_over_8_devices_equals_the_single_device_step() -> None:
    # the U-Net's layers with 2 of its 4 pooling levels (twins.sharded_and_single_steps: same
    # code, a cheaper compile, 8 replicas that fit in memory); the full depth is a heavy test.
    module = registry.load(NAME, "jax", data="synthetic").build_model().clone(num_pool_layers=2)
    sharded, single = tw.sharded_and_single_steps(NAME, {}, module, batch())
    diffs = tw.tree_differences(sharded, single)
    assert max(diffs.values()) <= 1e-9, sorted(diffs.items(), key=lambda kv: kv[1])[-3:]


@pytest.mark.heavy
def test_eval_of_jax_and_torch_agree_on_the_same_weights(pair: tw.Twins) -> None:
    params, state = pair.loaded()
    rng = np.random.default_rng(2)
    small = {**batch(), "mean": rng.random(8, dtype=np.float32), "std": 1 + rng.random(8, dtype=np.float32),
             "volume_max": np.r_[4 + rng.random(7), 0.0].astype(np.float32)}  # one padding-like 0
    for workload in (pair.jax_workload, pair.torch_workload):  # 8 small slices for every split
        workload.synthetic_sizes = {"train": 8, "eval_train": 8, "validation": 8, "test": 8}
        workload.synthetic_split = lambda split: {k: v for k, v in small.items() if k != "weights"}
    args = (prng_key(1), None, None, 0)
    ours = pair.jax_workload.eval_model(8, params, state, *args)
    theirs = pair.torch_workload.eval_model(8, pair.torch_model, None, *args)
    assert ours.keys() == theirs.keys() and "validation/ssim" in ours
    for key in ours:
        np.testing.assert_allclose(ours[key], theirs[key], rtol=1e-4, err_msg=key)


@pytest.mark.parametrize("options", [{"use_tanh": True}, {"use_layer_norm": True}], ids=["tanh", "layernorm"])
def test_the_variant_conv_block_equals_its_twin(options: dict) -> None:
    tanh, layer_norm = bool(options.get("use_tanh")), bool(options.get("use_layer_norm"))
    x = np.random.default_rng(0).standard_normal((4, 32, 12, 12))
    diffs = tw.module_differences(
        torch_unet.ConvBlock(32, 64, tanh, layer_norm), lambda m, t: m(t, 0.0),
        jax_unet.ConvBlock(64, tanh, layer_norm), lambda m, v, t: _nchw(m.apply(v, _nhwc(t), True, 0.0)),
        tw.sub_table(rules(options), "down_sample_layers.1", "ConvBlock_1"), x)
    assert max(diffs.values()) <= 1e-9, diffs


def test_the_tanh_transposed_conv_block_equals_its_twin() -> None:
    x = np.random.default_rng(0).standard_normal((4, 64, 5, 6))
    diffs = tw.module_differences(
        torch_unet.TransposeConvBlock(64, 32, True), lambda m, t: m(t),
        jax_unet.TransposeConvBlock(32, True), lambda m, v, t: _nchw(m.apply(v, _nhwc(t))),
        tw.sub_table(rules({"use_tanh": True}), "up_transpose_conv.3", "TransposeConvBlock_3"), x)
    assert max(diffs.values()) <= 1e-9, diffs


def test_the_model_size_table_covers_its_three_pool_layers() -> None:
    twins = tw.Twins("fastmri_model_size", {}, batch(2))
    tw.check_conversion_table(twins)
    assert "ConvBlock_6" in twins.variable_shapes["params"] and "ConvBlock_7" not in twins.variable_shapes["params"]


def _nhwc(x):
    return x.transpose(0, 2, 3, 1)


def _nchw(x):
    return x.transpose(0, 3, 1, 2)


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
