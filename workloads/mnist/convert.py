"""PyTorch <-> flax weights of the MNIST MLP (see workloads/convert.py for the layouts)."""

from __future__ import annotations

from typing import Any

from workloads.convert import Rule


def rules(options: dict[str, Any]) -> list[Rule]:
    return [
        Rule("net.layer1.weight", "params/Dense_0/kernel", "linear"),
        Rule("net.layer1.bias", "params/Dense_0/bias"),
        Rule("net.layer2.weight", "params/Dense_1/kernel", "linear"),
        Rule("net.layer2.bias", "params/Dense_1/bias"),
    ]
