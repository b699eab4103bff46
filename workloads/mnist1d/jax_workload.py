"""MNIST-1D in JAX (flax linen): the same 1-D CNN as `torch_workload.py`, the same numbers.

Layers are initialised as PyTorch initialises its Conv1d and Linear layers (weights and biases
uniform in +-1/sqrt(fan_in)), so both frameworks start from the same distribution; the
converter (`convert.py`) maps weights between the two exactly.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from algoperf import jax_utils
from workloads.jax_base import JaxWorkload
from workloads.mnist1d.workload import Mnist1dData


def torch_default_init(fan_in_axes: tuple[int, ...]) -> Any:
    """PyTorch's default Linear/Conv init, U(-1/sqrt(fan_in), 1/sqrt(fan_in)), for flax kernels
    (kaiming_uniform with a=sqrt(5) reduces to this bound)."""

    def init(key: Any, shape: tuple[int, ...], dtype: Any = jnp.float32) -> Any:
        fan_in = 1
        for axis in fan_in_axes:
            fan_in *= shape[axis]
        bound = 1.0 / fan_in**0.5
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def torch_default_bias(fan_in: int) -> Any:
    def init(key: Any, shape: tuple[int, ...], dtype: Any = jnp.float32) -> Any:
        bound = 1.0 / fan_in**0.5
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


class Mnist1dCNN(nn.Module):
    """Three 1-D convolutions (the 2nd and 3rd strided) with ReLU, global max-pool, a linear head."""

    channels: int = 32
    num_classes: int = 10

    @nn.compact
    def __call__(self, x: Any, train: bool, dropout_rate: float = 0.0) -> Any:
        x = jnp.transpose(x, (0, 2, 1))  # (N, C, L) as the pipeline gives it -> flax's (N, L, C)
        for name, cin, cout, size, stride, pad in (
            ("conv1", 1, self.channels, 5, 1, 2),
            ("conv2", self.channels, 2 * self.channels, 3, 2, 1),
            ("conv3", 2 * self.channels, 2 * self.channels, 3, 2, 1),
        ):
            conv = nn.Conv(cout, (size,), strides=(stride,), padding=[(pad, pad)], name=name,
                           kernel_init=torch_default_init((0, 1)),
                           bias_init=torch_default_bias(cin * size))
            x = nn.relu(conv(x))
        x = jnp.max(x, axis=1)
        x = jax_utils.Dropout()(x, deterministic=not train, rate=dropout_rate)
        return nn.Dense(self.num_classes, name="head", kernel_init=torch_default_init((0,)),
                        bias_init=torch_default_bias(2 * self.channels))(x)


class Mnist1dWorkload(Mnist1dData, JaxWorkload):
    def build_model(self) -> nn.Module:
        return Mnist1dCNN()

    def is_output_params(self, param_key: str) -> bool:
        return param_key == "head"
