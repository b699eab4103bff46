"""PyTorch <-> flax weights of the WMT Transformer (see workloads/convert.py for the layouts).

The PyTorch twin fuses its attention projections (self-attention `in_proj` = q, k, v; cross-
attention `q_proj` and `kv_proj` = k, v); flax keeps `query`, `key`, `value` and `out` per head
(`workloads/convert_heads.py`). The sinusoidal table `pos_encoder.pe`, a buffer of the PyTorch
model, is a constant flax computes: it is written back from the same formula.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from workloads import convert_heads
from workloads.convert import Rule
from workloads.convert_heads import HeadsRule
from workloads.wmt.positions import sinusoids
from workloads.wmt.workload import MAX_LENGTH

# Small dimensions on the same code paths (the PyTorch twin's test options), for CPU parity runs.
PARITY_OPTIONS = {"vocab_size": 40, "d_model": 16, "nhead": 2, "d_hid": 16, "nlayers": 2}
TORCH_CONSTANTS = ("pos_encoder.pe",)  # in the torch state_dict, computed by flax


def _norm(torch_prefix: str, flax_module: str) -> list[Rule]:
    return [Rule(f"{torch_prefix}.weight", f"params/{flax_module}/scale"),
            Rule(f"{torch_prefix}.bias", f"params/{flax_module}/bias")]


def _dense(torch_prefix: str, flax_module: str) -> list[Rule]:
    return [Rule(f"{torch_prefix}.weight", f"params/{flax_module}/kernel", "linear"),
            Rule(f"{torch_prefix}.bias", f"params/{flax_module}/bias")]


def _mlp(torch_layer: str, flax_block: str, glu: bool) -> list[Rule]:
    names = ("linear1", "linear_glu", "linear2") if glu else ("linear1", "linear2")
    return [r for i, n in enumerate(names)
            for r in _dense(f"{torch_layer}.{n}", f"{flax_block}/MlpBlock_0/Dense_{i}")]


def rules(options: dict[str, Any]) -> list[Rule]:
    """Everything but the attention projections (`heads_rules`)."""
    layers, glu = int(options.get("nlayers", 6)), bool(options.get("glu", False))
    pre_ln = bool(options.get("pre_ln", True))
    out = [Rule("shared_embedding.weight", "params/shared_embedding/embedding")]
    for i in range(layers):
        t, f = f"encoder.encoder.layers.{i}", f"encoder/encoderblock_{i}"
        out += _norm(f"{t}.norm1", f"{f}/LayerNorm_0") + _norm(f"{t}.norm2", f"{f}/LayerNorm_1")
        out += _mlp(t, f, glu)
        t, f = f"decoder.decoder.layers.{i}", f"decoder/encoderdecoderblock_{i}"
        for n in range(3):
            out += _norm(f"{t}.norm{n + 1}", f"{f}/LayerNorm_{n}")
        out += _mlp(t, f, glu)
    if pre_ln:
        out += _norm("encoder.encoder.norm", "encoder/encoder_layernorm")
        out += _norm("decoder.decoder.norm", "decoder/encoderdecoder_layernorm")
    return out


def heads_rules(options: dict[str, Any]) -> list[HeadsRule]:
    layers, heads = int(options.get("nlayers", 6)), int(options.get("nhead", 16))
    out = []
    for i in range(layers):
        for t, f in ((f"encoder.encoder.layers.{i}.self_attn",
                      f"params/encoder/encoderblock_{i}/MultiHeadDotProductAttention_0"),
                     (f"decoder.decoder.layers.{i}.self_attn",
                      f"params/decoder/encoderdecoderblock_{i}/MultiHeadDotProductAttention_0")):
            out.append(HeadsRule(f"{t}.in_proj.weight",
                                 (f"{f}/query/kernel", f"{f}/key/kernel", f"{f}/value/kernel"), heads))
            out.append(HeadsRule(f"{t}.out_proj.weight", (f"{f}/out/kernel",), heads, "out"))
        t = f"decoder.decoder.layers.{i}.multihead_attn"
        f = f"params/decoder/encoderdecoderblock_{i}/MultiHeadDotProductAttention_1"
        out.append(HeadsRule(f"{t}.q_proj.weight", (f"{f}/query/kernel",), heads))
        out.append(HeadsRule(f"{t}.kv_proj.weight", (f"{f}/key/kernel", f"{f}/value/kernel"), heads))
        out.append(HeadsRule(f"{t}.out_proj.weight", (f"{f}/out/kernel",), heads, "out"))
    return out


def covered(options: dict[str, Any]) -> list[Rule]:
    return convert_heads.covered(rules(options), heads_rules(options))


def torch_to_flax(state_dict: Mapping[str, Any], options: dict[str, Any]) -> dict[str, Any]:
    return convert_heads.torch_to_flax(state_dict, rules(options), heads_rules(options))


def flax_to_torch(variables: Mapping[str, Any], options: dict[str, Any]) -> dict[str, np.ndarray]:
    out = convert_heads.flax_to_torch(variables, rules(options), heads_rules(options))
    d_model = np.asarray(variables["params"]["shared_embedding"]["embedding"]).shape[1]
    out["pos_encoder.pe"] = sinusoids(MAX_LENGTH, d_model)[None].copy()
    return out
