"""CIFAR-10 in PyTorch: the reference's ResNet-18 for 32 x 32 images (11,173,962 parameters).

As the reference defines it: a 3 x 3 stride-1 stem with no max-pool, four stages of two basic
blocks (64, 128, 256, 512 channels; stages 2-4 start with stride 2 and a 1 x 1 projection
shortcut `downsample.conv` / `downsample.bn`), a 4 x 4 average pool and a linear head. Module
names follow the reference (`conv1`, `bn1`, `layer1` ... `layer4`, `fc`), so parameter names match.

Initialisation (the reference's): every convolution LeCun-normal, i.e. a normal of std
s = sqrt(1 / fan_in) / 0.8796 truncated at +-2 s (the reference's `pytorch_default_init`, which
draws `trunc_normal_(std=s, a=-2 s, b=2 s)`, so the truncated draw has std sqrt(1 / fan_in) as
JAX's `lecun_normal`), BatchNorm scale 1 and bias 0, the head's weight normal with std 0.01 and
bias 0, and the last BatchNorm scale of every block 0 (each block starts as the identity).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from workloads.cifar.workload import CifarData
from workloads.imagenet_resnet.torch_workload import trunc_normal_
from workloads.torch_base import TorchWorkload

# The standard deviation of a standard normal truncated to [-2, 2] (the LeCun-normal correction).
TRUNCATED_NORMAL_STDDEV = 0.87962566103423978


def lecun_normal_(conv: nn.Conv2d) -> None:
    """N(0, s^2) truncated at +-2 s (bounds relative to s, not torch's absolute default +-2).

    Drawn in one inverse-CDF pass (`trunc_normal_` of the ImageNet ResNet): the distribution of
    the reference's `nn.init.trunc_normal_(std=s, a=-2 s, b=2 s)`, without its rejection loop.
    """
    fan_in = conv.weight[0].numel()  # in_channels x kernel height x kernel width
    trunc_normal_(conv.weight, math.sqrt(1.0 / fan_in) / TRUNCATED_NORMAL_STDDEV)


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample: nn.Module | None = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential()
            self.downsample.add_module("conv", nn.Conv2d(cin, cout, 1, stride, bias=False))
            self.downsample.add_module("bn", nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        identity = x if self.downsample is None else self.downsample(x)
        return F.relu(out + identity)


class ResNet18(nn.Module):
    """The reference's CIFAR ResNet-18; `ResNet18(num_classes=10)` has 11,173,962 parameters."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.layer1 = self._stage(64, 64, 1)
        self.layer2 = self._stage(64, 128, 2)
        self.layer3 = self._stage(128, 256, 2)
        self.layer4 = self._stage(256, 512, 2)
        self.fc = nn.Linear(512, num_classes)
        self.reset_parameters()

    @staticmethod
    def _stage(cin: int, cout: int, stride: int) -> nn.Sequential:
        return nn.Sequential(BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1))

    def reset_parameters(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                lecun_normal_(m)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.normal_(self.fc.weight, std=1e-2)
        nn.init.zeros_(self.fc.bias)
        for m in self.modules():
            if isinstance(m, BasicBlock):
                nn.init.zeros_(m.bn2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = F.avg_pool2d(x, 4)  # the 4 x 4 maps of a 32 x 32 image: a global average
        return self.fc(torch.flatten(x, 1))


class CifarWorkload(CifarData, TorchWorkload):
    synthetic_sizes = {"train": 256, "eval_train": 64, "validation": 64, "test": 64}

    def build_model(self) -> nn.Module:
        return ResNet18(num_classes=10)

    def is_output_params(self, param_key: str) -> bool:
        return param_key.removeprefix("module.") in ("fc.weight", "fc.bias")
