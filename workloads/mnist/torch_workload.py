"""MNIST in PyTorch: the reference's 784-128-10 MLP with a sigmoid hidden layer."""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from workloads.mnist.workload import MnistData
from workloads.torch_base import TorchWorkload


class MnistMLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            OrderedDict(
                [("layer1", nn.Linear(784, 128)), ("layer1_sig", nn.Sigmoid()), ("layer2", nn.Linear(128, 10))]
            )
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.reshape(len(x), -1))


class MnistWorkload(MnistData, TorchWorkload):
    def build_model(self) -> nn.Module:
        return MnistMLP()

    def is_output_params(self, param_key: str) -> bool:
        return param_key.removeprefix("module.") in ("net.layer2.weight", "net.layer2.bias")
