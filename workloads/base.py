"""The framework-free part every workload shares: metadata from the registry, numpy data, evals.

A concrete workload combines a data class from its `workload.py` (which implements
`split_arrays` or overrides `train_batches`/`eval_split_batches`) with a framework class such as
`workloads.torch_base.TorchWorkload` (model, loss, device placement).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from algoperf import spec
from workloads.input_pipeline import ArrayBatchStream, eval_batches
from workloads.registry import WorkloadInfo

SPLITS = ("train", "eval_train", "validation", "test")


class BaseWorkload(spec.Workload):
    """Metadata properties filled from a `WorkloadInfo`, and the eval loop over splits."""

    # Sizes of the synthetic splits (`--data synthetic`): small enough for a CPU smoke test.
    synthetic_sizes: dict[str, int] = {"train": 2048, "eval_train": 512, "validation": 512, "test": 512}

    def __init__(
        self, info: WorkloadInfo, data: str = "real", data_dir: str | None = None, **options: Any
    ) -> None:
        super().__init__()
        if data not in ("real", "synthetic"):
            raise ValueError(f"data must be 'real' or 'synthetic', got {data!r}")
        self.info = info
        self.data = data
        self.data_dir = data_dir
        self.options = {**info.model_options, **options}
        self._split_cache: dict[str, dict[str, np.ndarray]] = {}

    # ---- metadata ----------------------------------------------------------------------------
    @property
    def workload_name(self) -> str:
        return self.info.name

    @property
    def target_metric_name(self) -> str:
        return self.info.target_metric_name

    @property
    def validation_target_value(self) -> float:
        return self.info.validation_target

    @property
    def test_target_value(self) -> float:
        return self.info.test_target

    def has_reached_validation_target(self, eval_result: dict[str, float]) -> bool:
        return self.info.reached(eval_result[f"validation/{self.target_metric_name}"], "validation")

    def has_reached_test_target(self, eval_result: dict[str, float]) -> bool:
        return self.info.reached(eval_result[f"test/{self.target_metric_name}"], "test")

    @property
    def loss_type(self) -> spec.LossType:
        return self.info.loss_type

    def _size(self, split: str, real: int) -> int:
        return self.synthetic_sizes[split] if self.data == "synthetic" else real

    @property
    def num_train_examples(self) -> int:
        return self._size("train", self.info.num_train_examples)

    @property
    def num_eval_train_examples(self) -> int:
        return self._size("eval_train", self.info.num_eval_train_examples)

    @property
    def num_validation_examples(self) -> int:
        return self._size("validation", self.info.num_validation_examples)

    @property
    def num_test_examples(self) -> int:
        return self._size("test", self.info.num_test_examples)

    @property
    def eval_batch_size(self) -> int:
        return self.info.eval_batch_size

    @property
    def train_mean(self) -> Any:
        return 0.0

    @property
    def train_stddev(self) -> Any:
        return 1.0

    @property
    def max_allowed_runtime_sec(self) -> float:
        return self.info.max_allowed_runtime_sec

    @property
    def eval_period_time_sec(self) -> float:
        return self.info.eval_period_time_sec

    @property
    def step_hint(self) -> int:
        return self.info.step_hint

    # ---- numpy data --------------------------------------------------------------------------
    def split_arrays(self, split: str) -> dict[str, np.ndarray]:
        """All examples of an in-memory split ('train', 'eval_train', 'validation', 'test')."""
        if split not in self._split_cache:
            if self.data == "synthetic":
                self._split_cache[split] = self.synthetic_split(split)
            else:
                self._split_cache[split] = self.real_split(split)
        return self._split_cache[split]

    def real_split(self, split: str) -> dict[str, np.ndarray]:
        raise NotImplementedError(f"{type(self).__name__} does not load real data in memory")

    def synthetic_split(self, split: str) -> dict[str, np.ndarray]:
        raise NotImplementedError(f"{type(self).__name__} has no synthetic data")

    def train_batches(self, global_batch_size: int, seed: int) -> Any:
        """An endless, checkpointable stream of numpy training batches (`state_dict()`)."""
        return ArrayBatchStream(self.split_arrays("train"), global_batch_size, seed, shuffle=True)

    def eval_split_batches(self, split: str, num_examples: int, batch_size: int) -> Iterator[dict[str, np.ndarray]]:
        """Padded, in-order numpy batches of an eval split, each with `weights`."""
        return eval_batches(self.split_arrays(split), num_examples, batch_size)

    # ---- evaluation --------------------------------------------------------------------------
    def eval_model(
        self,
        global_batch_size: int,
        params: spec.ParameterContainer,
        model_state: spec.ModelAuxiliaryState,
        rng: spec.RandomState,
        data_dir: str,
        imagenet_v2_data_dir: str | None,
        global_step: int,
    ) -> dict[str, float]:
        """Metrics on the eval-train, validation and test splits, keyed `<split>/<metric>`."""
        results: dict[str, float] = {}
        plan = (
            ("train", "eval_train", self.num_eval_train_examples),
            ("validation", "validation", self.num_validation_examples),
            ("test", "test", self.num_test_examples),
        )
        for prefix, split, num_examples in plan:
            if num_examples <= 0:
                continue
            # A split smaller than the eval batch (synthetic data, a fixture) is evaluated in one
            # batch of its own size: the padding would change nothing but the cost.
            batch_size = max(1, min(global_batch_size, num_examples))
            metrics = self._eval_model_on_split(
                split, num_examples, batch_size, params, model_state, rng, data_dir, global_step
            )
            evaluated = int(metrics.pop("num_examples", num_examples))
            for name, value in metrics.items():
                results[f"{prefix}/{name}"] = float(value)
            if prefix != "train":
                results[f"{prefix}/num_examples"] = evaluated
        return results

    def _eval_model_on_split(
        self,
        split: str,
        num_examples: int,
        global_batch_size: int,
        params: spec.ParameterContainer,
        model_state: spec.ModelAuxiliaryState,
        rng: spec.RandomState,
        data_dir: str,
        global_step: int = 0,
    ) -> dict[str, float]:
        """Sums per-batch metric totals over the split, then normalises them."""
        totals: dict[str, float] = {}
        for batch in self.eval_split_batches(split, num_examples, global_batch_size):
            for name, value in self.eval_batch(params, model_state, batch, rng).items():
                totals[name] = totals.get(name, 0.0) + float(value)
        return self.finalize_eval_metrics(totals, num_examples)

    def eval_batch(
        self, params: spec.ParameterContainer, model_state: Any, batch: dict[str, np.ndarray], rng: Any
    ) -> dict[str, float]:
        """Metric totals (sums over the batch's real examples) of one numpy eval batch."""
        raise NotImplementedError

    def finalize_eval_metrics(self, totals: dict[str, float], num_examples: int) -> dict[str, float]:
        return {name: value / num_examples for name, value in totals.items()}
