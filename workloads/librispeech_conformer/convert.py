"""PyTorch <-> flax weights of the Conformer (see workloads/convert.py for the layouts).

The PyTorch twin fuses the attention's query, key and value projections (`in_proj`, with
biases); flax keeps `query`, `key`, `value` and `out` per head (`workloads/convert_heads.py`).
Batch-norm running statistics are `batch_stats` (model_state) in flax. The positional
`inv_timescales` buffer of the PyTorch model is a constant (`positions.py`) the flax model reads:
it is written back from there.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from workloads import convert_heads
from workloads.convert import Rule
from workloads.convert_heads import HeadsRule
from workloads.librispeech_conformer.positions import inv_timescales

NUM_LAYERS, NUM_HEADS, ENCODER_DIM = 4, 8, 512
TORCH_CONSTANTS = ("subsample.pos_encode.inv_timescales",)


def _pair(torch_prefix: str, flax_prefix: str, names: tuple[str, str], layout: str = "same") -> list[Rule]:
    (t_weight, f_weight) = names
    return [Rule(f"{torch_prefix}.{t_weight}", f"{flax_prefix}/{f_weight}", layout),
            Rule(f"{torch_prefix}.bias", f"{flax_prefix}/bias")]


def _dense(torch_prefix: str, flax_prefix: str) -> list[Rule]:
    return _pair(torch_prefix, flax_prefix, ("weight", "kernel"), "linear")


def _norm(torch_prefix: str, flax_prefix: str) -> list[Rule]:
    return _pair(torch_prefix, flax_prefix, ("scale", "scale"))


def rules(options: dict[str, Any]) -> list[Rule]:
    """Everything but the fused attention projections (`heads_rules`)."""
    post_ln = bool(options.get("use_post_layer_norm", True))
    p = "params/Subsample_0"
    out = [*_pair("subsample.conv1", f"{p}/Conv2dSubsampling_0", ("kernel", "kernel"), "conv"),
           *_pair("subsample.conv2", f"{p}/Conv2dSubsampling_1", ("kernel", "kernel"), "conv"),
           *_dense("subsample.linear", f"{p}/Dense_0")]
    for i in range(NUM_LAYERS):
        t, f = f"conformers.{i}", f"params/ConformerBlock_{i}"
        for n, ff in enumerate(("ff1", "ff2")):
            out += _norm(f"{t}.{ff}.ln", f"{f}/FeedForwardModule_{n}/LayerNorm_0")
            out += _dense(f"{t}.{ff}.linear1", f"{f}/FeedForwardModule_{n}/Dense_0")
            out += _dense(f"{t}.{ff}.linear2", f"{f}/FeedForwardModule_{n}/Dense_1")
        attention = f"{f}/MultiHeadedSelfAttention_0"
        out += _norm(f"{t}.mhsa.ln", f"{attention}/LayerNorm_0")
        out += [Rule(f"{t}.mhsa.self_attention.out_proj.bias",
                     f"{attention}/MultiHeadDotProductAttention_0/out/bias"),
                Rule(f"{t}.mhsa.self_attention.qs.scale",
                     f"{attention}/MultiHeadDotProductAttention_0/QueryScaler_0/scale")]
        conv = f"{f}/ConvolutionBlock_0"
        out += _norm(f"{t}.conv.ln", f"{conv}/LayerNorm_0")
        for n, lin in enumerate(("lin1", "lin2", "lin3")):
            out += _dense(f"{t}.conv.{lin}", f"{conv}/Dense_{n}")
        out += [Rule(f"{t}.conv.conv1.weight", f"{conv}/Conv_0/kernel", "conv"),
                *_norm(f"{t}.conv.bn", f"{conv}/BatchNorm_0"),
                Rule(f"{t}.conv.bn.running_mean",
                     f"batch_stats/ConformerBlock_{i}/ConvolutionBlock_0/BatchNorm_0/mean"),
                Rule(f"{t}.conv.bn.running_var",
                     f"batch_stats/ConformerBlock_{i}/ConvolutionBlock_0/BatchNorm_0/var")]
        if post_ln:
            out += _norm(f"{t}.ln", f"{f}/LayerNorm_0")
    return out + _norm("ln", "params/LayerNorm_0") + _dense("lin", "params/Dense_0")


def heads_rules(options: dict[str, Any]) -> list[HeadsRule]:
    out = []
    for i in range(NUM_LAYERS):
        t = f"conformers.{i}.mhsa.self_attention"
        f = f"params/ConformerBlock_{i}/MultiHeadedSelfAttention_0/MultiHeadDotProductAttention_0"
        for kind in ("weight", "bias"):
            leaf = "kernel" if kind == "weight" else "bias"
            out.append(HeadsRule(f"{t}.in_proj.{kind}",
                                 tuple(f"{f}/{p}/{leaf}" for p in ("query", "key", "value")),
                                 NUM_HEADS))
        out.append(HeadsRule(f"{t}.out_proj.weight", (f"{f}/out/kernel",), NUM_HEADS, "out"))
    return out


def covered(options: dict[str, Any]) -> list[Rule]:
    return convert_heads.covered(rules(options), heads_rules(options))


def torch_to_flax(state_dict: Mapping[str, Any], options: dict[str, Any]) -> dict[str, Any]:
    return convert_heads.torch_to_flax(state_dict, rules(options), heads_rules(options))


def flax_to_torch(variables: Mapping[str, Any], options: dict[str, Any]) -> dict[str, np.ndarray]:
    out = convert_heads.flax_to_torch(variables, rules(options), heads_rules(options))
    out["subsample.pos_encode.inv_timescales"] = inv_timescales(ENCODER_DIM)[None, None, :].copy()
    return out
