"""MNIST, a development workload: a 784-128-10 sigmoid MLP on the standard IDX files."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

from algoperf.datasets import fetch
from algoperf.spec import LossType
from workloads.input_pipeline import prepared_dir, teacher_labels
from workloads.registry import WorkloadInfo

WORKLOADS = [
    WorkloadInfo(
        name="mnist",
        dataset="MNIST train[:50000] / train[50000:] / test 10,000",
        model="MLP 784-128 (sigmoid)-10",
        target_metric_name="accuracy",
        higher_is_better=True,
        validation_target=0.97,
        test_target=0.97,
        max_allowed_runtime_sec=60,
        step_hint=7813,
        eval_period_time_sec=10,
        eval_batch_size=10_000,
        num_train_examples=50_000,
        num_eval_train_examples=10_000,
        num_validation_examples=10_000,
        num_test_examples=10_000,
        loss_type=LossType.SOFTMAX_CROSS_ENTROPY,
        n_params={"pytorch": 101_770, "jax": 101_770},
        implementations={
            "pytorch": "workloads.mnist.torch_workload:MnistWorkload",
            "jax": "workloads.mnist.jax_workload:MnistWorkload",
        },
        development=True,
        default_batch_size=16,
    )
]

# torchvision's mirror of the original files; the MD5s are those of the original distribution.
CANONICAL_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"
FILES = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
TRAIN_MEAN = 0.1307
TRAIN_STDDEV = 0.3081
NUM_TRAIN = 50_000


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (optionally gzipped) as a numpy array: magic, dims, then big-endian data."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{path} is not an IDX file (bad magic number)")
    dtypes = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    dtype, ndim = dtypes[raw[2]], raw[3]
    dims = np.frombuffer(raw, dtype=">u4", count=ndim, offset=4)
    data = np.frombuffer(raw, dtype=dtype, offset=4 + 4 * ndim)
    expected = int(np.prod(dims))
    if data.size != expected:
        raise ValueError(f"{path} is truncated: {data.size} values, expected {expected}")
    return data.reshape(tuple(int(d) for d in dims))


def default_data_dir() -> Path:
    return Path(os.environ.get("ALGOPERF_DATA_DIR", Path.home() / ".cache" / "algoperf")) / "mnist"


class MnistData:
    """The four MNIST splits as normalised float images and int labels."""

    data: str
    data_dir: str | None
    synthetic_sizes: dict[str, int]

    @property
    def train_mean(self) -> float:
        return TRAIN_MEAN

    @property
    def train_stddev(self) -> float:
        return TRAIN_STDDEV

    def real_split(self, split: str) -> dict[str, np.ndarray]:
        folder = prepared_dir(self.data_dir, "mnist") if self.data_dir else default_data_dir()
        fetch("MNIST", FILES, folder, CANONICAL_URL)
        prefix = "t10k" if split == "test" else "train"
        images = read_idx(folder / f"{prefix}-images-idx3-ubyte.gz")
        labels = read_idx(folder / f"{prefix}-labels-idx1-ubyte.gz").astype(np.int64)
        x = ((images.astype(np.float32) / 255.0 - TRAIN_MEAN) / TRAIN_STDDEV)[:, None]
        num_train = min(NUM_TRAIN, len(x) * 5 // 6) if split != "test" else 0
        if split in ("train", "eval_train"):
            x, labels = x[:num_train], labels[:num_train]
        elif split == "validation":
            x, labels = x[num_train:], labels[num_train:]
        return {"inputs": x, "targets": labels}

    def synthetic_split(self, split: str) -> dict[str, np.ndarray]:
        n = self.synthetic_sizes[split]
        offset = {"train": 0, "eval_train": 0, "validation": 1, "test": 2}[split]
        x = np.random.default_rng(1000 + offset).standard_normal((n, 1, 28, 28)).astype(np.float32)
        return {"inputs": x, "targets": teacher_labels(x, 10, seed=0)}
