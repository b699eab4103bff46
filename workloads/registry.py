"""Workload name -> metadata and implementation, for every workload folder and its variants.

A workload is added by adding a folder `workloads/<name>/` whose framework-free `workload.py`
defines `WORKLOADS`, a list of `WorkloadInfo` (the base workload first, then its variants). The
registry imports only those metadata modules, never a framework, so `algoperf score` and
`algoperf workloads` work without torch or jax.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import pkgutil
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from algoperf.spec import LossType


class UnknownWorkloadError(ValueError):
    pass


@dataclass(frozen=True)
class WorkloadInfo:
    """The facts of one workload or variant (WORKLOADS.md), as plain data."""

    name: str
    target_metric_name: str
    higher_is_better: bool
    validation_target: float
    test_target: float
    max_allowed_runtime_sec: float
    step_hint: int
    eval_period_time_sec: float
    eval_batch_size: int
    num_train_examples: int
    num_eval_train_examples: int
    num_validation_examples: int
    num_test_examples: int
    loss_type: LossType
    dataset: str = ""
    model: str = ""
    base: str | None = None  # the base workload of a variant
    change: str = ""  # what a variant changes in its base model
    default_dropout: float | None = None
    n_params: dict[str, int] = field(default_factory=dict)  # framework -> reference count
    # framework -> "module:Class"; the class is built as Class(info, data=..., data_dir=...)
    implementations: dict[str, str] = field(default_factory=dict)
    model_options: dict[str, Any] = field(default_factory=dict)  # what a variant passes its model
    development: bool = False  # a development workload (not scored in the benchmark)
    # What a development workload trains with when the submission's get_batch_size does not know
    # it (no public submission knows mnist1d); the baselines' own choice for it.
    default_batch_size: int | None = None

    @property
    def base_name(self) -> str:
        return self.base or self.name

    @property
    def is_variant(self) -> bool:
        return self.base is not None

    def variant(self, **changes: Any) -> WorkloadInfo:
        """A variant of this base workload: same budget, step_hint and eval period (WORKLOADS.md)."""
        return dataclasses.replace(self, base=self.name, **changes)

    def reached(self, value: float, split: str = "validation") -> bool:
        """Whether a metric value meets this workload's target (>= if maximised, <= if minimised)."""
        target = self.validation_target if split == "validation" else self.test_target
        return value >= target if self.higher_is_better else value <= target

    def facts(self) -> dict[str, Any]:
        """The JSON-friendly facts listed by `algoperf workloads`."""
        out = dataclasses.asdict(self)
        out["loss_type"] = self.loss_type.name
        out.pop("implementations")
        out.pop("model_options")
        return out


def _workload_packages() -> list[str]:
    root = Path(__file__).parent
    return sorted(
        m.name
        for m in pkgutil.iter_modules([str(root)])
        if m.ispkg and (root / m.name / "workload.py").exists()
    )


@cache
def all_workloads() -> dict[str, WorkloadInfo]:
    """Every registered workload and variant by name."""
    found: dict[str, WorkloadInfo] = {}
    for package in _workload_packages():
        module = importlib.import_module(f"workloads.{package}.workload")
        for info in getattr(module, "WORKLOADS", []):
            if info.name in found:
                raise RuntimeError(f"workload {info.name!r} is defined twice (second in workloads/{package}).")
            found[info.name] = info
    return found


def get(name: str) -> WorkloadInfo:
    """The metadata of a workload; an unknown name raises with the closest known names."""
    known = all_workloads()
    if name in known:
        return known[name]
    close = difflib.get_close_matches(name, list(known), n=3, cutoff=0.5)
    hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    raise UnknownWorkloadError(
        f"Unknown workload {name!r}.{hint} Known workloads: {', '.join(sorted(known))} "
        "(`algoperf workloads` lists them with their facts)."
    )


def load(name: str, framework: str = "pytorch", **kwargs: Any) -> Any:
    """A fresh workload object of `name` for `framework` (imports that framework)."""
    info = get(name)
    target = info.implementations.get(framework)
    if target is None:
        have = ", ".join(sorted(info.implementations)) or "none"
        raise UnknownWorkloadError(
            f"Workload {name!r} has no {framework} implementation (available: {have})."
        )
    module_name, class_name = target.split(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls(info, **kwargs)
