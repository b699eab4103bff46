"""PyTorch <-> flax weights of DLRM-small and its variants (see workloads/convert.py for layouts).

The PyTorch twin keeps the embedding table as 4 chunks of rows (`embedding_chunk_0..3`); flax
has the reference's one `embedding_table`. The table rules name every chunk and the one table,
and the conversion joins (or splits) the rows in order. Every other weight is a table entry:
PyTorch's Sequential indices (`bot_mlp.<i>`, `top_mlp.<i>`, with ReLU, LayerNorm and Dropout
taking indices too) against flax's `Dense_<k>` / `LayerNorm_<k>` in the order they are applied.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from workloads.convert import Rule, _get, _set
from workloads.convert import flax_to_torch as table_to_torch
from workloads.convert import torch_to_flax as table_to_flax

NUM_CHUNKS = 4
TABLE_PATH = "params/embedding_table"
BOTTOM = {False: (512, 256, 128), True: (256, 256, 256)}  # by `resnet`
TOP = {False: (1024, 1024, 512, 256, 1), True: (256, 256, 256, 256, 1)}

# Model options that give the same code a small table, for the CPU parity report.
PARITY_OPTIONS = {"vocab_size": 4096}


def _dense(torch_prefix: str, k: int) -> list[Rule]:
    return [Rule(f"{torch_prefix}.weight", f"params/Dense_{k}/kernel", "linear"),
            Rule(f"{torch_prefix}.bias", f"params/Dense_{k}/bias")]


def _norm(torch_prefix: str, k: int) -> list[Rule]:
    return [Rule(f"{torch_prefix}.weight", f"params/LayerNorm_{k}/scale"),
            Rule(f"{torch_prefix}.bias", f"params/LayerNorm_{k}/bias")]


def _dlrm_small(layer_norm: bool) -> list[Rule]:
    out: list[Rule] = []
    dense = norm = index = 0
    for _ in BOTTOM[False]:  # Linear, ReLU[, LayerNorm]
        out += _dense(f"bot_mlp.{index}", dense)
        dense += 1
        index += 2
        if layer_norm:
            out += _norm(f"bot_mlp.{index}", norm)
            norm += 1
            index += 1
    if layer_norm:
        out += _norm("embed_ln", norm)
        norm += 1
    index = 0
    top = TOP[False]
    for i, _ in enumerate(top):  # Linear[, ReLU[, LayerNorm]][, Dropout]
        out += _dense(f"top_mlp.{index}", dense)
        dense += 1
        index += 1
        if i < len(top) - 1:
            index += 1
            if layer_norm:
                out += _norm(f"top_mlp.{index}", norm)
                norm += 1
                index += 1
        if i == len(top) - 2:
            index += 1
    return out


def _dlrm_resnet() -> list[Rule]:
    bottom = [r for i in range(len(BOTTOM[True])) for r in _dense(f"bot_mlp.{i}.module.0", i)]
    top = [r for i in range(len(TOP[True]))
           for r in _dense(f"top_mlp.{i}.module.0", len(BOTTOM[True]) + i)]
    return bottom + top


def rules(options: dict[str, Any]) -> list[Rule]:
    table = [Rule(f"embedding_chunk_{i}", TABLE_PATH) for i in range(NUM_CHUNKS)]
    layers = _dlrm_resnet() if options.get("resnet") else _dlrm_small(bool(options.get("use_layer_norm")))
    return table + layers


def _layers(options: dict[str, Any]) -> list[Rule]:
    return [r for r in rules(options) if r.flax_path != TABLE_PATH]


def torch_to_flax(state_dict: Mapping[str, Any], options: dict[str, Any]) -> dict[str, Any]:
    out = table_to_flax(state_dict, _layers(options))
    chunks = [np.asarray(state_dict[f"embedding_chunk_{i}"]) for i in range(NUM_CHUNKS)]
    _set(out, TABLE_PATH, np.concatenate(chunks, axis=0))
    return out


def flax_to_torch(variables: Mapping[str, Any], options: dict[str, Any]) -> dict[str, np.ndarray]:
    out = table_to_torch(variables, _layers(options))
    for i, chunk in enumerate(np.split(np.asarray(_get(variables, TABLE_PATH)), NUM_CHUNKS, axis=0)):
        out[f"embedding_chunk_{i}"] = np.ascontiguousarray(chunk)
    return out
