"""PyTorch <-> flax weights of the fastMRI U-Net and its variants (see workloads/convert.py).

A block's convolutions sit at indices 0 and 4 of PyTorch's `conv_layers` sequence (convolution,
norm, activation, dropout, twice) and its layer norms (fastmri_layernorm) at 1 and 5; flax has
`Conv_0/1` and `LayerNorm_0/1`. PyTorch's last up block wraps the block and the final 1x1
convolution (`up_conv.<last>.0` and `.1`); flax's final convolution is the top-level `Conv_0`.
The transposed convolutions use the "convT" layout, checked against PyTorch by the parity tests.
"""

from __future__ import annotations

from typing import Any

from workloads.convert import Rule


def _block(torch_prefix: str, flax_prefix: str, layer_norm: bool) -> list[Rule]:
    out = []
    for i, (conv, norm) in enumerate(((0, 1), (4, 5))):
        out.append(Rule(f"{torch_prefix}.conv_layers.{conv}.weight", f"params/{flax_prefix}/Conv_{i}/kernel",
                        "conv"))
        if layer_norm:
            out += [Rule(f"{torch_prefix}.conv_layers.{norm}.weight", f"params/{flax_prefix}/LayerNorm_{i}/scale"),
                    Rule(f"{torch_prefix}.conv_layers.{norm}.bias", f"params/{flax_prefix}/LayerNorm_{i}/bias")]
    return out


def rules(options: dict[str, Any]) -> list[Rule]:
    pools = int(options.get("num_pool_layers", 4))
    layer_norm = bool(options.get("use_layer_norm"))
    out = [r for i in range(pools) for r in _block(f"down_sample_layers.{i}", f"ConvBlock_{i}", layer_norm)]
    out += _block("conv", f"ConvBlock_{pools}", layer_norm)
    for i in range(pools):
        out.append(Rule(f"up_transpose_conv.{i}.layers.0.weight",
                        f"params/TransposeConvBlock_{i}/ConvTranspose_0/kernel", "convT"))
        last = i == pools - 1
        out += _block(f"up_conv.{i}.0" if last else f"up_conv.{i}", f"ConvBlock_{pools + 1 + i}", layer_norm)
    out += [Rule(f"up_conv.{pools - 1}.1.weight", "params/Conv_0/kernel", "conv"),
            Rule(f"up_conv.{pools - 1}.1.bias", "params/Conv_0/bias")]
    return out
