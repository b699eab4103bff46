"""CIFAR-10 in JAX (flax linen): the reference's ResNet-18 for 32 x 32 images, as the PyTorch twin.

The network is the ImageNet ResNet module of `workloads/imagenet_resnet/jax_workload.py` with the
CIFAR stem (3x3 stride-1 convolution, no max-pool) and four stages of two basic blocks
(`ResNetBlock_<i>`, the reference's flax names), the global average of the final 4 x 4 maps and
a linear head `Dense_0`. Initialisation is the twin's: convolutions LeCun-normal truncated at two
standard deviations, batch-norm scale 1 and bias 0 except the last scale of every block (0), the
head N(0, 0.01^2) with zero bias. Batch norm is PyTorch's (see that module).
"""

from __future__ import annotations

import flax.linen as nn

from workloads.cifar.workload import CifarData
from workloads.imagenet_resnet.jax_workload import ResNet, ResNetBlock
from workloads.jax_base import JaxWorkload


class CifarWorkload(CifarData, JaxWorkload):
    # The PyTorch twin's synthetic split sizes (a ResNet-18 step is slow on a CPU).
    synthetic_sizes = {"train": 256, "eval_train": 64, "validation": 64, "test": 64}

    def build_model(self) -> nn.Module:
        return ResNet(stage_sizes=(2, 2, 2, 2), block_cls=ResNetBlock, num_classes=10,
                      cifar_stem=True)

    def is_output_params(self, param_key: str) -> bool:
        return param_key == "Dense_0"
