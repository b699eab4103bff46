"""MNIST-1D in PyTorch: a small 1-D CNN."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from workloads.mnist1d.workload import Mnist1dData
from workloads.torch_base import TorchWorkload


class Mnist1dCNN(nn.Module):
    """Three 1-D convolutions (the 2nd and 3rd strided) with ReLU, global max-pool, a linear head."""

    def __init__(self, channels: int = 32, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(1, channels, 5, padding=2)
        self.conv2 = nn.Conv1d(channels, 2 * channels, 3, stride=2, padding=1)
        self.conv3 = nn.Conv1d(2 * channels, 2 * channels, 3, stride=2, padding=1)
        self.head = nn.Linear(2 * channels, num_classes)

    def forward(self, x: torch.Tensor, dropout_rate: float | None = 0.0) -> torch.Tensor:
        x = F.relu(self.conv1(x))
        x = F.relu(self.conv2(x))
        x = F.relu(self.conv3(x))
        x = x.amax(-1)
        x = F.dropout(x, p=dropout_rate or 0.0, training=self.training)
        return self.head(x)


class Mnist1dWorkload(Mnist1dData, TorchWorkload):
    def build_model(self) -> nn.Module:
        return Mnist1dCNN()

    def is_output_params(self, param_key: str) -> bool:
        return param_key.removeprefix("module.").startswith("head.")
