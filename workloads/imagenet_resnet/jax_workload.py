"""ResNet-50 in JAX (flax linen): the PyTorch twin's network, in the reference's JAX param tree.

Names follow the reference's flax ResNet (`Conv_init`, `BatchNorm_init`,
`BottleneckResNetBlock_<i>` holding `Conv_0..2`, `BatchNorm_0..2`, `Conv_proj`, `BatchNorm_proj`,
and the head `Dense_0`), so submissions that address parameters by name work. The numbers are
the PyTorch twin's (`torch_workload.py`), which a parity test holds equal:

- Convolutions pad as PyTorch's do (3x3: one pixel on each side). The reference's flax model
  pads its strided 3x3 convolutions 'SAME' (nothing before, one pixel after), which shifts
  every strided window by one pixel against its PyTorch model; here both frameworks agree.
- Batch norm is PyTorch's: batch statistics in train mode, the running variance updated with
  the unbiased batch variance (flax's `nn.BatchNorm` uses the biased one), momentum 0.1
  (flax's 0.9), eps 1e-5. In train mode with `update_batch_norm=False` the batch statistics are
  used and the running ones left alone, as PyTorch's frozen batch norm does; the reference's
  flax model instead normalises with the running statistics there. `use_running_average_bn`
  (the reference's argument) forces one or the other.
- Initialisation: convolutions LeCun-normal truncated at two standard deviations (flax's
  `lecun_normal`, the twin's), batch-norm scale 1 and bias 0, the last scale of every block
  `bn_init_scale` (0; 8 in imagenet_resnet_large_bn_init), the head N(0, 0.01^2) with zero bias.

Inputs arrive NCHW from the shared numpy pipeline and are transposed to flax's NHWC here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from workloads.imagenet_resnet.workload import ImagenetData
from workloads.jax_base import JaxWorkload

BN_MOMENTUM = 0.9  # flax convention: running = momentum * running + (1 - momentum) * batch
BN_EPSILON = 1e-5


def activation(name: str) -> Callable[[Any], Any]:
    """The block activation of a variant; GELU is the tanh approximation, as the twin's."""
    if name == "relu":
        return nn.relu
    if name == "silu":
        return nn.silu
    if name == "gelu":
        return lambda x: nn.gelu(x, approximate=True)
    raise ValueError(f"activation must be 'relu', 'silu' or 'gelu', got {name!r}")


class BatchNorm(nn.Module):
    """PyTorch's BatchNorm2d over the channel (last) axis, in flax's variable layout.

    Variables: params `scale`, `bias`; batch_stats `mean`, `var` (flax's names). The running
    statistics change only when the `batch_stats` collection is mutable (the workload makes it
    so in train mode with `update_batch_norm=True`).
    """

    momentum: float = BN_MOMENTUM
    epsilon: float = BN_EPSILON
    scale_init: Callable[..., Any] = nn.initializers.ones

    @nn.compact
    def __call__(self, x: Any, train: bool, use_running_average: bool | None = None) -> Any:
        features = x.shape[-1]
        scale = self.param("scale", self.scale_init, (features,), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (features,), jnp.float32)
        ra_mean = self.variable("batch_stats", "mean", jnp.zeros, (features,), jnp.float32)
        ra_var = self.variable("batch_stats", "var", jnp.ones, (features,), jnp.float32)
        use_running = (not train) if use_running_average is None else use_running_average
        if use_running:
            mean, var = ra_mean.value, ra_var.value
        else:
            axes = tuple(range(x.ndim - 1))
            mean = jnp.mean(x, axes)
            var = jnp.mean(jnp.square(x - mean), axes)  # two passes, as PyTorch computes it
            if self.is_mutable_collection("batch_stats") and not self.is_initializing():
                n = x.size // features
                unbiased = var * (n / max(n - 1, 1))
                ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * mean
                ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * unbiased
        return (x - mean) * (scale * jax.lax.rsqrt(var + self.epsilon)) + bias


def _conv(features: int, kernel: int, stride: int, pad: int, name: str | None = None) -> nn.Conv:
    return nn.Conv(features, (kernel, kernel), (stride, stride), padding=[(pad, pad), (pad, pad)],
                   use_bias=False, kernel_init=nn.initializers.lecun_normal(), name=name)


class ResNetBlock(nn.Module):
    """The basic block (CIFAR's ResNet-18): 3x3 (strided) -> 3x3, projection where shapes change."""

    filters: int
    act: Callable[[Any], Any]
    strides: int = 1
    bn_init_scale: float = 0.0

    @nn.compact
    def __call__(self, x: Any, train: bool, use_running_average: bool | None = None) -> Any:
        def norm(y: Any, name: str, scale: float = 1.0) -> Any:
            return BatchNorm(scale_init=nn.initializers.constant(scale), name=name)(
                y, train, use_running_average)

        y = self.act(norm(_conv(self.filters, 3, self.strides, 1, "Conv_0")(x), "BatchNorm_0"))
        y = norm(_conv(self.filters, 3, 1, 1, "Conv_1")(y), "BatchNorm_1", self.bn_init_scale)
        if x.shape != y.shape or self.strides != 1:
            x = norm(_conv(self.filters, 1, self.strides, 0, "Conv_proj")(x), "BatchNorm_proj")
        return self.act(x + y)


class BottleneckResNetBlock(nn.Module):
    """1x1 -> 3x3 (strided) -> 1x1 x4, with a projection shortcut where the shape changes."""

    filters: int
    act: Callable[[Any], Any]
    strides: int = 1
    bn_init_scale: float = 0.0

    @nn.compact
    def __call__(self, x: Any, train: bool, use_running_average: bool | None = None) -> Any:
        def norm(y: Any, name: str, scale: float = 1.0) -> Any:
            return BatchNorm(scale_init=nn.initializers.constant(scale), name=name)(
                y, train, use_running_average)

        y = self.act(norm(_conv(self.filters, 1, 1, 0, "Conv_0")(x), "BatchNorm_0"))
        y = self.act(norm(_conv(self.filters, 3, self.strides, 1, "Conv_1")(y), "BatchNorm_1"))
        y = norm(_conv(4 * self.filters, 1, 1, 0, "Conv_2")(y), "BatchNorm_2", self.bn_init_scale)
        if x.shape != y.shape or self.strides != 1:
            x = norm(_conv(4 * self.filters, 1, self.strides, 0, "Conv_proj")(x), "BatchNorm_proj")
        return self.act(x + y)


class ResNet(nn.Module):
    """A ResNet: stem, residual stages (blocks `<BlockClass>_<i>`), global average pool, head.

    The ImageNet stem is a 7x7/2 convolution and a 3x3/2 max-pool; the CIFAR stem
    (`cifar_stem`) a 3x3/1 convolution without pooling, as the reference's CIFAR ResNet-18.
    """

    stage_sizes: tuple[int, ...] = (3, 4, 6, 3)
    block_cls: type[nn.Module] = BottleneckResNetBlock
    num_classes: int = 1000
    num_filters: int = 64
    activation_name: str = "relu"
    bn_init_scale: float = 0.0
    cifar_stem: bool = False

    @nn.compact
    def __call__(self, x: Any, train: bool, use_running_average_bn: bool | None = None) -> Any:
        act = activation(self.activation_name)
        x = jnp.transpose(x, (0, 2, 3, 1))  # the pipeline's NCHW -> NHWC
        if self.cifar_stem:
            x = _conv(self.num_filters, 3, 1, 1, "Conv_init")(x)
        else:
            x = _conv(self.num_filters, 7, 2, 3, "Conv_init")(x)
        x = act(BatchNorm(name="BatchNorm_init")(x, train, use_running_average_bn))
        if not self.cifar_stem:
            x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
        index = 0
        for i, size in enumerate(self.stage_sizes):
            for j in range(size):
                block = self.block_cls(  # type: ignore[call-arg]
                    self.num_filters * 2**i, act=act, strides=2 if i > 0 and j == 0 else 1,
                    bn_init_scale=self.bn_init_scale, name=f"{self.block_cls.__name__}_{index}")
                x = block(x, train, use_running_average_bn)
                index += 1
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(self.num_classes, kernel_init=nn.initializers.normal(1e-2),
                        name="Dense_0")(x)


class ImagenetResNetWorkload(ImagenetData, JaxWorkload):
    def build_model(self) -> nn.Module:
        return ResNet(
            activation_name=str(self.options.get("activation", "relu")),
            bn_init_scale=float(self.options.get("bn_init_scale", 0.0)),
        )

    def is_output_params(self, param_key: str) -> bool:
        return param_key == "Dense_0"
