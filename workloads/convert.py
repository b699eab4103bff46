"""Moving weights between a PyTorch model and its flax twin, through numpy (no framework here).

A workload's converter is a mapping table: one `Rule(torch_name, flax_path, layout)` per
parameter (or buffer). `layout` says how the two frameworks lay the same numbers out:

- "same":   identical arrays (biases, norms' scale/bias, embeddings);
- "linear": torch (out, in) is flax (in, out);
- "conv":   torch (out, in, *kernel) is flax (*kernel, in, out);
- "convT":  torch ConvTranspose (in, out, *kernel) is flax ConvTranspose (*kernel, in, out)
            with the kernel flipped (flax convolves, torch correlates the transposed way).

Where a model splits or fuses what the other keeps together (fused QKV projections, the two LSTM
biases of PyTorch), the workload's converter handles it next to its table, with a test.

A workload's `workloads/<name>/convert.py` defines `rules(options) -> list[Rule]` (`options` are
the workload's model options, so a variant can add or drop layers), and, only where a table
cannot say it, its own `torch_to_flax(state_dict, options)` / `flax_to_torch(variables, options)`.
`converter(workload)` finds them. It may also define `PARITY_OPTIONS`, model options that make a
small model of the same code paths for the CPU parity report (e.g. a smaller hashed vocabulary).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

LAYOUTS = ("same", "linear", "conv", "convT")


@dataclass(frozen=True)
class Rule:
    torch_name: str  # a key of the torch state_dict
    flax_path: str  # "/"-separated path in the flax variables, e.g. "params/Dense_0/kernel"
    layout: str = "same"


def to_flax_layout(array: np.ndarray, layout: str) -> np.ndarray:
    if layout == "same":
        return array
    if layout == "linear":
        return array.T
    if layout == "conv":
        return np.transpose(array, (*range(2, array.ndim), 1, 0))
    if layout == "convT":
        spatial = tuple(range(2, array.ndim))
        flipped = np.flip(array, axis=spatial)
        return np.transpose(flipped, (*spatial, 0, 1))
    raise ValueError(f"unknown layout {layout!r}; expected one of {LAYOUTS}")


def to_torch_layout(array: np.ndarray, layout: str) -> np.ndarray:
    if layout == "same":
        return array
    if layout == "linear":
        return array.T
    k = array.ndim - 2
    if layout == "conv":
        return np.transpose(array, (k + 1, k, *range(k)))
    if layout == "convT":
        back = np.transpose(array, (k, k + 1, *range(k)))
        return np.flip(back, axis=tuple(range(2, array.ndim)))
    raise ValueError(f"unknown layout {layout!r}; expected one of {LAYOUTS}")


def torch_to_flax(state_dict: Mapping[str, Any], rules: Iterable[Rule]) -> dict[str, Any]:
    """Flax variables (nested dicts of numpy arrays) from a torch state_dict (numpy values)."""
    out: dict[str, Any] = {}
    for rule in rules:
        if rule.torch_name not in state_dict:
            raise KeyError(f"torch state_dict has no {rule.torch_name!r} (rule for {rule.flax_path})")
        _set(out, rule.flax_path, to_flax_layout(np.asarray(state_dict[rule.torch_name]), rule.layout))
    return out


def flax_to_torch(variables: Mapping[str, Any], rules: Iterable[Rule]) -> dict[str, np.ndarray]:
    """A torch state_dict (numpy values) from flax variables."""
    return {rule.torch_name: np.ascontiguousarray(to_torch_layout(np.asarray(_get(variables, rule.flax_path)),
                                                                  rule.layout))
            for rule in rules}


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a/b/c": leaf} of a nested mapping."""
    out: dict[str, Any] = {}
    for k, v in tree.items():
        path = f"{prefix}/{k}" if prefix else str(k)
        if isinstance(v, Mapping):
            out.update(flatten(v, path))
        else:
            out[path] = v
    return out


def check_complete(rules: Iterable[Rule], torch_names: Iterable[str], flax_paths: Iterable[str]) -> None:
    """Raises if a parameter of either model has no rule (a table that silently skips one
    would leave that parameter at its random initial value)."""
    rules = list(rules)
    missing_torch = sorted(set(torch_names) - {r.torch_name for r in rules})
    missing_flax = sorted(set(flax_paths) - {r.flax_path for r in rules})
    if missing_torch or missing_flax:
        raise ValueError(f"conversion table misses torch {missing_torch} / flax {missing_flax}")


def _set(tree: dict[str, Any], path: str, value: Any) -> None:
    *parents, leaf = path.split("/")
    for p in parents:
        tree = tree.setdefault(p, {})
    tree[leaf] = value


def _get(tree: Mapping[str, Any], path: str) -> Any:
    for p in path.split("/"):
        tree = tree[p]
    return tree


@dataclass(frozen=True)
class Converter:
    """PyTorch <-> flax conversion of one workload (or variant) with its model options."""

    module: ModuleType
    options: dict[str, Any]

    def rules(self) -> list[Rule]:
        return list(self.module.rules(self.options))

    def to_flax(self, state_dict: Mapping[str, Any]) -> dict[str, Any]:
        custom = getattr(self.module, "torch_to_flax", None)
        return custom(state_dict, self.options) if custom else torch_to_flax(state_dict, self.rules())

    def to_torch(self, variables: Mapping[str, Any]) -> dict[str, np.ndarray]:
        custom = getattr(self.module, "flax_to_torch", None)
        return custom(variables, self.options) if custom else flax_to_torch(variables, self.rules())


def converter(workload: Any) -> Converter:
    """The converter of a workload object (either framework's): its package's `convert.py`."""
    package = type(workload).__module__.rsplit(".", 1)[0]
    return Converter(importlib.import_module(f"{package}.convert"), dict(workload.options))
