"""ImageNet ResNet-50: facts, parameter counts, the reference's initialisation, blocks, a train step."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from algoperf import spec
from algoperf.random_utils import prng_key
from workloads import registry
from workloads.imagenet_resnet.torch_workload import Bottleneck, ResNet50

# WORKLOADS.md: name -> (validation target, test target)
TARGETS = {
    "imagenet_resnet": (0.77431, 0.6560),
    "imagenet_resnet_silu": (0.75445, 0.6323),
    "imagenet_resnet_gelu": (0.76765, 0.6519),
    "imagenet_resnet_large_bn_init": (0.76526, 0.6423),
}


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_facts_are_the_table_s(name):
    info = registry.get(name)
    assert (info.validation_target, info.test_target) == TARGETS[name]
    assert (info.max_allowed_runtime_sec, info.step_hint, info.eval_period_time_sec) == (
        66_159,
        195_999,
        510,
    )
    assert (info.num_train_examples, info.num_validation_examples, info.num_test_examples) == (
        1_281_167,
        50_000,
        10_000,
    )
    # The reference rounds the validation size up to whole eval batches of 1,024.
    assert info.eval_batch_size == 1024 and info.num_eval_train_examples == 49 * 1024
    assert info.target_metric_name == "accuracy" and info.higher_is_better
    assert info.loss_type == spec.LossType.SOFTMAX_CROSS_ENTROPY
    assert info.n_params == {"pytorch": 25_557_032, "jax": 25_557_032}


def test_train_mean_and_stddev_are_the_imagenet_channel_statistics_in_pixel_units():
    workload = registry.load("imagenet_resnet", data="synthetic")
    assert workload.train_mean == pytest.approx((123.675, 116.28, 103.53))
    assert workload.train_stddev == pytest.approx((58.395, 57.12, 57.375))


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_parameter_count_is_the_table_s(name):
    workload = registry.load(name, data="synthetic")
    with torch.device("meta"):
        model = workload.build_model()
    assert sum(p.numel() for p in model.parameters()) == 25_557_032


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)
    return ResNet50()


def test_module_tree_has_the_reference_names(resnet):
    names = [n for n, _ in resnet.named_parameters()]
    assert names[:3] == ["conv1.weight", "bn1.weight", "bn1.bias"]
    assert names[-2:] == ["fc.weight", "fc.bias"]
    assert "layer2.0.downsample.conv.weight" in names and "layer4.2.bn3.weight" in names
    # ResNet v1.5: the 3x3 convolution carries the stride.
    assert resnet.layer2[0].conv2.stride == (2, 2) and resnet.layer2[0].conv1.stride == (1, 1)


def test_convolutions_are_truncated_lecun_normal(resnet):
    w = resnet.layer3[0].conv2.weight.detach()
    fan_in = w.shape[1] * w.shape[2] * w.shape[3]
    std = math.sqrt(1 / fan_in)
    assert float(w.std()) == pytest.approx(std, rel=0.02)
    assert float(w.abs().max()) <= 2 * std / 0.87962566103423978 + 1e-7


def test_classifier_is_normal_0_01_with_zero_bias_and_batch_norms_start_at_one(resnet):
    assert float(resnet.fc.weight.detach().std()) == pytest.approx(0.01, rel=0.02)
    assert not resnet.fc.bias.any()
    assert torch.all(resnet.layer1[0].bn1.weight == 1) and torch.all(
        resnet.layer1[0].downsample.bn.weight == 1
    )
    assert not resnet.layer1[0].bn1.bias.any()


@pytest.mark.parametrize("scale", [0.0, 8.0])
def test_the_last_batch_norm_scale_of_every_block_is_bn_init_scale(scale):
    model = ResNet50(bn_init_scale=scale)
    blocks = [m for m in model.modules() if isinstance(m, Bottleneck)]
    assert len(blocks) == 16
    for block in blocks:
        assert torch.all(block.bn3.weight == scale) and torch.all(block.bn1.weight == 1)


def test_a_zero_initialised_block_without_projection_is_the_activation_of_its_input():
    torch.manual_seed(0)
    for act in (nn.ReLU(), nn.SiLU(), nn.GELU(approximate="tanh")):
        block = Bottleneck(32, 8, 1, act)
        nn.init.zeros_(block.bn3.weight)
        block.eval()
        x = torch.randn(2, 32, 5, 5)
        torch.testing.assert_close(block(x), act(x))


@pytest.mark.parametrize(
    "name, kind",
    [
        ("imagenet_resnet", nn.ReLU),
        ("imagenet_resnet_silu", nn.SiLU),
        ("imagenet_resnet_gelu", nn.GELU),
    ],
)
def test_variants_use_their_activation_everywhere(name, kind):
    with torch.device("meta"):
        model = registry.load(name, data="synthetic").build_model()
    acts = [m for m in model.modules() if isinstance(m, (nn.ReLU, nn.SiLU, nn.GELU))]
    assert acts and all(isinstance(m, kind) for m in acts)
    if kind is nn.GELU:
        assert all(m.approximate == "tanh" for m in acts)


def test_output_params_are_the_classifier():
    workload = registry.load("imagenet_resnet", data="synthetic")
    assert workload.is_output_params("fc.weight") and workload.is_output_params("module.fc.bias")
    assert not workload.is_output_params("layer4.2.bn3.weight")


TINY = {"train": 4, "eval_train": 2, "validation": 2, "test": 2}  # ResNet-50 is slow on a CPU


@pytest.mark.slow
def test_forward_backward_and_eval_on_a_synthetic_batch():
    workload = registry.load("imagenet_resnet", data="synthetic")
    workload.synthetic_sizes = TINY
    model, _ = workload.init_model_fn(prng_key(0))
    batch = next(workload.build_input_queue(prng_key(1), "train", None, 2))
    logits, _ = workload.model_fn(model, batch, None, spec.ForwardPassMode.TRAIN, None, True)
    assert logits.shape == (2, 1000)
    loss = workload.loss_fn(batch["targets"], logits, label_smoothing=0.1)
    (loss["summed"] / loss["n_valid_examples"]).backward()
    assert model.conv1.weight.grad is not None and model.fc.weight.grad.abs().sum() > 0
    metrics = workload.eval_model(8, model, None, None, None, None, 0)
    assert metrics["validation/num_examples"] == 2 and metrics["test/num_examples"] == 2
    assert 0.0 <= metrics["validation/accuracy"] <= 1.0 and metrics["train/loss"] > 0


# Full-size forward passes (10 s each here): `make test-heavy`; the variants' blocks are compared
# with their JAX twins in `make test`.
@pytest.mark.heavy
@pytest.mark.parametrize(
    "name", ["imagenet_resnet_silu", "imagenet_resnet_gelu", "imagenet_resnet_large_bn_init"]
)
def test_variant_forward_pass(name):
    workload = registry.load(name, data="synthetic")
    workload.synthetic_sizes = TINY
    model, _ = workload.init_model_fn(prng_key(0))
    batch = workload.device_batch(
        {k: v[:2] for k, v in workload.split_arrays("validation").items()}
    )
    logits, _ = workload.model_fn(model, batch, None, spec.ForwardPassMode.EVAL, None, False)
    assert logits.shape == (2, 1000) and torch.isfinite(logits).all()
