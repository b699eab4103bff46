"""MNIST-1D, the default workload: generated locally, trained on a CPU in about a minute.

MNIST-1D (Greydanus & Kadelka 2024) is a 1-D analogue of MNIST: ten 1-D digit templates padded,
shifted, scaled, sheared and noised into sequences of length 40. The `mnist1d` package generates
it from a fixed seed, so no download is needed. We generate 20,000 examples (the package's
default of 5,000 gives too noisy a validation metric) and split them 14k / 3k / 3k.

The validation target comes from a target-setting run (scripts/set_mnist1d_target.py, AlgoPerf's
procedure on a CPU): the tuned AdamW baseline's validation accuracy at the end of step_hint
steps, median over seeds, is the target; the budget is three times the time that run needed.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from algoperf.spec import LossType
from workloads.input_pipeline import teacher_labels
from workloads.registry import WorkloadInfo

NUM_EXAMPLES = 20_000
SPLIT_SIZES = {"train": 14_000, "validation": 3_000, "test": 3_000}
SEQUENCE_LENGTH = 40
DATA_SEED = 42

WORKLOADS = [
    WorkloadInfo(
        name="mnist1d",
        dataset="MNIST-1D, 20,000 generated examples (seed 42): 14,000 / 3,000 / 3,000",
        model="1-D CNN: 3 conv layers (32-64-64 channels), global max-pool, linear 10",
        target_metric_name="accuracy",
        higher_is_better=True,
        validation_target=0.977,
        test_target=0.978,
        max_allowed_runtime_sec=60,
        step_hint=2000,
        eval_period_time_sec=3,
        eval_batch_size=3000,
        num_train_examples=SPLIT_SIZES["train"],
        num_eval_train_examples=3000,
        num_validation_examples=SPLIT_SIZES["validation"],
        num_test_examples=SPLIT_SIZES["test"],
        loss_type=LossType.SOFTMAX_CROSS_ENTROPY,
        default_dropout=0.0,
        n_params={"pytorch": 19_402, "jax": 19_402},  # `algoperf workloads --count-params`
        implementations={
            "pytorch": "workloads.mnist1d.torch_workload:Mnist1dWorkload",
            "jax": "workloads.mnist1d.jax_workload:Mnist1dWorkload",
        },
        development=True,
        default_batch_size=128,
    )
]


def cache_dir() -> Path:
    return Path(os.environ.get("ALGOPERF_DATA_DIR", Path.home() / ".cache" / "algoperf")) / "mnist1d"


def generate(num_examples: int = NUM_EXAMPLES, seed: int = DATA_SEED) -> dict[str, np.ndarray]:
    """The MNIST-1D examples from the `mnist1d` package's generator (float32 x, int64 y)."""
    import random

    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples = num_examples
    args.train_split = 1.0
    args.seed = seed
    # The generator seeds the global numpy and python RNGs; leave them as we found them.
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        data = make_dataset(args)
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    return {"x": data["x"].astype(np.float32), "y": data["y"].astype(np.int64)}


def load(folder: Path | None = None) -> dict[str, np.ndarray]:
    """The generated dataset, cached as an .npz after the first (6 s) generation."""
    folder = folder or cache_dir()
    path = folder / f"mnist1d_{NUM_EXAMPLES}_seed{DATA_SEED}.npz"
    if path.exists():
        with np.load(path) as f:
            return {"x": f["x"], "y": f["y"]}
    data = generate()
    folder.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp.npz")
    np.savez(tmp, **data)
    os.replace(tmp, path)
    return data


class Mnist1dData:
    """MNIST-1D splits: inputs (N, 1, 40) float32, targets (N,) int64."""

    data: str
    data_dir: str | None
    synthetic_sizes: dict[str, int]

    def real_split(self, split: str) -> dict[str, np.ndarray]:
        data = load(Path(self.data_dir) / "mnist1d" if self.data_dir else None)
        n_train, n_val = SPLIT_SIZES["train"], SPLIT_SIZES["validation"]
        bounds = {
            "train": (0, n_train),
            "eval_train": (0, n_train),
            "validation": (n_train, n_train + n_val),
            "test": (n_train + n_val, NUM_EXAMPLES),
        }
        lo, hi = bounds[split]
        return {"inputs": data["x"][lo:hi, None, :], "targets": data["y"][lo:hi]}

    def synthetic_split(self, split: str) -> dict[str, np.ndarray]:
        n = self.synthetic_sizes[split]
        offset = {"train": 0, "eval_train": 0, "validation": 1, "test": 2}[split]
        x = np.random.default_rng(2000 + offset).standard_normal((n, 1, SEQUENCE_LENGTH))
        x = x.astype(np.float32)
        return {"inputs": x, "targets": teacher_labels(x, 10, seed=0)}


def prepare(data_dir: Path, source: Path | None = None) -> Path:
    """Generates MNIST-1D into data_dir/mnist1d (what --data-dir DIR then reads)."""
    load(Path(data_dir) / "mnist1d")
    return Path(data_dir) / "mnist1d"
