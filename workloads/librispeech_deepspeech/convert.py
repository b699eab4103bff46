"""PyTorch <-> flax weights of DeepSpeech (see workloads/convert.py for the layouts).

PyTorch's LSTM stacks the four gates (input, forget, cell, output) in the rows of `weight_ih`,
`weight_hh` and of two biases `bias_ih`, `bias_hh`; flax's `OptimizedLSTMCell` keeps one dense
layer per gate and input (`ii`, `if`, `ig`, `io`: kernels; `hi`, `hf`, `hg`, `ho`: kernels and the
gate's one bias). The two PyTorch biases only ever appear summed, so the flax bias is
b_ih + b_hh, and going back b_ih carries it with b_hh = 0: the same function, 12,288 parameters
fewer in flax (WORKLOADS.md's JAX count). Batch-norm running statistics are `batch_stats`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from workloads import convert
from workloads.convert import Rule

NUM_LSTM_LAYERS, NUM_FFN_LAYERS = 6, 3
GATES = ("i", "f", "g", "o")  # PyTorch's row order
DIRECTIONS = (("", "forward_rnn"), ("_reverse", "backward_rnn"))


def _norm(torch_prefix: str, flax_module: str, layernorm: bool) -> list[Rule]:
    """The norm of a block: layer norm (`scale`) or batch norm (PyTorch `weight`, statistics)."""
    if layernorm:
        t = f"{torch_prefix}.normalization_layer"
        return [Rule(f"{t}.scale", f"params/{flax_module}/LayerNorm_0/scale"),
                Rule(f"{t}.bias", f"params/{flax_module}/LayerNorm_0/bias")]
    t = f"{torch_prefix}.bn_normalization_layer"
    return [Rule(f"{t}.weight", f"params/{flax_module}/BatchNorm_0/scale"),
            Rule(f"{t}.bias", f"params/{flax_module}/BatchNorm_0/bias"),
            Rule(f"{t}.running_mean", f"batch_stats/{flax_module}/BatchNorm_0/mean"),
            Rule(f"{t}.running_var", f"batch_stats/{flax_module}/BatchNorm_0/var")]


def _dense(torch_prefix: str, flax_prefix: str) -> list[Rule]:
    return [Rule(f"{torch_prefix}.weight", f"{flax_prefix}/kernel", "linear"),
            Rule(f"{torch_prefix}.bias", f"{flax_prefix}/bias")]


def rules(options: dict[str, Any]) -> list[Rule]:
    """Everything but the LSTM weights (`lstm_pairs`, converted by `torch_to_flax`)."""
    layernorm = bool(options.get("layernorm_everywhere", False))
    p = "params/Subsample_0"
    out = [Rule("subsample.conv1.kernel", f"{p}/Conv2dSubsampling_0/kernel", "conv"),
           Rule("subsample.conv1.bias", f"{p}/Conv2dSubsampling_0/bias"),
           Rule("subsample.conv2.kernel", f"{p}/Conv2dSubsampling_1/kernel", "conv"),
           Rule("subsample.conv2.bias", f"{p}/Conv2dSubsampling_1/bias"),
           *_dense("subsample.lin", f"{p}/Dense_0")]
    for i in range(NUM_LSTM_LAYERS):
        out += _norm(f"lstms.{i}", f"BatchRNN_{i}", layernorm)
    for i in range(NUM_FFN_LAYERS):
        out += _norm(f"ffns.{i}", f"FeedForwardModule_{i}", layernorm)
        out += _dense(f"ffns.{i}.lin", f"params/FeedForwardModule_{i}/Dense_0")
    if bool(options.get("enable_decoder_layer_norm", True)):
        out += [Rule("ln.scale", "params/LayerNorm_0/scale"), Rule("ln.bias", "params/LayerNorm_0/bias")]
    return out + _dense("lin", "params/Dense_0")


def _cell(layer: int, direction: str) -> str:
    return f"params/BatchRNN_{layer}/LSTM_0/{direction}/cell"


def lstm_pairs() -> list[Rule]:
    """Which PyTorch LSTM tensors feed which flax parameters (layout "lstm": rows split by gate,
    transposed; both PyTorch biases feed the `h*` biases), for completeness checks."""
    out = []
    for i in range(NUM_LSTM_LAYERS):
        for suffix, direction in DIRECTIONS:
            t, f = f"lstms.{i}.lstm", _cell(i, direction)
            for g in GATES:
                out += [Rule(f"{t}.weight_ih_l0{suffix}", f"{f}/i{g}/kernel", "lstm"),
                        Rule(f"{t}.weight_hh_l0{suffix}", f"{f}/h{g}/kernel", "lstm"),
                        Rule(f"{t}.bias_ih_l0{suffix}", f"{f}/h{g}/bias", "lstm"),
                        Rule(f"{t}.bias_hh_l0{suffix}", f"{f}/h{g}/bias", "lstm")]
    return out


def covered(options: dict[str, Any]) -> list[Rule]:
    return rules(options) + lstm_pairs()


def torch_to_flax(state_dict: Mapping[str, Any], options: dict[str, Any]) -> dict[str, Any]:
    out = convert.torch_to_flax(state_dict, rules(options))
    for i in range(NUM_LSTM_LAYERS):
        for suffix, direction in DIRECTIONS:
            t, f = f"lstms.{i}.lstm", _cell(i, direction)
            w_ih = np.split(np.asarray(state_dict[f"{t}.weight_ih_l0{suffix}"]), 4)
            w_hh = np.split(np.asarray(state_dict[f"{t}.weight_hh_l0{suffix}"]), 4)
            bias = np.split(np.asarray(state_dict[f"{t}.bias_ih_l0{suffix}"])
                            + np.asarray(state_dict[f"{t}.bias_hh_l0{suffix}"]), 4)
            for g, wi, wh, b in zip(GATES, w_ih, w_hh, bias):
                convert._set(out, f"{f}/i{g}/kernel", wi.T)
                convert._set(out, f"{f}/h{g}/kernel", wh.T)
                convert._set(out, f"{f}/h{g}/bias", b)
    return out


def flax_to_torch(variables: Mapping[str, Any], options: dict[str, Any]) -> dict[str, np.ndarray]:
    out = convert.flax_to_torch(variables, rules(options))
    for i in range(NUM_LSTM_LAYERS):
        for suffix, direction in DIRECTIONS:
            t, f = f"lstms.{i}.lstm", _cell(i, direction)

            def stacked(name: str, transpose: bool, f: str = f) -> np.ndarray:
                parts = [np.asarray(convert._get(variables, f"{f}/{name.format(g)}")) for g in GATES]
                return np.ascontiguousarray(np.concatenate([p.T if transpose else p for p in parts]))

            out[f"{t}.weight_ih_l0{suffix}"] = stacked("i{}/kernel", True)
            out[f"{t}.weight_hh_l0{suffix}"] = stacked("h{}/kernel", True)
            out[f"{t}.bias_ih_l0{suffix}"] = stacked("h{}/bias", False)
            out[f"{t}.bias_hh_l0{suffix}"] = np.zeros_like(out[f"{t}.bias_ih_l0{suffix}"])
    return out
