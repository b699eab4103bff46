"""PyTorch <-> flax weights of ResNet-50 (see workloads/convert.py for the layouts).

Torch's `layer<s>.<b>` bottlenecks are flax's `BottleneckResNetBlock_<i>`, numbered through the
stages; `downsample.conv/bn` is `Conv_proj`/`BatchNorm_proj`. Batch-norm running statistics are
`batch_stats` (model_state). Torch's `num_batches_tracked` counters have no flax twin: PyTorch
reads them only when momentum is None (a cumulative average), which these models never use.
"""

from __future__ import annotations

from typing import Any

from workloads.convert import Rule

STAGES = (3, 4, 6, 3)


def batch_norm(torch_prefix: str, flax_prefix: str) -> list[Rule]:
    """A BatchNorm's affine parameters and running statistics."""
    return [
        Rule(f"{torch_prefix}.weight", f"params/{flax_prefix}/scale"),
        Rule(f"{torch_prefix}.bias", f"params/{flax_prefix}/bias"),
        Rule(f"{torch_prefix}.running_mean", f"batch_stats/{flax_prefix}/mean"),
        Rule(f"{torch_prefix}.running_var", f"batch_stats/{flax_prefix}/var"),
    ]


def conv(torch_prefix: str, flax_prefix: str) -> Rule:
    return Rule(f"{torch_prefix}.weight", f"params/{flax_prefix}/kernel", "conv")


def resnet_rules(stages: tuple[int, ...], block: str, convs: int, first_stage_projects: bool) -> list[Rule]:
    """A torchvision-style ResNet (`conv1`, `bn1`, `layer<s>`, `fc`) in the reference's flax tree.

    Every stage's first block but the first stage's has a projection shortcut; the first stage's
    has one where it widens the channels (`first_stage_projects`: the bottleneck's 64 -> 256).
    """
    out = [conv("conv1", "Conv_init"), *batch_norm("bn1", "BatchNorm_init")]
    index = 0
    for s, size in enumerate(stages):
        for b in range(size):
            t, f = f"layer{s + 1}.{b}", f"{block}_{index}"
            for c in range(convs):
                out += [conv(f"{t}.conv{c + 1}", f"{f}/Conv_{c}"),
                        *batch_norm(f"{t}.bn{c + 1}", f"{f}/BatchNorm_{c}")]
            if b == 0 and (s > 0 or first_stage_projects):
                out += [conv(f"{t}.downsample.conv", f"{f}/Conv_proj"),
                        *batch_norm(f"{t}.downsample.bn", f"{f}/BatchNorm_proj")]
            index += 1
    out += [Rule("fc.weight", "params/Dense_0/kernel", "linear"),
            Rule("fc.bias", "params/Dense_0/bias")]
    return out


def rules(options: dict[str, Any]) -> list[Rule]:
    return resnet_rules(STAGES, "BottleneckResNetBlock", 3, first_stage_projects=True)
