"""PyTorch <-> flax weights of the CIFAR ResNet-18 (see workloads/convert.py for the layouts).

The table is ResNet-50's (workloads/imagenet_resnet/convert.py) with two basic blocks per stage:
torch's `layer<s>.<b>.conv1/conv2` are flax's `ResNetBlock_<i>/Conv_0/Conv_1`.
"""

from __future__ import annotations

from typing import Any

from workloads.convert import Rule
from workloads.imagenet_resnet.convert import resnet_rules


def rules(options: dict[str, Any]) -> list[Rule]:
    return resnet_rules((2, 2, 2, 2), "ResNetBlock", 2, first_stage_projects=False)
