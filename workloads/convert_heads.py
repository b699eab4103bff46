"""Attention projections between PyTorch's fused linear layers and flax's per-head `DenseGeneral`s.

PyTorch models here stack the query, key and value projections in one `nn.Linear` (rows q, then
k, then v: `in_proj` of (3d, d); WMT's cross-attention `kv_proj` of (2d, d)); flax's attention
keeps one `DenseGeneral` per projection with the heads as an axis: kernel (d, heads, d / heads),
bias (heads, d / heads); its output projection has kernel (heads, d / heads, d). A `HeadsRule`
says how one fused PyTorch weight (or bias) maps onto those flax arrays; `workloads/convert.py`'s
`Rule`s cover everything else (framework-free, numpy only).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from workloads import convert


@dataclass(frozen=True)
class HeadsRule:
    """`torch_name` (a weight or bias) <-> the flax arrays `flax_paths`.

    kind "in": the torch rows hold len(flax_paths) stacked projections, each (out, in) -> flax
    (in, heads, out / heads) (a bias (out,) -> (heads, out / heads)). kind "out": one projection
    whose input is the heads concatenated, (out, heads * d_head) -> flax (heads, d_head, out)
    (a bias is the same array in both).
    """

    torch_name: str
    flax_paths: tuple[str, ...]
    heads: int
    kind: str = "in"


def _to_flax(array: np.ndarray, rule: HeadsRule) -> list[np.ndarray]:
    is_bias = array.ndim == 1
    if rule.kind == "out":
        if is_bias:
            return [array]
        return [array.T.reshape(rule.heads, -1, array.shape[0])]
    parts = np.split(array, len(rule.flax_paths), axis=0)
    if is_bias:
        return [p.reshape(rule.heads, -1) for p in parts]
    return [p.T.reshape(p.shape[1], rule.heads, -1) for p in parts]


def _to_torch(arrays: list[np.ndarray], rule: HeadsRule) -> np.ndarray:
    if rule.kind == "out":
        (array,) = arrays
        return array if array.ndim == 1 else array.reshape(-1, array.shape[-1]).T
    if arrays[0].ndim == 2:  # biases (heads, d_head)
        return np.concatenate([a.reshape(-1) for a in arrays])
    return np.concatenate([a.reshape(a.shape[0], -1).T for a in arrays], axis=0)


def torch_to_flax(state_dict: Mapping[str, Any], rules: Iterable[convert.Rule],
                  heads_rules: Iterable[HeadsRule]) -> dict[str, Any]:
    """Flax variables from a torch state_dict (numpy values): the table, then the heads rules."""
    out = convert.torch_to_flax(state_dict, rules)
    for rule in heads_rules:
        if rule.torch_name not in state_dict:
            raise KeyError(f"torch state_dict has no {rule.torch_name!r} (rule for {rule.flax_paths})")
        for path, array in zip(rule.flax_paths, _to_flax(np.asarray(state_dict[rule.torch_name]), rule)):
            convert._set(out, path, array)
    return out


def flax_to_torch(variables: Mapping[str, Any], rules: Iterable[convert.Rule],
                  heads_rules: Iterable[HeadsRule]) -> dict[str, np.ndarray]:
    """A torch state_dict (numpy values) from flax variables."""
    out = convert.flax_to_torch(variables, rules)
    for rule in heads_rules:
        arrays = [np.asarray(convert._get(variables, p)) for p in rule.flax_paths]
        out[rule.torch_name] = np.ascontiguousarray(_to_torch(arrays, rule))
    return out


def covered(rules: Iterable[convert.Rule], heads_rules: Iterable[HeadsRule]) -> list[convert.Rule]:
    """Every (torch name, flax path) pair the rules map, as `Rule`s for `convert.check_complete`
    (a heads rule's pairs are listed, not applied, with layout "heads")."""
    pairs = list(rules)
    for rule in heads_rules:
        pairs += [convert.Rule(rule.torch_name, path, "heads") for path in rule.flax_paths]
    return pairs
