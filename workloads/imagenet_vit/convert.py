"""PyTorch <-> flax weights of ViT-S/16 and its variants (see workloads/convert.py for layouts).

Two things a plain table cannot say, handled here next to it:
- flax's attention keeps heads apart: query/key/value kernels are (width, heads, head_dim) and
  biases (heads, head_dim), the output kernel (heads, head_dim, width); PyTorch's Linear layers
  are (width, width). The table maps them as "linear"; `torch_to_flax` then splits the heads.
- the MAP head's PyTorch attention fuses key and value into one (2 width, width) `kv_proj`
  (rows 0..width-1 the key); flax has separate `key` and `value`. Both rules name `kv_proj`, and
  the conversion takes (or puts back) its half.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from workloads.convert import Rule, _get, _set, to_flax_layout, to_torch_layout
from workloads.imagenet_vit.workload import VIT_S16

FUSED_HALF = {"key": 0, "value": 1}  # which half of the fused kv_proj each flax kernel is


def _linear(torch_prefix: str, flax_prefix: str) -> list[Rule]:
    return [Rule(f"{torch_prefix}.weight", f"params/{flax_prefix}/kernel", "linear"),
            Rule(f"{torch_prefix}.bias", f"params/{flax_prefix}/bias")]


def _norm(torch_prefix: str, flax_prefix: str) -> list[Rule]:
    return [Rule(f"{torch_prefix}.weight", f"params/{flax_prefix}/scale"),
            Rule(f"{torch_prefix}.bias", f"params/{flax_prefix}/bias")]


def _mlp(torch_prefix: str, flax_prefix: str, use_glu: bool) -> list[Rule]:
    names = ["linear1", "glu_linear", "linear2"] if use_glu else ["linear1", "linear2"]
    return [r for i, n in enumerate(names) for r in _linear(f"{torch_prefix}.{n}", f"{flax_prefix}/Dense_{i}")]


def rules(options: dict[str, Any]) -> list[Rule]:
    use_glu = bool(options.get("use_glu"))
    out = [Rule("conv_patch_extract.weight", "params/conv_patch_extract/kernel", "conv"),
           Rule("conv_patch_extract.bias", "params/conv_patch_extract/bias")]
    for i in range(VIT_S16["depth"]):
        t, f = f"encoder.net.{i}", f"Transformer/encoderblock_{i}"
        out += _norm(f"{t}.layer_norm0", f"{f}/LayerNorm_0")
        for name in ("query", "key", "value", "out"):
            out += _linear(f"{t}.self_attention1.{name}", f"{f}/MultiHeadDotProductAttention_1/{name}")
        out += _norm(f"{t}.layer_norm2", f"{f}/LayerNorm_2")
        out += _mlp(f"{t}.mlp3", f"{f}/MlpBlock_3", use_glu)
    if not options.get("use_post_layer_norm"):
        out += _norm("encoder.encoder_norm", "Transformer/encoder_layernorm")
    if options.get("use_map"):
        attention = "MAPHead_0/MultiHeadDotProductAttention_0"
        out.append(Rule("map.probe", "params/MAPHead_0/probe"))
        out += _linear("map.mha.q_proj", f"{attention}/query")
        out += _linear("map.mha.kv_proj", f"{attention}/key")
        out += _linear("map.mha.kv_proj", f"{attention}/value")
        out += _linear("map.mha.out_proj", f"{attention}/out")
        out += _norm("map.layer_norm", "MAPHead_0/LayerNorm_0")
        out += _mlp("map.mlp", "MAPHead_0/MlpBlock_0", use_glu=False)
    out += _linear("pre_logits", "pre_logits") + _linear("head", "head")
    return out


def _attention_part(rule: Rule) -> tuple[str, str] | None:
    """(projection name, leaf) of a rule into an attention module, else None."""
    *parents, projection, leaf = rule.flax_path.split("/")
    if parents and parents[-1].startswith("MultiHeadDotProductAttention"):
        return projection, leaf
    return None


def _head_shape(projection: str, leaf: str) -> tuple[int, ...]:
    width, heads = VIT_S16["width"], VIT_S16["num_heads"]
    if projection == "out":
        return (heads, width // heads, width) if leaf == "kernel" else (width,)
    return (width, heads, width // heads) if leaf == "kernel" else (heads, width // heads)


def torch_to_flax(state_dict: Mapping[str, Any], options: dict[str, Any]) -> dict[str, Any]:
    return table_to_flax(state_dict, rules(options))


def flax_to_torch(variables: Mapping[str, Any], options: dict[str, Any]) -> dict[str, np.ndarray]:
    return table_to_torch(variables, rules(options))


def _fused(rule: Rule) -> bool:
    return "kv_proj" in rule.torch_name


def table_to_flax(state_dict: Mapping[str, Any], table: list[Rule]) -> dict[str, Any]:
    """Flax variables from a PyTorch state_dict by `table` (all of `rules()`, or a sub-module's)."""
    out: dict[str, Any] = {}
    for rule in table:
        value = np.asarray(state_dict[rule.torch_name])
        part = _attention_part(rule)
        if part and _fused(rule):
            value = np.split(value, 2, axis=0)[FUSED_HALF[part[0]]]
        value = to_flax_layout(value, rule.layout)
        _set(out, rule.flax_path, value.reshape(_head_shape(*part)) if part else value)
    return out


def table_to_torch(variables: Mapping[str, Any], table: list[Rule]) -> dict[str, np.ndarray]:
    """A PyTorch state_dict from flax variables by `table`."""
    out: dict[str, np.ndarray] = {}
    halves: dict[str, list[np.ndarray]] = {}
    for rule in table:
        value = np.asarray(_get(variables, rule.flax_path))
        part = _attention_part(rule)
        if part:
            projection, leaf = part
            if leaf != "kernel":
                value = value.reshape(-1)
            elif projection == "out":  # (heads, head_dim, width) -> (width, width)
                value = value.reshape(-1, value.shape[-1])
            else:  # (width, heads, head_dim) -> (width, width)
                value = value.reshape(value.shape[0], -1)
        value = to_torch_layout(value, rule.layout)
        if part and _fused(rule):
            halves.setdefault(rule.torch_name, [None, None])[FUSED_HALF[part[0]]] = value
            continue
        out[rule.torch_name] = np.ascontiguousarray(value)
    for name, (key, value) in halves.items():
        out[name] = np.ascontiguousarray(np.concatenate([key, value], axis=0))
    return out
