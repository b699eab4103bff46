"""PyTorch <-> flax weights of the MNIST-1D CNN (see workloads/convert.py for the layouts)."""

from __future__ import annotations

from typing import Any

from workloads.convert import Rule

LAYERS = ("conv1", "conv2", "conv3")


def rules(options: dict[str, Any]) -> list[Rule]:
    return [
        *(Rule(f"{name}.weight", f"params/{name}/kernel", "conv") for name in LAYERS),
        *(Rule(f"{name}.bias", f"params/{name}/bias") for name in LAYERS),
        Rule("head.weight", "params/head/kernel", "linear"),
        Rule("head.bias", "params/head/bias"),
    ]
