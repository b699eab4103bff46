"""MNIST in JAX (flax linen): the reference's 784-128-10 MLP with a sigmoid hidden layer.

As in the reference's JAX workload, the layers keep flax's default initialisation (LeCun normal
kernels, zero biases); the reference's PyTorch twin uses PyTorch's defaults, so the two
frameworks start from different distributions there too (docs/differences_from_reference.md).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn

from workloads.jax_base import JaxWorkload
from workloads.mnist.workload import MnistData


class MnistMLP(nn.Module):
    @nn.compact
    def __call__(self, x: Any, train: bool) -> Any:
        x = x.reshape((x.shape[0], -1))
        x = nn.sigmoid(nn.Dense(128, name="Dense_0")(x))
        return nn.Dense(10, name="Dense_1")(x)


class MnistWorkload(MnistData, JaxWorkload):
    def build_model(self) -> nn.Module:
        return MnistMLP()

    def is_output_params(self, param_key: str) -> bool:
        return param_key == "Dense_1"
