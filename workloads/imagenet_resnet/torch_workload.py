"""ResNet-50 in PyTorch with the reference's module tree and initialisation (25,557,032 parameters).

The reference (AlgoPerf's `imagenet_pytorch/models.py`) is torchvision's ResNet v1.5: the stride of
a bottleneck sits on its 3x3 convolution, and the projection shortcut is `downsample.conv` +
`downsample.bn`. Its initialisation differs from torchvision's: convolutions are LeCun-normal
(truncated at two standard deviations, as JAX's `lecun_normal`), the classifier is N(0, 0.01^2)
with zero bias, and the last BatchNorm scale of every bottleneck is `bn_init_scale` (0 in the base
workload, so each block starts as the identity; 8 in `imagenet_resnet_large_bn_init`).
"""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
from torch import nn

from workloads.imagenet_resnet.workload import ImagenetData
from workloads.torch_base import TorchWorkload


def trunc_normal_(tensor: torch.Tensor, std: float) -> None:
    """N(0, std^2) truncated to [-2 std, 2 std], by the inverse CDF (torch's classic formula).

    Current torch samples it by rejection, many full-size passes for a large layer; this is one.
    """
    cdf = (1.0 + math.erf(-2.0 / math.sqrt(2.0))) / 2.0  # Phi(-2)
    with torch.no_grad():
        tensor.uniform_(2 * cdf - 1, 1 - 2 * cdf).erfinv_().mul_(std * math.sqrt(2.0))
        tensor.clamp_(-2 * std, 2 * std)


def lecun_normal_(module: nn.Conv2d | nn.Linear) -> None:
    """JAX's `lecun_normal`: truncated normal of std sqrt(1 / fan_in) after truncation; bias 0."""
    fan_in, _ = nn.init._calculate_fan_in_and_fan_out(module.weight)
    # 0.8796... is the std of a unit normal truncated to [-2, 2]: dividing by it restores std.
    trunc_normal_(module.weight, math.sqrt(1.0 / fan_in) / 0.87962566103423978)
    if module.bias is not None:
        nn.init.zeros_(module.bias)


def activation(name: str) -> nn.Module:
    """The block activation of a variant; GELU is the tanh approximation, as the reference's."""
    if name == "relu":
        return nn.ReLU()
    if name == "silu":
        return nn.SiLU()
    if name == "gelu":
        return nn.GELU(approximate="tanh")
    raise ValueError(f"activation must be 'relu', 'silu' or 'gelu', got {name!r}")


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (strided) -> 1x1 x4, with a projection shortcut where the shape changes."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int, act: nn.Module) -> None:
        super().__init__()
        out = planes * self.expansion
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.act_fnc = act
        self.downsample: nn.Module | None = None
        if stride != 1 or inplanes != out:
            self.downsample = nn.Sequential(
                OrderedDict(
                    [
                        ("conv", nn.Conv2d(inplanes, out, 1, stride=stride, bias=False)),
                        ("bn", nn.BatchNorm2d(out)),
                    ]
                )
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act_fnc(self.bn1(self.conv1(x)))
        out = self.act_fnc(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.act_fnc(out + identity)


def stage(inplanes: int, planes: int, blocks: int, stride: int, act: nn.Module) -> nn.Sequential:
    """`blocks` bottlenecks of width `planes`; the first one strides and projects the shortcut."""
    layers = [Bottleneck(inplanes, planes, stride, act)]
    layers += [Bottleneck(planes * Bottleneck.expansion, planes, 1, act) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


class ResNet50(nn.Module):
    """ResNet-50: stem 7x7/2 + max-pool, stages of 3, 4, 6, 3 bottlenecks, global average pool, fc."""

    def __init__(
        self, num_classes: int = 1000, activation_name: str = "relu", bn_init_scale: float = 0.0
    ) -> None:
        super().__init__()
        act = activation(activation_name)
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.act_fnc = act
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = stage(64, 64, blocks=3, stride=1, act=act)
        self.layer2 = stage(256, 128, blocks=4, stride=2, act=act)
        self.layer3 = stage(512, 256, blocks=6, stride=2, act=act)
        self.layer4 = stage(1024, 512, blocks=3, stride=2, act=act)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512 * Bottleneck.expansion, num_classes)

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                lecun_normal_(m)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.normal_(self.fc.weight, std=1e-2)
        nn.init.zeros_(self.fc.bias)
        for m in self.modules():
            if isinstance(m, Bottleneck):
                nn.init.constant_(m.bn3.weight, bn_init_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.act_fnc(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class ImagenetResNetWorkload(ImagenetData, TorchWorkload):
    def build_model(self) -> nn.Module:
        return ResNet50(
            activation_name=str(self.options.get("activation", "relu")),
            bn_init_scale=float(self.options.get("bn_init_scale", 0.0)),
        )

    def is_output_params(self, param_key: str) -> bool:
        return param_key.removeprefix("module.") in ("fc.weight", "fc.bias")
