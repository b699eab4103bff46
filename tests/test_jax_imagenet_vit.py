"""ViT-S/16 and its variants in JAX equal their PyTorch twins (inputs 32 x 32: the same network,
4 patches). The base: conversion table, parameter count, outputs and loss on the same weights
(float32), one AdamW step (float64, see twins.py), a step sharded over 8 CPU devices equal to the
single-device step (2 of the 12 blocks). Each variant: its parameter count and its changed part
(the GLU MLP, the post-LN block, the MAP head with its fused key-value projection); the post-LN
model initialises. Heavy: every variant's whole model, the full-depth sharded step, the initial
distributions."""

from __future__ import annotations

import functools

import jax
import numpy as np
import pytest
import twins as tw

from workloads import registry
from workloads.imagenet_vit import convert as vit_convert
from workloads.imagenet_vit import jax_workload as jax_vit
from workloads.imagenet_vit import torch_workload as torch_vit
from workloads.imagenet_vit.workload import VIT_S16

NAME = "imagenet_vit"
VARIANTS = ("imagenet_vit_glu", "imagenet_vit_post_ln", "imagenet_vit_map")
COUNTS = {"imagenet_vit": 22_122_472, "imagenet_vit_glu": 50_452_456,
          "imagenet_vit_post_ln": 22_121_704, "imagenet_vit_map": 23_896_552}
WIDTH, MLP, HEADS = VIT_S16["width"], VIT_S16["mlp_dim"], VIT_S16["num_heads"]


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


def test_conversion_table_covers_every_parameter(pair: tw.Twins) -> None:
    tw.check_conversion_table(pair)


@pytest.mark.parametrize("name", (NAME, *VARIANTS))
def test_jax_model_has_the_reference_parameter_count(name: str) -> None:
    # imagenet_vit_post_ln: the reference's flax model fails to initialise; the count is its
    # PyTorch model's (no final LayerNorm), which the registry records for JAX too.
    assert tw.full_size_param_count(name, batch()) == registry.get(name).n_params["jax"] == COUNTS[name]


def test_same_weights_give_the_same_outputs_and_loss(pair: tw.Twins) -> None:
    outputs, loss = tw.output_and_loss_differences(pair, batch())
    assert outputs <= 1e-4 and loss <= 1e-4


def test_one_adamw_step_gives_the_same_parameters(pair: tw.Twins, jax_step) -> None:
    # 2e-5 measured: the twin computes the fixed position embedding in float32 (rounded to within
    # 8e-7 of the float64 one used here), and Adam's first step magnifies that for the MLP
    # biases, N(0, 1e-6^2) at init, whose gradients are near eps.
    diffs = tw.step_differences(jax_step, tw.torch_float64_step(pair, batch()))
    assert max(diffs.values()) <= 1e-4, sorted(diffs.items(), key=lambda kv: kv[1])[-3:]


def test_a_step_sharded_over_8_devices_equals_the_single_device_step() -> None:
    # ViT-S/16's layers with 2 of its 12 blocks (twins.sharded_and_single_steps: same
    # code, a cheaper compile, 8 replicas that fit in memory); the full depth is a heavy test.
    module = registry.load(NAME, "jax", data="synthetic").build_model().clone(depth=2)
    sharded, single = tw.sharded_and_single_steps(NAME, {}, module, batch())
    diffs = tw.tree_differences(sharded, single)
    assert max(diffs.values()) <= 1e-9, sorted(diffs.items(), key=lambda kv: kv[1])[-3:]


def _tokens(n: int = 4, length: int = 5) -> np.ndarray:
    return np.random.default_rng(0).standard_normal((n, length, WIDTH))


@pytest.mark.parametrize("options", [{"use_glu": True}, {"use_post_layer_norm": True}],
                         ids=["glu", "post_ln"])
def test_the_variant_encoder_block_equals_its_twin(options: dict) -> None:
    glu, post_ln = bool(options.get("use_glu")), bool(options.get("use_post_layer_norm"))
    diffs = tw.module_differences(
        torch_vit.Encoder1DBlock(WIDTH, MLP, HEADS, glu, post_ln), lambda m, t: m(t, 0.0),
        jax_vit.Encoder1DBlock(MLP, HEADS, glu, post_ln), lambda m, v, t: m.apply(v, t, True, 0.0),
        tw.sub_table(vit_convert.rules(options), "encoder.net.0", "Transformer/encoderblock_0"),
        _tokens(), vit_convert.table_to_flax, vit_convert.table_to_torch)
    assert max(diffs.values()) <= 1e-9, diffs


def test_the_map_head_equals_its_twin() -> None:
    diffs = tw.module_differences(
        torch_vit.MAPHead(WIDTH, MLP, HEADS), lambda m, t: m(t, 0.0),
        jax_vit.MAPHead(MLP, HEADS), lambda m, v, t: m.apply(v, t, True, 0.0),
        tw.sub_table(vit_convert.rules({"use_map": True}), "map", "MAPHead_0"),
        _tokens(), vit_convert.table_to_flax, vit_convert.table_to_torch)
    assert max(diffs.values()) <= 1e-9, diffs


def test_the_post_ln_model_initialises() -> None:
    # The reference's flax post-LN ViT raises while tracing its init; this one traces (the heavy
    # distribution test draws its values) and has no final LayerNorm.
    jw = registry.load("imagenet_vit_post_ln", "jax", data="synthetic")
    init = functools.partial(jw.build_model().init, train=False)
    variables = jax.eval_shape(init, tw.rngs(), batch(2)["inputs"])
    block = variables["params"]["Transformer"]["encoderblock_11"]
    assert set(block) == {"LayerNorm_0", "MultiHeadDotProductAttention_1", "LayerNorm_2", "MlpBlock_3"}
    assert "encoder_layernorm" not in variables["params"]["Transformer"]


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
